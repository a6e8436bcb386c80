"""A customer's journey in Chromium: order, watch, see the order move, run late, cancel until the oven.

Daphne serves the pages and streams the events; the kitchens' steps are the
queue operations a kitchen process would call, made here so each moment of
the story happens when the test says. The customer reads shop display names
(PIZZAQUEUE_SHOP_NAMES), never a kitchen's internal name.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta

import pytest
from playwright.sync_api import Browser, Page, expect

from orders.timeline import public_timeline
from tests.base import ROOT, make_worker
from tests.conftest import Daphne, sized_page
from workers import monitor, queue
from workers.models import Order

pytestmark = [pytest.mark.processes, pytest.mark.django_db(transaction=True)]

ARTIFACTS = ROOT / "test-artifacts"
PHONE = {"width": 430, "height": 900}
NAMES = {"PIZZAQUEUE_SHOP_NAMES": "shop-1=Harbour,shop-2=Old Town"}


@pytest.fixture
def phone(browser: Browser) -> Iterator[Page]:
    yield from sized_page(browser, PHONE)


def order_margherita(page: Page, base: str, name: str) -> Order:
    page.goto(f"{base}/")
    page.fill("#id_qty_margherita", "1")
    page.fill("#id_area", "Old Town")
    page.fill("#id_address", "1 Harbour Street")
    page.fill("#id_phone", "020 7946 0958")
    page.fill("#id_customer_name", name)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/orders/[0-9a-f-]{36}/$"))
    expect(page.locator("#live-state")).to_have_text("● live")
    return Order.objects.get(pk=page.url.rstrip("/").rsplit("/", 1)[1])


def test_a_customer_watches_the_order_move_shops_run_late_and_be_made_with_one_story(
    daphne: Daphne, phone: Page
) -> None:
    daphne.start(**NAMES)
    harbour = make_worker("shop-1")
    order = order_margherita(phone, daphne.origin, "Ada")
    cancel = phone.locator("#cancel-form button")
    expect(cancel).to_be_visible()
    expect(phone.locator("#promise-line")).to_contain_text("At your door by")

    (claim,) = queue.claim(harbour.pk, 1)
    queue.report_stage(order.pk, claim.token, "dough", harbour.pk)
    expect(phone.locator("#timeline li .text").last).to_have_text("Stretching the dough.")
    expect(phone.locator("#timeline")).to_contain_text("Harbour started on your order.")
    expect(cancel).to_be_visible()  # until the oven, the customer may still cancel

    old_town = make_worker("shop-2")
    monitor.declare_dead(harbour.pk)
    moved = "Harbour went down while making your order; Old Town makes it again from the start."
    expect(phone.locator("#timeline li.event-reassigned")).to_have_text([re.compile(re.escape(moved))])
    expect(phone.locator("#moved")).to_have_text(moved)
    expect(phone.locator("#status")).to_have_text("In the queue")  # why the bar went back: the line above says
    expect(cancel).to_be_visible()

    (claim,) = queue.claim(old_town.pk, 1)
    queue.report_stage(order.pk, claim.token, "oven", old_town.pk)
    expect(phone.locator("#status")).to_have_text("In the oven")
    expect(cancel).to_be_hidden()  # in the oven: too late to cancel

    # Placed long ago: the promise has passed, and the page says so.
    Order.objects.filter(pk=order.pk).update(
        created_at=order.created_at - timedelta(hours=1), promised_at=order.created_at - timedelta(minutes=1)
    )
    phone.reload()
    expect(phone.locator("#late")).to_be_visible()
    expect(phone.locator("#late")).to_contain_text("Running late")
    phone.screenshot(path=ARTIFACTS / "journey-customer.png", full_page=True)

    queue.complete(order.pk, claim.token, old_town.pk)
    expect(phone.locator("#status")).to_have_text("Ready")
    expect(phone.locator("#handover")).to_have_text(
        "Ready on Old Town's shelf, waiting for a driver: pay the driver when it arrives."
    )
    # A delivery order's promise is the door: on the shelf it still stands, and is still late.
    expect(phone.locator("#promise-line")).to_contain_text("At your door by")
    expect(phone.locator("#late")).to_be_visible()
    expect(phone.locator("#cancel-form button")).to_be_hidden()
    page = phone.content()
    for internal in ("shop-1", "shop-2", "Incarnation", "pid"):
        assert internal not in page, internal


def test_a_customer_cancels_a_waiting_order_and_the_page_stops_promising(daphne: Daphne, phone: Page) -> None:
    daphne.start(**NAMES)
    order = order_margherita(phone, daphne.origin, "Grace")
    phone.click("#cancel-form button")
    expect(phone.locator("#status")).to_have_text("Cancelled")
    expect(phone.locator("#timeline li .text").last).to_have_text("Order cancelled (cancelled by customer).")
    expect(phone.locator(".promise")).to_have_count(0)  # no promise for an order that will not come
    order.refresh_from_db()
    assert order.status == Order.Status.CANCELLED


def test_the_menus_prices_line_up_with_the_names_on_a_phone(daphne: Daphne, phone: Page) -> None:
    daphne.start()
    phone.goto(daphne.url("/"))
    names = phone.locator(".menu-item .pizza strong")
    prices = phone.locator(".menu-item .price")
    for index in range(prices.count()):
        name, price = names.nth(index).bounding_box(), prices.nth(index).bounding_box()
        assert name is not None and price is not None
        # Beside its name, or wrapped under it from the same left edge: never indented by a stray space.
        assert price["y"] < name["y"] + name["height"] or abs(price["x"] - name["x"]) < 1, (index, name, price)
    phone.screenshot(path=ARTIFACTS / "journey-menu.png", full_page=True)


def test_a_move_told_twice_in_a_row_is_one_line_and_a_second_move_is_its_own() -> None:
    def line(kind: str, to_shop: str | None, event_id: int) -> dict[str, object]:
        return {"id": event_id, "kind": kind, "to_shop": to_shop, "public": True, "text": f"{kind} {to_shop}"}

    messages = [
        line("placed", None, 1),
        line("reassigned", "Old Town", 2),
        line("reassigned", "Old Town", 3),  # the queue's move, then the kitchen's hand-back: one story
        line("claimed", None, 4),
        line("reassigned", "Riverside", 5),
    ]
    assert [m["id"] for m in public_timeline(messages)] == [1, 2, 4, 5]
