"""Normal and poisoned orders together, through three real kitchens (SPEC §4.12):
every normal order is done exactly once, no poisoned order is done, no order
stays in a kitchen longer than the heartbeat timeout and one monitor tick
without an event, and no kitchen is wedged."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from django.db.models import Count, Max

from orders.intake import clean_order_request
from tests.base import wait_until
from tests.conftest import FAST_WORKER_ENV, WorkerProcesses
from tests.factory import order_data
from workers import clock, queue
from workers.models import Order, OrderEvent, Worker

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.processes]

TIMEOUT = float(FAST_WORKER_ENV["PIZZAQUEUE_HEARTBEAT_TIMEOUT"])
TICK = float(FAST_WORKER_ENV["PIZZAQUEUE_MONITOR_INTERVAL"])
SLACK = 0.5
RAISING = [
    "system-exit",
    "keyboard-interrupt",
    "cancelled",
    "base-exception",
    "nul-in-error",
    "surrogate-in-error",
    "huge-error",
    "unprintable-error",
]
KITCHENS = 3


def place(notes: list[str], max_attempts: int | None = None) -> list[Order]:
    data = {"max_attempts": max_attempts} if max_attempts else {}
    requests = [
        clean_order_request(order_data(note=note, area=f"area-{n % 17}", **data)) for n, note in enumerate(notes)
    ]
    return queue.place_many(requests)


def longest_silence() -> float:
    """The longest any order in a kitchen has gone without an event, by the database's clock."""
    last = (
        OrderEvent.objects.filter(order__status=Order.Status.PREPARING)
        .values("order")
        .annotate(at=Max("created_at"))
        .values_list("at", flat=True)
    )
    now = clock.now()
    return max(((now - at).total_seconds() for at in last), default=0.0)


def test_under_a_mixed_load_normal_orders_are_done_once_and_poison_never(
    worker_processes: WorkerProcesses, record_property: Callable[[str, object], None]
) -> None:
    for n in range(KITCHENS):
        worker_processes.start("--name", f"shop-{n}", "--handler", "tests.poison.handler", "--concurrency", "4")
    wait_until(lambda: Worker.objects.filter(status=Worker.Status.ALIVE).count() == KITCHENS, what="kitchens")

    normal = place([""] * 150)
    poisoned = place([kind for kind in RAISING for _ in range(3)], max_attempts=2)
    blocked = place(["blocks-for-ever"] * 2, max_attempts=1)
    normal += place([""] * 150)
    poisoned_ids = {o.pk for o in poisoned + blocked}
    normal_ids = {o.pk for o in normal}

    silences: list[float] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        silences.append(longest_silence())
        finished = Order.objects.filter(pk__in=normal_ids | poisoned_ids, status__in=Order.FINAL_STATUSES).count()
        if finished == len(normal_ids | poisoned_ids):
            break
        time.sleep(0.1)
    assert max(silences) <= TIMEOUT + TICK + SLACK, f"an order went {max(silences):.2f}s without an event"

    assert set(Order.objects.filter(pk__in=normal_ids).values_list("status", flat=True)) == {Order.Status.DONE}
    assert set(Order.objects.filter(pk__in=poisoned_ids).values_list("status", flat=True)) == {Order.Status.FAILED}
    done = OrderEvent.objects.filter(kind=OrderEvent.Kind.DONE)
    assert set(done.values_list("order_id", flat=True)) == normal_ids
    assert not done.values("order").annotate(n=Count("id")).filter(n__gt=1).exists()

    # No kitchen wedged: all still in the ring, as their first incarnation, and still baking.
    assert all(proc.poll() is None for proc in worker_processes.procs), worker_processes.logs()
    assert sorted(Worker.objects.values_list("status", "incarnation")) == [(Worker.Status.ALIVE, 1)] * KITCHENS
    after = {o.pk for o in place([""] * 60)}
    wait_until(
        lambda: Order.objects.filter(pk__in=after, status=Order.Status.DONE).count() == 60,
        timeout=30,
        what="the kitchens to go on baking",
    )
    record_property("longest_silence_seconds", round(max(silences), 2))
