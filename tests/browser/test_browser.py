"""In a real browser: Debian's Chromium, headless, driven by Playwright.

The pages are served by daphne and the orders baked by worker processes, as
in production; screenshots go to test-artifacts/ (the README's docs/img/tracking.png is
one of them, copied by hand: tests never write to the tree).
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import Browser, Page, expect

from orders import roles
from orders.intake import clean_order_request
from tests.base import ROOT, in_role, make_worker, wait_until
from tests.conftest import Daphne, WorkerProcesses, log_in, sized_page
from tests.factory import order_data
from workers import queue
from workers.models import Order, OrderEvent, Worker

pytestmark = [pytest.mark.processes, pytest.mark.django_db(transaction=True)]

ARTIFACTS = ROOT / "test-artifacts"
PHONE = {"width": 430, "height": 900}


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    yield from sized_page(browser, PHONE)


def test_a_customer_orders_through_the_form_and_watches_it_reach_done_without_reloading(
    daphne: Daphne, worker_processes: WorkerProcesses, page: Page
) -> None:
    # A margherita takes ~4 s in this kitchen: long enough to watch each stage.
    speed = {"PIZZAQUEUE_KITCHEN_SPEED": "0.1"}
    daphne.start(**speed)
    worker_processes.start("--name", "shop-1", **speed)

    page.goto(daphne.url("/"))
    page.fill("#id_qty_margherita", "1")
    page.select_option("#id_size_margherita", "large")
    page.fill("#id_area", "Old Town")
    page.fill("#id_address", "1 Harbour Street")
    page.fill("#id_phone", "020 7946 0958")
    page.fill("#id_customer_name", "Ada")
    page.screenshot(path=ARTIFACTS / "menu.png", full_page=True)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/orders/[0-9a-f-]{36}/$"))
    page.evaluate("window.sameDocument = true")  # gone if the page reloads

    expect(page.locator("#status")).to_have_text("In the oven", timeout=15_000)
    expect(page.locator("#live-state")).to_have_text("● live")
    page.screenshot(path=ARTIFACTS / "tracking-oven.png", full_page=True)
    expect(page.locator("#status")).to_have_text("Ready", timeout=15_000)
    expect(page.locator("#progress")).to_have_attribute("value", "100")
    # The kitchen's story (a machine too busy to keep the quoted pace also tells the customer it runs late).
    expect(page.locator("#timeline li:not(.event-promised) .text")).to_have_text(
        [
            "Order confirmed.",
            "Shop 1 started on your order.",
            "Stretching the dough.",
            "Sauce and toppings.",
            "In the oven.",
            "Boxing it up.",
            "Ready!",
        ]
    )
    assert page.evaluate("window.sameDocument") is True
    page.screenshot(path=ARTIFACTS / "tracking-done.png", full_page=True)

    order = Order.objects.get()
    assert (order.status, order.customer_name, order.area) == (Order.Status.DONE, "Ada", "Old Town")


def test_the_board_marks_a_killed_kitchen_dead_and_shows_its_orders_moving(
    daphne: Daphne, worker_processes: WorkerProcesses, page: Page
) -> None:
    # Slow kitchens, so the killed one is holding orders when it dies.
    slow = {"PIZZAQUEUE_KITCHEN_SPEED": "1"}
    daphne.start(**slow)
    doomed = worker_processes.start("--name", "shop-a", "--concurrency", "3", **slow)
    worker_processes.start("--name", "shop-b", "--concurrency", "3", **slow)
    wait_until(lambda: Worker.objects.live().count() == 2, what="two live kitchens")
    queue.place_many([clean_order_request(order_data(area=f"area-{n}")) for n in range(12)])
    held = wait_until(
        lambda: list(
            Order.objects.filter(worker__name="shop-a", status=Order.Status.PREPARING).values_list("id", flat=True)
        ),
        what="shop-a to bake",
    )
    operator = User.objects.create_user("operator", password="pizza-oven-42", is_staff=True)  # noqa: S106
    in_role(operator, roles.OPERATORS)  # the kitchen displays too

    page.set_viewport_size({"width": 1100, "height": 900})
    page.goto(daphne.url("/board/"))
    page.fill("#id_username", "operator")
    page.fill("#id_password", "pizza-oven-42")
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/board/$"))
    shop_a = page.locator('tr[data-worker="shop-a"] .status')
    expect(shop_a).to_have_text("open")
    expect(page.locator("#live-state")).to_have_text("● live")
    page.screenshot(path=ARTIFACTS / "board-before.png", full_page=True)

    os.kill(doomed.pid, signal.SIGKILL)
    expect(shop_a).to_have_text("down", timeout=15_000)
    # The queued orders in shop-a's buckets move too, and their lines may come
    # first; a held order's line says the making starts again.
    remade = "Shop a went down while making your order; Shop b makes it again from the start."
    expect(page.locator("#events li.kind-reassigned", has_text=remade).first).to_be_visible(timeout=10_000)
    page.screenshot(path=ARTIFACTS / "board-after.png", full_page=True)
    moved = set(OrderEvent.objects.filter(kind=OrderEvent.Kind.REASSIGNED).values_list("order_id", flat=True))
    assert set(held) <= moved

    page.goto(daphne.url("/kitchen/shop-b/"))
    expect(page.locator("[data-ticket]").first).to_be_visible()
    page.screenshot(path=ARTIFACTS / "kitchen.png", full_page=True)


def test_the_api_docs_load_nothing_from_another_host(daphne: Daphne, page: Page) -> None:
    daphne.start()
    User.objects.create_user("operator", password="pizza-oven-42", is_staff=True)  # noqa: S106
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))

    log_in(page, daphne.url(""), "/api/docs/", "operator", "pizza-oven-42")
    # Swagger UI ran: it fetched the schema and drew every operation.
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("pizzaqueue API")
    expect(page.locator(".opblock")).to_have_count(7)
    page.screenshot(path=ARTIFACTS / "api-docs.png", full_page=True)

    elsewhere = [url for url in requested if urlsplit(url).scheme in ("http", "https", "ws", "wss")]
    elsewhere = [url for url in elsewhere if urlsplit(url).netloc != f"127.0.0.1:{daphne.port}"]
    assert elsewhere == []
    assert any("/static/drf_spectacular_sidecar/swagger-ui-dist/" in url for url in requested)
    assert any(urlsplit(url).path == "/api/schema/" for url in requested)


def test_every_page_runs_under_the_content_security_policy_without_a_violation(daphne: Daphne, page: Page) -> None:
    daphne.start()
    shop = make_worker("shop-1")
    operator = User.objects.create_user("operator", password="pizza-oven-42", is_staff=True)  # noqa: S106
    in_role(operator, roles.OPERATORS)
    refused: list[str] = []
    page.on(
        "console", lambda message: refused.append(message.text) if "Content Security Policy" in message.text else None
    )

    page.goto(daphne.url("/"))
    page.fill("#id_qty_margherita", "1")
    page.fill("#id_address", "1 Harbour Street")
    page.fill("#id_phone", "020 7946 0958")
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/orders/[0-9a-f-]+/$"))
    expect(page.locator("#live-state")).to_have_text("● live")  # its WebSocket is allowed
    order_id = page.url.rstrip("/").rsplit("/", 1)[1]

    log_in(page, daphne.url(""), "/board/", "operator", "pizza-oven-42")
    expect(page.locator("#live-state")).to_have_text("● live")
    for path in (
        f"/kitchen/{shop.name}/",
        "/admin/",
        "/admin/workers/order/",
        f"/admin/workers/order/{order_id}/change/",
        "/admin/workers/worker/",
        "/api/docs/",
    ):
        response = page.goto(daphne.url(path))
        assert response is not None and response.status == 200, path
        assert "script-src 'self'" in response.headers["content-security-policy"]
        page.wait_for_load_state("networkidle")

    assert refused == []


def test_a_second_real_browser_follows_the_order_live_while_its_cancel_is_refused(
    daphne: Daphne, browser: Browser
) -> None:
    daphne.start()
    first, second = browser.new_context(viewport=PHONE), browser.new_context(viewport=PHONE)
    try:
        placing = first.new_page()
        placing.goto(daphne.url("/"))
        placing.fill("#id_qty_margherita", "1")
        placing.fill("#id_address", "1 Harbour Street")
        placing.fill("#id_phone", "020 7946 0958")
        placing.click("button[type=submit]")
        placing.wait_for_url(re.compile(r"/orders/[0-9a-f-]{36}/$"))
        order_id = placing.url.rstrip("/").rsplit("/", 1)[1]

        # The link works in another browser (a phone, a friend): it follows the order live...
        following = second.new_page()
        following.goto(placing.url)
        expect(following.locator("#status")).to_have_text("In the queue")
        expect(following.locator("#live-state")).to_have_text("● live")
        expect(following.locator("#cancel-form")).to_have_count(0)
        # ...but its own cancel, sent with its own session and CSRF token, is refused.
        token = next(c["value"] for c in second.cookies() if c["name"] == "csrftoken")
        refused = following.request.post(
            daphne.url(f"/orders/{order_id}/cancel/"),
            headers={"X-CSRFToken": token, "Referer": placing.url},
            max_redirects=0,
        )
        assert refused.status == 403
        assert Order.objects.get(pk=order_id).status == Order.Status.QUEUED

        # The browser that placed it cancels it, and the other one sees that live.
        placing.click("#cancel-form button")
        expect(placing.locator("#status")).to_have_text("Cancelled")
        expect(following.locator("#status")).to_have_text("Cancelled", timeout=10_000)
        assert Order.objects.get(pk=order_id).status == Order.Status.CANCELLED
    finally:
        first.close()
        second.close()
