"""A rolling redeploy of a named shop, with real processes (SPEC §4.4, §7a): start the
new `manage.py worker`, SIGTERM the old one. Nothing is cancelled, no attempt is
charged, every order is made exactly once; a staffed kitchen's open tickets pass to
the new process with their stage, and the staff's taps go on working there."""

from __future__ import annotations

import os
import signal
import time
from datetime import timedelta
from itertools import pairwise

import pytest
from django.db.models import Count

from orders.handlers import STAFFED_HANDLER
from tests.base import wait_until
from tests.conftest import WorkerProcesses
from tests.factory import make_order
from workers import clock, queue
from workers.models import Order, OrderEvent, Worker

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.processes]

# Well inside the fast clocks' 20 s grace: a handed-over ticket does not wait it out.
HANDED_OVER_WITHIN = 8.0


def incarnation(name: str, number: int) -> Worker:
    return wait_until(
        lambda: Worker.objects.filter(name=name, incarnation=number, status=Worker.Status.ALIVE).first(),
        what=f"{name} #{number} up",
    )  # type: ignore[return-value]


def nothing_cancelled_failed_or_charged(orders: list[Order]) -> None:
    ids = [o.pk for o in orders]
    assert not OrderEvent.objects.filter(
        order__in=ids, kind__in=[OrderEvent.Kind.CANCELLED, OrderEvent.Kind.FAILED, OrderEvent.Kind.RETRIED]
    ).exists()
    assert not Order.objects.filter(pk__in=ids, attempts__gt=1).exists()


def done_exactly_once(orders: list[Order]) -> None:
    ids = [o.pk for o in orders]
    wait_until(lambda: Order.objects.filter(pk__in=ids, status=Order.Status.DONE).count() == len(ids), what="all done")
    done = OrderEvent.objects.filter(order__in=ids, kind=OrderEvent.Kind.DONE)
    assert done.count() == len(ids)
    assert not done.values("order").annotate(n=Count("id")).filter(n__gt=1).exists()


def test_a_staffed_shops_redeploy_passes_its_open_tickets_on_at_their_stage_and_cancels_nothing(
    worker_processes: WorkerProcesses,
) -> None:
    old = worker_processes.start("--name", "corner", "--handler", STAFFED_HANDLER, "--concurrency", "2")
    first = incarnation("corner", 1)
    in_oven = make_order(kind="takeaway", shop="corner", priority=5)
    waiting = make_order(kind="takeaway", shop="corner", priority=4)
    tonight = make_order(kind="takeaway", shop="corner", not_before=clock.now() + timedelta(hours=2))
    wait_until(lambda: Order.objects.filter(worker=first, status=Order.Status.PREPARING).count() == 2, what="claims")
    token = Order.objects.get(pk=in_oven.pk).lease_token
    assert token is not None
    assert queue.advance_stage(in_oven.pk, token, "", "dough", by="staff")
    assert queue.advance_stage(in_oven.pk, token, "dough", "oven", by="staff")

    worker_processes.start("--name", "corner", "--handler", STAFFED_HANDLER, "--concurrency", "2")
    second = incarnation("corner", 2)
    os.kill(old.pid, signal.SIGTERM)
    stopped_at = time.monotonic()

    assert old.wait(timeout=HANDED_OVER_WITHIN * 2) == 0, worker_processes.logs()
    wait_until(
        lambda: Order.objects.filter(worker=second, status=Order.Status.PREPARING).count() == 2,
        timeout=HANDED_OVER_WITHIN,
        what="the tickets at the new process",
    )
    assert time.monotonic() - stopped_at < HANDED_OVER_WITHIN
    assert Worker.objects.get(pk=first.pk).status == Worker.Status.STOPPED
    carried = Order.objects.get(pk=in_oven.pk)
    assert (carried.stage, carried.attempts) == ("oven", 1)  # where the staff left it, uncharged
    assert Order.objects.get(pk=tonight.pk).status == Order.Status.QUEUED  # still tonight's, at the shop

    # The staff tap on at the new ticket; a tap from a display still showing the old one changes nothing.
    assert carried.lease_token is not None
    assert not queue.advance_stage(in_oven.pk, token, "oven", "boxing")
    for order in (carried, Order.objects.get(pk=waiting.pk)):
        assert order.lease_token is not None
        steps = ["", "dough", "oven", "boxing", "ready"]
        for previous, stage in pairwise(steps[steps.index(order.stage) :]):
            assert queue.advance_stage(order.pk, order.lease_token, previous, stage), (order.stage, stage)
    done_exactly_once([in_oven, waiting])
    nothing_cancelled_failed_or_charged([in_oven, waiting, tonight])
    handed = OrderEvent.objects.filter(order=in_oven, kind=OrderEvent.Kind.RELEASED).get()
    assert (handed.worker_id, handed.data) == (first.pk, {"reason": queue.HANDED_OVER})


def test_a_simulated_kitchens_redeploy_finishes_its_oven_and_leaves_the_rest_to_the_new_process(
    worker_processes: WorkerProcesses,
) -> None:
    slow = {"PIZZAQUEUE_KITCHEN_SPEED": "0.1"}  # a medium margherita: four seconds
    kitchen = ("--name", "corner", "--handler", "orders.handlers.kitchen", "--concurrency", "2")
    old = worker_processes.start(*kitchen, **slow)
    first = incarnation("corner", 1)
    orders = [make_order(kind="takeaway", shop="corner") for _ in range(8)]
    wait_until(lambda: Order.objects.filter(worker=first, stage="oven").exists(), what="an order in the oven")

    worker_processes.start(*kitchen, **slow)
    second = incarnation("corner", 2)
    os.kill(old.pid, signal.SIGTERM)

    assert old.wait(timeout=30) == 0, worker_processes.logs()
    done_exactly_once(orders)
    nothing_cancelled_failed_or_charged(orders)
    makers = set(
        OrderEvent.objects.filter(order__in=orders, kind=OrderEvent.Kind.DONE).values_list("worker", flat=True)
    )
    assert second.pk in makers  # the new process took over the queue
