"""A placed order wakes the idle kitchen it is for at once, with real worker
processes (the LISTEN connections' parts are in tests/engine/test_listening.py)."""

from __future__ import annotations

import time

import pytest
from django.db import connection

from orders.intake import clean_order_request
from tests.base import area_owned_by, wait_until
from tests.conftest import WorkerProcesses
from tests.factory import order_data
from workers import queue
from workers.models import Bucket, Order, Worker


@pytest.mark.django_db(transaction=True)
@pytest.mark.processes
def test_idle_kitchens_start_their_own_orders_at_once_without_waiting_for_a_poll(
    worker_processes: WorkerProcesses,
) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("NOTIFY is PostgreSQL's; SQLite kitchens poll")
    # Nothing but a wake-up can start an order within seconds: no poll, heartbeat or monitor turn comes sooner than 10 s.
    slow_turns = {
        "PIZZAQUEUE_POLL_INTERVAL": "30",
        "PIZZAQUEUE_HEARTBEAT_INTERVAL": "10",
        "PIZZAQUEUE_HEARTBEAT_TIMEOUT": "30",
        "PIZZAQUEUE_MONITOR_INTERVAL": "10",
    }
    for n in range(2):
        worker_processes.start("--name", f"shop-{n}", "--handler", "orders.handlers.noop", **slow_turns)
    wait_until(
        lambda: Bucket.objects.filter(owner__status=Worker.Status.ALIVE).values("owner").distinct().count() == 2,
        timeout=30,
        what="both kitchens to own buckets",
    )
    kitchens = list(Worker.objects.filter(status=Worker.Status.ALIVE))
    time.sleep(0.5)  # both idle, waiting for their next turn
    for kitchen in [*kitchens, *kitchens]:
        order, _ = queue.place(clean_order_request(order_data(area=area_owned_by(kitchen))))
        wait_until(
            lambda o=order: Order.objects.filter(pk=o.pk, status=Order.Status.DONE).exists(),
            timeout=3,
            what=f"{kitchen}'s order to be done",
        )
        assert Order.objects.get(pk=order.pk).worker_id == kitchen.pk
