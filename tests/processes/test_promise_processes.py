"""Promises kept by real kitchens: when a kitchen dies, the orders it had move to a
live one, and the promise keeper (the monitor's duty, in whichever kitchen holds the
election) revises every moved order's promise that will not hold and tells its
customer, before that promise passes."""

from __future__ import annotations

import signal
from datetime import datetime
from typing import Any

import pytest

from orders.timeline import customer_message
from tests.base import area_owned_by, wait_until
from tests.conftest import FAST_WORKER_ENV, WorkerProcesses
from tests.factory import make_order
from workers.models import Order, OrderEvent, Worker

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.processes]

# A margherita's 40 menu seconds take two here.
SPEED = "0.05"


def promises_of(order: Order) -> list[tuple[datetime, datetime]]:
    """(promise, until): each promise the customer held, and when it was replaced (or the order was ready)."""
    events = list(order.events.filter(kind__in=["promised", "done"]).order_by("id"))
    first = next((e.data["was"] for e in events if e.kind == "promised"), None)
    held = [datetime.fromisoformat(first) if first else order.promised_at]
    until = []
    for event in events:
        until.append(event.created_at)
        if event.kind == "done":
            break
        held.append(datetime.fromisoformat(event.data["by"]))
    return list(zip(held, until, strict=False))


def test_a_dead_kitchens_moved_orders_are_promised_again_before_their_promises_pass(
    worker_processes: WorkerProcesses, settings: Any
) -> None:
    # This process quotes the orders it places with the kitchens' settings.
    settings.PIZZAQUEUE_KITCHEN_SPEED = float(SPEED)
    settings.PIZZAQUEUE_MONITOR_INTERVAL = float(FAST_WORKER_ENV["PIZZAQUEUE_MONITOR_INTERVAL"])
    # The kitchen's part of the promise: a drive would dwarf the slip a death makes.
    settings.PIZZAQUEUE_DELIVERY_SECONDS = 0.0
    env = {"PIZZAQUEUE_KITCHEN_SPEED": SPEED, "PIZZAQUEUE_DELIVERY_SECONDS": "0"}
    worker_processes.start("--name", "shop-1", "--concurrency", "1", **env)
    doomed = worker_processes.start("--name", "shop-2", "--concurrency", "1", **env)
    wait_until(lambda: Worker.objects.filter(status="alive").count() == 2, what="two live kitchens")
    survivor, victim = Worker.objects.get(name="shop-1"), Worker.objects.get(name="shop-2")
    # Work of its own at the survivor, then a queue at the kitchen that will die.
    for _ in range(3):
        make_order(area=area_owned_by(survivor))
    theirs = [make_order(area=area_owned_by(victim)) for _ in range(4)]
    wait_until(lambda: Order.objects.filter(worker=victim, status="preparing").exists(), what="shop-2 to start")

    doomed.send_signal(signal.SIGKILL)
    doomed.wait()
    wait_until(
        lambda: Order.objects.filter(pk__in=[o.pk for o in theirs], status="done").count() == len(theirs),
        timeout=60,
        what="shop-1 to make shop-2's orders",
    )

    told = OrderEvent.objects.filter(order__in=theirs, kind=OrderEvent.Kind.PROMISED)
    assert told.exclude(data__why="on-the-way").exists(), worker_processes.logs()
    # (On the shelf afterwards, with nobody to deliver them, their promises slip "on the way".)
    assert set(told.values_list("data__why", flat=True)) <= {"moved", "shop-down", "queue", "on-the-way"}
    for order in theirs:
        order.refresh_from_db()
        assert order.events.filter(kind=OrderEvent.Kind.REASSIGNED).exists()
        # No promise passed while the order was not ready: each was replaced, or kept, in time.
        for promise, until in promises_of(order):
            assert until <= promise, (order.pk, promises_of(order))
    for event in told.select_related("worker"):
        message = customer_message(event)
        assert message is not None and message["public"] is True
        assert message["text"].startswith(("Running late: now by ", "Good news: now by "))
