"""A completion that committed but whose answer was lost is written again by its
kitchen: the retry is an echo of its own commit, not a lost lease, so it records
no `lease-lost` (which would inflate the metric and the order's timeline)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.db import OperationalError, connection

from tests.base import make_order, make_worker
from workers import queue
from workers.loop import Progress, WorkerLoop
from workers.models import Order, OrderEvent

pytestmark = pytest.mark.django_db(transaction=True)


def bakes_nothing(order: Order, progress: Progress) -> None:
    """Touches no database: every write is the loop's own."""


@pytest.fixture
def kitchen(live_menu: None, settings: Any) -> Iterator[WorkerLoop]:
    settings.PIZZAQUEUE_POLL_INTERVAL = 0.02
    worker = WorkerLoop(bakes_nothing, name="shop-echo", concurrency=2)
    worker.register()
    worker._executor = ThreadPoolExecutor(2)
    yield worker
    worker._executor.shutdown(wait=True)


def test_a_completion_retried_after_its_answer_was_lost_records_no_lease_lost(
    kitchen: WorkerLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    orders = [make_order() for _ in range(2)]
    complete_many = queue.complete_many
    lost_answers: list[set[Any]] = []

    def commits_then_loses_the_answer(held: Sequence[Any], worker_id: Any = None, now: Any = None) -> set[Any]:
        done = complete_many(held, worker_id, now)
        if not lost_answers:
            lost_answers.append(done)  # committed; the connection drops before the answer arrives
            connection.close()
            raise OperationalError("server closed the connection unexpectedly")
        return done

    monkeypatch.setattr(queue, "complete_many", commits_then_loses_the_answer)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (lost_answers and not kitchen.unflushed):
        kitchen.step()

    assert lost_answers == [{o.pk for o in orders}]
    assert not kitchen.unflushed
    assert Order.objects.filter(status=Order.Status.DONE).count() == 2
    assert OrderEvent.objects.filter(kind=OrderEvent.Kind.DONE).count() == 2
    assert not OrderEvent.objects.filter(kind=OrderEvent.Kind.LEASE_LOST).exists()


def test_a_completion_by_a_kitchen_that_lost_the_order_still_records_lease_lost(live_menu: None) -> None:
    worker = make_worker("shop-a")
    order = make_order()
    (claim,) = queue.claim(worker.pk, 1)
    queue.requeue(order.pk)  # an operator takes it back from the kitchen

    assert queue.complete(order.pk, claim.token, worker.pk) is False
    assert OrderEvent.objects.filter(order=order, kind=OrderEvent.Kind.LEASE_LOST).count() == 1
