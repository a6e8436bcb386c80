"""Kitchen staff's journey in Chromium: log in, land on the display, tap every stage; and a
display nobody works still makes its orders when its kitchen has a stand-in cook."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import Browser, Page, expect

from orders import roles
from orders.handlers import STAFFED_HANDLER
from orders.models import KitchenStaff
from tests.base import ROOT, in_role, wait_until
from tests.conftest import Daphne, WorkerProcesses, sized_page
from tests.factory import make_order
from workers.models import Order, OrderEvent, Worker

pytestmark = [pytest.mark.processes, pytest.mark.django_db(transaction=True)]

ARTIFACTS = ROOT / "test-artifacts"
TABLET = {"width": 1024, "height": 768}
PASSWORD = "pizza-oven-42"  # noqa: S105 - a test account's
NAMES = {"PIZZAQUEUE_SHOP_NAMES": "staffed-1=Market Square"}


@pytest.fixture
def tablet(browser: Browser) -> Iterator[Page]:
    yield from sized_page(browser, TABLET)


def test_a_cook_logs_in_lands_on_the_display_and_taps_an_order_through_every_stage(
    daphne: Daphne, worker_processes: WorkerProcesses, tablet: Page
) -> None:
    daphne.start(**NAMES)
    worker_processes.start("--name", "staffed-1", "--handler", STAFFED_HANDLER, **NAMES)
    wait_until(lambda: Worker.objects.live().filter(name="staffed-1").exists(), what="the staffed kitchen")
    cook = in_role(User.objects.create_user("cook", password=PASSWORD), roles.KITCHEN_STAFF)
    KitchenStaff.objects.create(user=cook, shop="staffed-1")
    order = make_order(customer_name="Ada")

    # As the README says: the login page, nothing else typed.
    tablet.goto(daphne.url("/accounts/login/"))
    tablet.fill("#id_username", "cook")
    tablet.fill("#id_password", PASSWORD)
    tablet.click("button[type=submit]")
    tablet.wait_for_url(re.compile(r"/kitchen/staffed-1/$"))
    expect(tablet.locator("h1")).to_contain_text("Kitchen Market Square")
    expect(tablet.locator("header nav")).to_contain_text("Kitchen Market Square")
    expect(tablet.locator("header nav")).not_to_contain_text("Board")
    expect(tablet.locator("#live-state")).to_have_text("● live")

    ticket = tablet.locator(f'[data-ticket="{order.pk}"]')
    for button in ("Start", "Into the oven", "Boxed", "Ready"):
        tap = ticket.locator("button.tap")
        expect(tap).to_have_text(button, timeout=10_000)
        if button == "Into the oven":
            tablet.screenshot(path=ARTIFACTS / "journey-kitchen.png", full_page=True)
        tap.click()
    expect(ticket).to_have_count(0, timeout=10_000)
    wait_until(lambda: Order.objects.get(pk=order.pk).status == Order.Status.DONE, what="the order made")
    page = tablet.content()
    for internal in ("Incarnation", "pid "):
        assert internal not in page

    # The board is not theirs: their display, with the reason, never the login form again.
    tablet.goto(daphne.url("/board/"))
    tablet.wait_for_url(re.compile(r"/kitchen/staffed-1/$"))
    expect(tablet.locator(".messages")).to_contain_text("The operations board is for operators")


def test_a_staffed_kitchens_stand_in_cook_makes_an_order_nobody_taps(
    live_menu: None, worker_processes: WorkerProcesses
) -> None:
    worker_processes.start("--name", "staffed-1", "--handler", STAFFED_HANDLER, PIZZAQUEUE_STAFFED_STANDBY="0.2")
    wait_until(lambda: Worker.objects.live().filter(name="staffed-1").exists(), what="the staffed kitchen")
    order = make_order()
    wait_until(lambda: Order.objects.get(pk=order.pk).status == Order.Status.DONE, timeout=30, what="made")
    stages = OrderEvent.objects.filter(order=order, kind=OrderEvent.Kind.STAGE).order_by("id")
    assert [e.stage for e in stages] == ["dough", "oven", "boxing", "ready"]  # one step at a time, as taps go
