"""An operator's journey in Chromium: log in to the board, go to admin, find orders by name and
short id, read one, cancel, requeue and rush, and see it on the board; everything fits 1280 px."""

from __future__ import annotations

import re
from collections.abc import Iterator
from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError
from playwright.sync_api import Browser, Page, expect

from orders import roles
from orders.deadlines import CANCELLED_NOT_REQUEUED
from tests.base import ROOT, in_role, make_worker
from tests.conftest import Daphne, sized_page
from tests.factory import make_order
from workers import queue
from workers.models import Order

pytestmark = [pytest.mark.processes, pytest.mark.django_db(transaction=True)]

ARTIFACTS = ROOT / "test-artifacts"
LAPTOP = {"width": 1280, "height": 800}
PASSWORD = "pizza-oven-42"  # noqa: S105 - a test account's
ORDERS = "/admin/workers/order/"


@pytest.fixture
def laptop(browser: Browser) -> Iterator[Page]:
    yield from sized_page(browser, LAPTOP)


def search(page: Page, base: str, term: str) -> None:
    page.goto(f"{base}{ORDERS}")
    page.fill("#searchbar", term)
    page.press("#searchbar", "Enter")
    page.wait_for_load_state()


def act(page: Page, action: str) -> None:
    page.locator("input.action-select").first.check()
    page.select_option("select[name=action]", action)
    page.click("button[name=index]")
    page.wait_for_load_state()


def test_an_operator_finds_reads_cancels_requeues_and_rushes_orders_from_the_board_and_admin(
    daphne: Daphne, laptop: Page
) -> None:
    daphne.start()
    shop = make_worker("shop-1")
    failed = make_order(customer_name="Grace Hopper", max_attempts=1, area="Harbour")
    (claim,) = queue.claim(shop.pk, 1)
    queue.fail(failed.pk, claim.token, "oven on fire")
    waiting = make_order(customer_name="Ada Lovelace", area="Old Town")
    slow = make_order(customer_name="Linus", area="Riverside")
    in_role(User.objects.create_user("olga", password=PASSWORD, is_staff=True), roles.OPERATORS)

    laptop.goto(daphne.url("/accounts/login/"))
    laptop.fill("#id_username", "olga")
    laptop.fill("#id_password", PASSWORD)
    laptop.click("button[type=submit]")
    laptop.wait_for_url(re.compile(r"/board/$"))
    expect(laptop.locator('tr[data-worker="shop-1"] .status')).to_have_text("open")
    expect(laptop.locator("#live-state")).to_have_text("● live")
    laptop.screenshot(path=ARTIFACTS / "journey-operator-board.png", full_page=True)

    laptop.click("header nav >> text=Admin")
    expect(laptop.locator("#content")).to_contain_text("Kitchens")
    expect(laptop.locator("#user-tools")).to_contain_text("Operations board")

    search(laptop, daphne.origin, "ada")
    expect(laptop.locator("#result_list tbody tr")).to_have_count(1)
    expect(laptop.locator("#result_list tbody tr")).to_contain_text(f"#{str(waiting.pk)[:8]}")
    # Every column on screen, none cut or scrolled out of the results' box.
    box = laptop.evaluate(
        "(() => { const r = document.querySelector('#changelist .results');"
        " return [r.scrollWidth, r.clientWidth, r.getBoundingClientRect().right]; })()"
    )
    assert box[0] <= box[1] and box[2] <= LAPTOP["width"], box
    laptop.screenshot(path=ARTIFACTS / "journey-operator-admin.png", full_page=True)
    act(laptop, "cancel_orders")
    expect(laptop.locator("ul.messagelist")).to_contain_text("1 order cancelled.")

    search(laptop, daphne.origin, f"#{str(failed.pk)[:8]}")
    expect(laptop.locator("#result_list tbody tr")).to_have_count(1)
    laptop.locator("#result_list tbody tr th a").click()
    expect(laptop.locator(".field-items_readable")).to_contain_text("1 × Margherita (medium)")
    expect(laptop.locator(".field-items_readable")).to_contain_text("Total:")
    expect(laptop.locator("#content")).to_contain_text(re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"))
    search(laptop, daphne.origin, f"#{str(failed.pk)[:8]}")
    act(laptop, "requeue_orders")
    expect(laptop.locator("ul.messagelist")).to_contain_text("1 order requeued.")

    search(laptop, daphne.origin, "riverside")
    act(laptop, "raise_priority_of_orders")
    expect(laptop.locator("ul.messagelist")).to_contain_text("1 order rushed.")

    assert Order.objects.get(pk=waiting.pk).status == Order.Status.CANCELLED
    assert Order.objects.get(pk=failed.pk).status == Order.Status.QUEUED
    assert Order.objects.get(pk=slow.pk).priority == Order.MAX_PRIORITY

    laptop.click("#user-tools >> text=Operations board")
    laptop.wait_for_url(re.compile(r"/board/$"))
    events = laptop.locator("#events")
    expect(events).to_contain_text("rushed")
    expect(events).to_contain_text("requeued")
    expect(events).not_to_contain_text("lease-lost")


def test_the_requeue_command_refuses_a_cancelled_order_as_admin_does(menu: None) -> None:
    order = make_order()
    queue.cancel(order.pk)
    err = StringIO()
    with pytest.raises(CommandError, match="Nothing was requeued"):
        call_command("requeue", str(order.pk), stdout=StringIO(), stderr=err)
    assert f"{order.pk}: {CANCELLED_NOT_REQUEUED}" in err.getvalue()
    assert Order.objects.get(pk=order.pk).status == Order.Status.CANCELLED
