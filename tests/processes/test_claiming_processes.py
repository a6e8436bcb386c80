"""Adaptive claiming with real kitchens: no hoarding of slow orders (the policy
itself is checked directly in tests/engine/test_claiming.py)."""

from __future__ import annotations

import itertools
import signal
import time
from typing import Any

import pytest
from django.db.models import Max

from orders.intake import clean_order_request
from tests.base import wait_until
from tests.conftest import WorkerProcesses
from tests.factory import order_data
from workers import queue, ring
from workers.models import Order, OrderEvent, Worker

ORDERS = 24
ORDER_SECONDS = 1.0
SLOTS = 2
SECOND_KITCHEN_AFTER = 0.5
# Leases must outlive any stall of a loaded machine: this test is about sharing, not crashes.
STEADY_CLOCKS = {
    "PIZZAQUEUE_HEARTBEAT_INTERVAL": "0.5",
    "PIZZAQUEUE_HEARTBEAT_TIMEOUT": "15",
    "PIZZAQUEUE_BUCKETS": "2",
}
KITCHEN = ("--handler", "tests.handlers.slow", "--concurrency", str(SLOTS))


def areas_of_each_bucket(buckets: int) -> list[str]:
    """One delivery area per bucket: orders alternating between them split evenly between two kitchens."""
    found: dict[int, str] = {}
    for area in (f"area-{n}" for n in itertools.count()):
        found.setdefault(ring.bucket_for(area, buckets), area)
        if len(found) == buckets:
            return [found[b] for b in range(buckets)]
    raise AssertionError("unreachable")


@pytest.mark.django_db(transaction=True)
@pytest.mark.processes
def test_a_kitchen_started_later_does_its_share_of_a_backlog_of_slow_orders(
    worker_processes: WorkerProcesses, settings: Any
) -> None:
    """One kitchen is up when a backlog of one-second orders arrives; a second one
    starts half a second later. With two slots each, the ideal drain finishes at
    (orders x seconds + slots x lateness) / all slots. A first kitchen that
    claimed the whole backlog would leave the second nothing and take twice as long.

    The two kitchens own one bucket each (PIZZAQUEUE_BUCKETS=2) and the orders
    alternate between the buckets, so the share the ring allows the second one
    is half of what is left when it joins, not a coin toss of the hash.
    """
    settings.PIZZAQUEUE_BUCKETS = 2
    worker_processes.start("--name", "first", *KITCHEN, **STEADY_CLOCKS)
    second_kitchen = worker_processes.start_on_cue("--name", "second", *KITCHEN, **STEADY_CLOCKS)
    wait_until(lambda: Worker.objects.filter(name="first", status=Worker.Status.ALIVE).exists(), what="first kitchen")
    areas = areas_of_each_bucket(2)
    requests = [clean_order_request(order_data(area=areas[n % 2], note=str(ORDER_SECONDS))) for n in range(ORDERS)]

    queue.place_many(requests)
    arrived = time.monotonic()
    placed_at = Order.objects.aggregate(t=Max("created_at"))["t"]
    time.sleep(max(0.0, arrived + SECOND_KITCHEN_AFTER - time.monotonic()))  # the scenario's own schedule
    second_kitchen()

    wait_until(
        lambda: Order.objects.filter(status=Order.Status.DONE).count() == ORDERS,
        timeout=60,
        what="the backlog to drain",
    )
    joined = Worker.objects.get(name="second").started_at
    finished = Order.objects.aggregate(t=Max("finished_at"))["t"]
    late = max(SECOND_KITCHEN_AFTER, (joined - placed_at).total_seconds())
    ideal = (ORDERS * ORDER_SECONDS + SLOTS * late) / (2 * SLOTS)
    drained = (finished - placed_at).total_seconds()
    by_second = Order.objects.filter(worker__name="second").count()

    for proc in worker_processes.procs:
        proc.send_signal(signal.SIGTERM)
    assert [proc.wait(timeout=30) for proc in worker_processes.procs] == [0, 0]
    assert by_second >= 0.35 * ORDERS, f"the second kitchen did {by_second} of {ORDERS}"
    assert drained <= 1.5 * ideal, f"drained in {drained:.2f} s; ideal {ideal:.2f} s"
    assert OrderEvent.objects.filter(kind=OrderEvent.Kind.DONE).count() == ORDERS
    assert not OrderEvent.objects.filter(kind=OrderEvent.Kind.LEASE_LOST).exists()
