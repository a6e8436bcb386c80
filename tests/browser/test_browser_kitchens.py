"""Staffed kitchens and client redirection in a real browser (Chromium, driven by Playwright).

Served by daphne, with real kitchen processes: staff tap an order through
every stage while the customer's page follows live; a tablet that missed the
news taps an order that moved to another shop; a takeaway customer whose shop
died orders the same again at an open shop, in one click, once.
"""

from __future__ import annotations

import os
import re
import signal

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import Browser, Page, expect

from orders import roles
from orders.handlers import STAFFED_HANDLER
from orders.models import KitchenStaff
from tests import conftest
from tests.base import area_owned_by, in_role, wait_until
from tests.browser import test_browser
from tests.conftest import Daphne, WorkerProcesses
from tests.factory import make_order
from workers.models import Order, OrderEvent, Worker

pytestmark = [pytest.mark.processes, pytest.mark.django_db(transaction=True)]

# The Chromium fixtures of the browser tests, shared.
page = test_browser.page
ARTIFACTS = test_browser.ARTIFACTS

TABLET = {"width": 1024, "height": 768}
PASSWORD = "pizza-oven-42"  # noqa: S105 - a test account's


def log_in(tablet: Page, daphne: Daphne, path: str) -> None:
    # A cook of the staffed kitchen: its display, nothing else.
    user, _created = User.objects.get_or_create(username="cook")
    in_role(user, roles.KITCHEN_STAFF)
    KitchenStaff.objects.get_or_create(user=user, shop="staffed-1")
    user.set_password(PASSWORD)
    user.save()
    conftest.log_in(tablet, daphne.url(""), path, "cook", PASSWORD)


def test_staff_tap_an_order_through_every_stage_while_the_customer_follows_live(
    daphne: Daphne,
    worker_processes: WorkerProcesses,
    browser: Browser,
    page: Page,
) -> None:
    daphne.start()
    worker_processes.start("--name", "staffed-1", "--handler", STAFFED_HANDLER)
    wait_until(lambda: Worker.objects.live().filter(name="staffed-1").exists(), what="the staffed kitchen")
    order = make_order(customer_name="Ada")

    page.goto(daphne.url(f"/orders/{order.pk}/"))
    page.evaluate("window.sameDocument = true")  # gone if the page reloads
    expect(page.locator("#live-state")).to_have_text("● live")

    tablet = browser.new_context(viewport=TABLET).new_page()
    log_in(tablet, daphne, "/kitchen/staffed-1/")
    expect(tablet.locator("#live-state")).to_have_text("● live")
    ticket = tablet.locator(f'[data-ticket="{order.pk}"]')
    for button, customer_sees in (
        ("Start", "Stretching the dough"),
        ("Into the oven", "In the oven"),
        ("Boxed", "Boxing it up"),
        ("Ready", "Ready"),
    ):
        tap = ticket.locator("button.tap")
        expect(tap).to_have_text(button, timeout=10_000)
        if button == "Into the oven":
            tablet.screenshot(path=ARTIFACTS / "kitchen-staffed.png", full_page=True)
        tap.click()
        expect(page.locator("#status")).to_have_text(customer_sees, timeout=5_000)
    expect(page.locator("#progress")).to_have_attribute("value", "100")
    expect(page.locator("#timeline li .text").last).to_have_text("Ready!", timeout=5_000)
    expect(ticket).to_have_count(0, timeout=5_000)
    assert page.evaluate("window.sameDocument") is True
    page.screenshot(path=ARTIFACTS / "tracking-staffed-done.png", full_page=True)
    stored = Order.objects.get(pk=order.pk)
    assert stored.status == Order.Status.DONE
    stages = OrderEvent.objects.filter(order=order, kind=OrderEvent.Kind.STAGE).order_by("id")
    assert [(e.stage, e.data) for e in stages] == [(s, {"by": "staff"}) for s in ("dough", "oven", "boxing", "ready")]


def test_a_stale_tablets_tap_after_the_order_moved_changes_nothing_and_says_where(
    daphne: Daphne,
    worker_processes: WorkerProcesses,
    browser: Browser,
) -> None:
    daphne.start()
    staffed = worker_processes.start("--name", "staffed-1", "--handler", STAFFED_HANDLER)
    worker_processes.start("--name", "shop-2", "--handler", "tests.handlers.slow")
    wait_until(lambda: Worker.objects.live().count() == 2, what="two kitchens")
    order = make_order(area=area_owned_by(Worker.objects.live().get(name="staffed-1")), note="60")
    wait_until(lambda: Order.objects.filter(pk=order.pk, worker__name="staffed-1").exists(), what="the claim")

    # A tablet without JavaScript (or off the network): its page does not change by itself.
    tablet = browser.new_context(viewport=TABLET, java_script_enabled=False).new_page()
    log_in(tablet, daphne, "/kitchen/staffed-1/")
    start = tablet.locator(f'[data-ticket="{order.pk}"] button.tap')
    expect(start).to_have_text("Start")

    os.kill(staffed.pid, signal.SIGKILL)
    wait_until(
        lambda: Order.objects.filter(pk=order.pk, worker__name="shop-2", stage="oven").exists(),
        timeout=20,
        what="shop-2 to take the order",
    )
    start.click()
    tablet.wait_for_url(re.compile(r"/kitchen/staffed-1/$"))
    expect(tablet.locator(".messages")).to_contain_text(
        f"#{str(order.pk)[:8]} moved to shop-2, which is making it now: nothing changed here."
    )
    tablet.screenshot(path=ARTIFACTS / "kitchen-stale-tap.png", full_page=True)
    stored = Order.objects.get(pk=order.pk)
    assert (stored.worker.name, stored.stage) == ("shop-2", "oven")  # type: ignore[union-attr]
    assert not OrderEvent.objects.filter(order=order, kind=OrderEvent.Kind.STAGE, data__by="staff").exists()


def test_a_takeaway_customer_whose_shop_stayed_down_orders_the_same_at_an_open_shop_in_one_click(
    daphne: Daphne,
    worker_processes: WorkerProcesses,
    page: Page,
) -> None:
    daphne.start()
    corner = worker_processes.start("--name", "corner", "--handler", STAFFED_HANDLER)
    # A shop down for a second counts as closed here (by default it is five minutes).
    worker_processes.start("--name", "harbour", PIZZAQUEUE_SHOP_CLOSED_AFTER="1")
    wait_until(lambda: Worker.objects.live().count() == 2, what="two shops")
    # Placed in this browser, which is what lets it order the same again.
    page.goto(daphne.url("/"))
    page.fill("#id_qty_margherita", "1")
    page.check("input[name=kind][value=takeaway]")
    page.select_option("#id_shop", "corner")
    page.fill("#id_customer_name", "Ada")
    page.fill("#id_note", "extra basil")
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/orders/[0-9a-f-]{36}/$"))
    order = Order.objects.get(pk=page.url.rstrip("/").split("/")[-1])
    page.goto(daphne.url(f"/orders/{order.pk}/"))
    page.evaluate("window.sameDocument = true")
    expect(page.locator("#live-state")).to_have_text("● live")
    os.kill(corner.pid, signal.SIGKILL)

    again = page.locator("#reorder button", has_text="Collect it from Harbour")
    expect(again).to_be_visible(timeout=20_000)
    expect(page.locator("#status")).to_have_text("Cancelled")
    assert page.evaluate("window.sameDocument") is True
    page.screenshot(path=ARTIFACTS / "tracking-reorder.png", full_page=True)
    again.dblclick()  # an impatient double click still places one order

    # The page of the new order, not the one it was clicked on (both are /orders/<id>/).
    page.wait_for_url(lambda url: str(order.pk) not in url and re.search(r"/orders/[0-9a-f-]{36}/$", url) is not None)
    [placed] = Order.objects.exclude(pk=order.pk)
    assert page.url.endswith(f"/orders/{placed.pk}/")
    wait_until(lambda: Order.objects.filter(pk=placed.pk, status=Order.Status.DONE).exists(), what="the order made")
    expect(page.locator("#status")).to_have_text("Ready", timeout=15_000)
    placed.refresh_from_db()
    assert (placed.pinned_shop, placed.items, placed.note, placed.placed_by_session) == (
        "harbour",
        order.items,
        "extra basil",
        order.placed_by_session,  # the same browser's
    )
