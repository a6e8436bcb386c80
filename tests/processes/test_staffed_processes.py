"""Staffed and simulated kitchens as real `manage.py worker` processes: taps from
outside the kitchen drive it, and a cancel stops it within a check interval."""

from __future__ import annotations

import time

import pytest

from orders.handlers import STAFFED_HANDLER
from tests.base import wait_until
from tests.conftest import FAST_WORKER_ENV, WorkerProcesses
from tests.factory import make_order
from workers import queue
from workers.models import Order, OrderEvent, Worker

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.processes]

TIMEOUT = float(FAST_WORKER_ENV["PIZZAQUEUE_HEARTBEAT_TIMEOUT"])


def kinds(order: Order) -> list[str]:
    return list(OrderEvent.objects.filter(order=order).order_by("id").values_list("kind", flat=True))


def in_kitchen(order: Order) -> Order:
    return wait_until(
        lambda: Order.objects.filter(pk=order.pk, status=Order.Status.PREPARING).first(), what="the claim"
    )  # type: ignore[return-value]


def test_a_staffed_kitchen_holds_its_order_until_staff_tap_ready_then_completes_it_once(
    worker_processes: WorkerProcesses,
) -> None:
    worker_processes.start("--name", "staffed-1", "--handler", STAFFED_HANDLER)
    wait_until(lambda: Worker.objects.filter(name="staffed-1", handler=STAFFED_HANDLER).exists(), what="kitchen")
    order = make_order()
    held = in_kitchen(order)
    assert held.lease_token is not None
    # Nobody taps for longer than a lease lasts: the kitchen's heartbeats keep it.
    first_expiry = held.lease_expires_at
    time.sleep(TIMEOUT * 1.5)  # the condition is time passing with nothing tapped
    still = Order.objects.get(pk=order.pk)
    assert (still.status, still.lease_token, still.stage) == (Order.Status.PREPARING, held.lease_token, "")
    assert still.lease_expires_at is not None and first_expiry is not None and still.lease_expires_at > first_expiry

    for previous, stage in (("", "dough"), ("dough", "oven"), ("oven", "boxing"), ("boxing", "ready")):
        assert queue.advance_stage(order.pk, held.lease_token, previous, stage) is True
    wait_until(lambda: Order.objects.filter(pk=order.pk, status=Order.Status.DONE).exists(), timeout=10, what="done")
    assert kinds(order) == ["placed", "claimed", "stage", "stage", "stage", "stage", "done"]


def test_a_staffed_order_cancelled_in_the_oven_leaves_the_kitchen_and_is_never_done(
    worker_processes: WorkerProcesses,
) -> None:
    worker_processes.start("--name", "staffed-1", "--handler", STAFFED_HANDLER)
    wait_until(lambda: Worker.objects.filter(name="staffed-1").exists(), what="kitchen")
    order = make_order()
    held = in_kitchen(order)
    assert held.lease_token is not None
    queue.advance_stage(order.pk, held.lease_token, "", "dough")
    queue.advance_stage(order.pk, held.lease_token, "dough", "oven")

    queue.cancel(order.pk, "cancelled by an operator", if_held=lambda _order: True)
    cancelled_at = time.monotonic()
    wait_until(
        lambda: OrderEvent.objects.filter(order=order, kind=OrderEvent.Kind.LEASE_LOST).exists(),
        timeout=10,
        what="the kitchen to stop",
    )
    assert time.monotonic() - cancelled_at < 1.0
    # A tap from a display that has not caught up yet changes nothing.
    assert queue.advance_stage(order.pk, held.lease_token, "oven", "boxing") is False
    # The kitchen is free again: it takes and finishes the next order.
    following = make_order()
    following_held = in_kitchen(following)
    assert following_held.lease_token is not None
    for previous, stage in (("", "dough"), ("dough", "oven"), ("oven", "boxing"), ("boxing", "ready")):
        queue.advance_stage(following.pk, following_held.lease_token, previous, stage)
    wait_until(lambda: Order.objects.filter(pk=following.pk, status=Order.Status.DONE).exists(), what="next done")
    stored = Order.objects.get(pk=order.pk)
    assert stored.status == Order.Status.CANCELLED
    assert OrderEvent.objects.filter(order=order, kind=OrderEvent.Kind.DONE).exists() is False


def test_a_simulated_oven_stops_within_a_second_of_a_cancel_not_at_its_next_stage(
    worker_processes: WorkerProcesses,
) -> None:
    # Speed 1: the oven alone takes over half a minute of a margherita's time.
    worker_processes.start("--name", "sim-1", PIZZAQUEUE_KITCHEN_SPEED="1")
    wait_until(lambda: Worker.objects.filter(name="sim-1").exists(), what="kitchen")
    order = make_order()
    wait_until(lambda: Order.objects.filter(pk=order.pk, stage="dough").exists(), what="the dough")

    queue.cancel(order.pk, "cancelled by an operator", if_held=lambda _order: True)
    cancelled_at = time.monotonic()
    wait_until(
        lambda: OrderEvent.objects.filter(order=order, kind=OrderEvent.Kind.LEASE_LOST).exists(),
        timeout=10,
        what="the oven to stop",
    )
    assert time.monotonic() - cancelled_at < 1.0
    (lost,) = OrderEvent.objects.filter(order=order, kind=OrderEvent.Kind.LEASE_LOST)
    assert lost.data == {"action": "continue"}
    assert Order.objects.get(pk=order.pk).stage == ""
    assert kinds(order)[-2:] == ["cancelled", "lease-lost"]
