"""The promise on the tracking page, live in Chromium: when the customer's kitchen dies
and the order moves to a busy one, the page says "Running late: now by …" on its
timeline and its promised time follows, without a reload."""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.base import area_owned_by, wait_until
from tests.conftest import FAST_WORKER_ENV, Daphne, WorkerProcesses, sized_page
from tests.factory import make_order
from workers.models import Order, OrderEvent, Worker

pytestmark = [pytest.mark.processes, pytest.mark.django_db(transaction=True)]

# A margherita's 40 menu seconds take two here.
SPEED = "0.05"


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    yield from sized_page(browser, {"width": 430, "height": 900})


def test_the_tracking_page_shows_a_revised_promise_live(
    daphne: Daphne, worker_processes: WorkerProcesses, page: Page, settings: Any
) -> None:
    settings.PIZZAQUEUE_KITCHEN_SPEED = float(SPEED)
    settings.PIZZAQUEUE_MONITOR_INTERVAL = float(FAST_WORKER_ENV["PIZZAQUEUE_MONITOR_INTERVAL"])
    # The kitchen's part of the promise: a drive would dwarf the queue's slip.
    settings.PIZZAQUEUE_DELIVERY_SECONDS = 0.0
    env = {"PIZZAQUEUE_KITCHEN_SPEED": SPEED, "PIZZAQUEUE_DELIVERY_SECONDS": "0"}
    daphne.start(**env)
    worker_processes.start("--name", "shop-1", "--concurrency", "1", **env)
    doomed = worker_processes.start("--name", "shop-2", "--concurrency", "1", **env)
    wait_until(lambda: Worker.objects.filter(status="alive").count() == 2, what="two live kitchens")
    survivor, victim = Worker.objects.get(name="shop-1"), Worker.objects.get(name="shop-2")
    for _ in range(4):
        make_order(area=area_owned_by(survivor))
    ahead = make_order(area=area_owned_by(victim))
    mine = make_order(area=area_owned_by(victim))
    assert mine.promised_at is not None
    page.goto(daphne.url(f"/orders/{mine.pk}/"))
    expect(page.locator("#live-state")).to_have_text("● live")
    page.evaluate("window.sameDocument = true")  # gone if the page reloads
    first = page.locator("#promise").get_attribute("datetime")
    assert first is not None and datetime.fromisoformat(first) == mine.promised_at
    wait_until(lambda: Order.objects.filter(pk=ahead.pk, status="preparing").exists(), what="shop-2 to start")

    doomed.send_signal(signal.SIGKILL)

    line = page.locator("#timeline li.event-promised .text").last
    expect(line).to_have_text(re.compile(r"^Running late: now by \d\d:\d\d:\d\d\.$"), timeout=20_000)
    revised = OrderEvent.objects.filter(order=mine, kind=OrderEvent.Kind.PROMISED).last()
    assert revised is not None
    expect(page.locator("#promise")).to_have_attribute("datetime", revised.data["by"])
    expect(page.locator("#promise-line")).to_have_attribute("data-revised", "true")
    expect(page.locator("#late")).to_be_hidden()
    assert page.evaluate("window.sameDocument") is True
    # Told before the first promise passed.
    assert (
        revised.created_at < mine.promised_at
        or OrderEvent.objects.filter(
            order=mine, kind=OrderEvent.Kind.PROMISED, created_at__lt=mine.promised_at
        ).exists()
    )
