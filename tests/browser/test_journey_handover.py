"""The order's whole life after the kitchen, in Chromium: a customer orders with an address and
sees the total; the counter hands a takeaway over and takes the payment; a driver takes a
delivery, a second phone's tap on it is refused, and the customer sees it out, then delivered.

Daphne serves the pages and streams the events; the kitchen's steps are the queue operations
a kitchen process would call, made here so each moment happens when the test says.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import Browser, Page, expect

from orders import roles
from orders.models import Driver, KitchenStaff
from tests.base import ROOT, in_role, make_worker
from tests.conftest import Daphne, log_in, sized_page
from workers import queue
from workers.models import Order, Worker

pytestmark = [pytest.mark.processes, pytest.mark.django_db(transaction=True)]

ARTIFACTS = ROOT / "test-artifacts"
PHONE = {"width": 430, "height": 900}
PASSWORD = "pizza-oven-42"  # noqa: S105 - a test account's
NAMES = {"PIZZAQUEUE_SHOP_NAMES": "shop-1=Harbour"}


@pytest.fixture
def phone(browser: Browser) -> Iterator[Page]:
    yield from sized_page(browser, PHONE)


def person(username: str, role: str) -> User:
    return in_role(User.objects.create_user(username, password=PASSWORD), role)


def place(page: Page, base: str, *, takeaway: bool = False) -> Order:
    """Two large margheritas through the order form, as a customer types them."""
    page.goto(f"{base}/")
    page.fill("#id_qty_margherita", "2")
    page.select_option("#id_size_margherita", "large")
    if takeaway:
        page.check("input[name=kind][value=takeaway]")
        page.select_option("#id_shop", "shop-1")
        page.fill("#id_customer_name", "Grace")
    else:
        page.fill("#id_address", "1 Harbour Street, 2nd floor")
        page.fill("#id_phone", "020 7946 0958")
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/orders/[0-9a-f-]{36}/$"))
    expect(page.locator("#live-state")).to_have_text("● live")
    return Order.objects.get(pk=page.url.rstrip("/").rsplit("/", 1)[1])


def make(order: Order, kitchen: Worker) -> None:
    """The kitchen claims and completes the order: it is made (`done`) and waits at the shop."""
    (claim,) = [c for c in queue.claim(kitchen.pk, 10) if c.order.pk == order.pk]
    assert queue.complete(order.pk, claim.token, kitchen.pk) is True


def test_a_customer_orders_with_an_address_and_sees_the_total_as_they_choose(daphne: Daphne, phone: Page) -> None:
    daphne.start(PIZZAQUEUE_DELIVERY_FEE="2.50", **NAMES)
    make_worker("shop-1")
    phone.goto(daphne.url("/"))
    expect(phone.locator("#total-amount")).to_have_text("€0.00")
    expect(phone.locator("#id_shop")).to_be_hidden()  # "Collect from" is not a delivery's question

    phone.fill("#id_qty_margherita", "2")
    phone.select_option("#id_size_margherita", "large")
    expect(phone.locator("#total-amount")).to_have_text("€25.50")  # 2 × 11.50 and the delivery fee
    expect(phone.locator("#total")).to_contain_text("including €2.50 delivery")
    phone.check("input[name=kind][value=takeaway]")
    expect(phone.locator("#total-amount")).to_have_text("€23.00")
    expect(phone.locator("#id_address")).to_be_hidden()
    expect(phone.locator("#id_shop")).to_be_visible()
    phone.check("input[name=kind][value=delivery]")

    phone.click("button[type=submit]")  # no address, no phone: the form says so, next to them
    expect(phone.locator("#errors-address")).to_have_text("A delivery order needs the address to bring it to.")
    expect(phone.locator("#errors-phone")).to_have_text("A delivery order needs a phone number the driver can call.")
    phone.fill("#id_address", "1 Harbour Street, 2nd floor")
    phone.fill("#id_phone", "020 7946 0958")
    expect(phone.locator("#total-amount")).to_have_text("€25.50")
    phone.click("button[type=submit]")
    phone.wait_for_url(re.compile(r"/orders/[0-9a-f-]{36}/$"))

    expect(phone.locator("#order-total")).to_have_text("€25.50")
    expect(phone.locator("#address")).to_have_text("1 Harbour Street, 2nd floor")  # this browser placed it
    order = Order.objects.get(pk=phone.url.rstrip("/").rsplit("/", 1)[1])
    assert (str(order.total), order.address, order.phone) == ("25.50", "1 Harbour Street, 2nd floor", "02079460958")
    phone.screenshot(path=ARTIFACTS / "journey-handover-ordered.png", full_page=True)


def test_the_counter_marks_a_takeaway_collected_and_paid(daphne: Daphne, browser: Browser, phone: Page) -> None:
    daphne.start(**NAMES)
    kitchen = make_worker("shop-1")
    cook = person("cook", roles.KITCHEN_STAFF)
    KitchenStaff.objects.create(user=cook, shop="shop-1")
    order = place(phone, daphne.origin, takeaway=True)

    make(order, kitchen)
    expect(phone.locator("#status")).to_have_text("Ready")
    expect(phone.locator("#handover")).to_have_text("Ready at Harbour's counter: pay when you collect it.")
    expect(phone.locator("#promise-line")).to_have_count(0)  # ready to collect: the promise is kept

    tablet = browser.new_context(viewport={"width": 1024, "height": 768})
    try:
        display = tablet.new_page()
        log_in(display, daphne.origin, "/kitchen/shop-1/", "cook", PASSWORD)
        ticket = display.locator(f'[data-counter="{order.pk}"]')
        expect(ticket).to_contain_text("Grace")
        expect(ticket).to_contain_text("To pay: €23.00")
        ticket.get_by_role("button", name="Collected, paid cash").click()
        expect(ticket).to_have_count(0)
    finally:
        tablet.close()

    expect(phone.locator("#status")).to_have_text("Collected")
    expect(phone.locator("#handover")).to_have_text("Collected and paid — enjoy!")
    expect(phone.locator("#timeline li .text").last).to_have_text("Collected and paid (cash). Enjoy!")
    order.refresh_from_db()
    assert (order.handover, order.payment_method) == (Order.Handover.COLLECTED, "cash")


def test_a_driver_takes_a_delivery_a_second_phone_is_refused_and_the_customer_sees_it_out_then_delivered(
    daphne: Daphne, browser: Browser, phone: Page
) -> None:
    daphne.start(**NAMES)
    kitchen = make_worker("shop-1")
    for name in ("dora", "dan"):
        Driver.objects.create(user=person(name, roles.DRIVERS), shop="shop-1")
    order = place(phone, daphne.origin)
    make(order, kitchen)
    expect(phone.locator("#status")).to_have_text("Ready")
    expect(phone.locator("#handover")).to_have_text(
        "Ready on Harbour's shelf, waiting for a driver: pay the driver when it arrives."
    )
    expect(phone.locator("#promise-line")).to_contain_text("At your door by")  # the promise is the door

    doras = browser.new_context(viewport=PHONE)
    # Dan's phone shows the shelf as it was when he looked: no script refreshes it.
    dans = browser.new_context(viewport=PHONE, java_script_enabled=False)
    try:
        dora, dan = doras.new_page(), dans.new_page()
        log_in(dora, daphne.origin, "/shelf/shop-1/", "dora", PASSWORD)
        log_in(dan, daphne.origin, "/shelf/shop-1/", "dan", PASSWORD)
        expect(dora.locator("#live-state")).to_have_text("● live")  # the shop's stream admits its drivers
        expect(dan.locator(f'[data-shelf="{order.pk}"] button.take')).to_be_visible()

        dora.locator(f'[data-shelf="{order.pk}"] button.take').click()
        out = dora.locator(f'[data-out="{order.pk}"]')
        expect(out).to_contain_text("1 Harbour Street, 2nd floor")
        expect(out).to_contain_text("To collect: €23.00")
        expect(phone.locator("#status")).to_have_text("Out for delivery")
        expect(phone.locator("#handover")).to_have_text("Out for delivery: pay the driver when it arrives.")
        expect(phone.locator("#timeline li .text").last).to_have_text("Out for delivery: a driver is on the way.")

        dan.locator(f'[data-shelf="{order.pk}"] button.take').click()  # his stale screen's button
        expect(dan.locator(".messages")).to_contain_text("was taken by another driver a moment ago: nothing changed.")
        expect(dan.locator(f'[data-shelf="{order.pk}"]')).to_have_count(0)
        order.refresh_from_db()
        assert (order.handover, order.driver.username) == (Order.Handover.OUT, "dora")  # type: ignore[union-attr]

        out.get_by_role("button", name="Delivered, paid card").click()
        expect(out).to_have_count(0)
    finally:
        doras.close()
        dans.close()

    expect(phone.locator("#status")).to_have_text("Delivered")
    expect(phone.locator("#handover")).to_have_text("Delivered and paid — enjoy!")
    expect(phone.locator("#promise-line")).to_have_count(0)  # kept: history now
    expect(phone.locator("#timeline li .text").last).to_have_text("Delivered and paid (card). Enjoy!")
    phone.screenshot(path=ARTIFACTS / "journey-handover-delivered.png", full_page=True)
    order.refresh_from_db()
    assert (order.handover, order.payment_method) == (Order.Handover.DELIVERED, "card")
