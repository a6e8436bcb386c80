"""The worker loop when the database fails it at the worst moment: the answer
to a committed claim lost on the way back, a heartbeat refused.

The loop runs here in the test process against the real test database, one
turn at a time, so the failure lands exactly where it is meant to: the
database is real, only the moment of the fault is chosen.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.db import OperationalError, connection

from tests.base import make_order
from workers import membership, queue
from workers.loop import LeaseLostError, Progress, WorkerLoop
from workers.models import Order, OrderEvent, Worker

pytestmark = pytest.mark.django_db(transaction=True)


def noop(order: Order, progress: Progress) -> None:
    """Bakes nothing and touches no database: every write is the loop's own."""


@pytest.fixture
def loop(transactional_db: None, settings: Any) -> Iterator[WorkerLoop]:
    settings.PIZZAQUEUE_HEARTBEAT_INTERVAL = 5.0
    settings.PIZZAQUEUE_HEARTBEAT_TIMEOUT = 15.0
    settings.PIZZAQUEUE_POLL_INTERVAL = 0.02
    worker = WorkerLoop(noop, name="shop-faulty", concurrency=4)
    worker.register()
    worker._executor = ThreadPoolExecutor(4)
    yield worker
    worker._executor.shutdown(wait=True)


def turn_until(loop: WorkerLoop, done: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        loop.step()
        if done():
            return True
    return False


def test_orders_whose_claim_lost_its_answer_are_handed_back_and_baked(
    loop: WorkerLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    orders = [make_order() for _ in range(3)]
    claim = queue.claim
    unanswered: list[queue.Claim] = []

    def commits_then_loses_the_answer(worker_id: int, limit: int, now: Any = None) -> list[queue.Claim]:
        claims = claim(worker_id, limit, now)
        if unanswered:
            return claims
        # Committed: the rows are the worker's. The connection drops before they arrive.
        unanswered.extend(claims)
        connection.close()
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(queue, "claim", commits_then_loses_the_answer)
    loop.step()
    assert {c.order.pk for c in unanswered} == {o.pk for o in orders}
    assert Order.objects.filter(status=Order.Status.PREPARING).count() == 3

    def all_done() -> bool:
        return Order.objects.filter(status=Order.Status.DONE).count() == 3

    assert turn_until(loop, all_done, seconds=5), "orders claimed unanswered stayed with the worker"
    handed_back = OrderEvent.objects.filter(kind=OrderEvent.Kind.RELEASED)
    assert set(handed_back.values_list("order_id", flat=True)) == {o.pk for o in orders}
    # Handed back unstarted: the lost claim's attempt was refunded.
    assert set(Order.objects.values_list("attempts", flat=True)) == {1}


def test_a_failed_heartbeat_is_tried_again_within_a_fraction_of_the_interval(
    loop: WorkerLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    beat = membership.heartbeat
    calls: list[float] = []

    def refused_once(*args: Any, **kwargs: Any) -> str:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise OperationalError("could not receive data from server")
        return beat(*args, **kwargs)

    monkeypatch.setattr(membership, "heartbeat", refused_once)
    loop._next_heartbeat = 0.0  # due now
    assert loop.record is not None
    registered_beat = loop.record.last_heartbeat

    assert turn_until(loop, lambda: len(calls) >= 2, seconds=3), "no second heartbeat within 3 s (interval: 5 s)"

    assert calls[1] - calls[0] < 1.5
    loop.record.refresh_from_db()
    assert loop.record.last_heartbeat > registered_beat


def test_a_worker_out_of_touch_past_its_leases_stops_baking_before_they_expire_and_carries_on_uncharged(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.PIZZAQUEUE_HEARTBEAT_INTERVAL = 0.2
    settings.PIZZAQUEUE_HEARTBEAT_TIMEOUT = 2.0
    settings.PIZZAQUEUE_POLL_INTERVAL = 0.02
    stopped: list[float] = []
    runs: list[int] = []

    def reports_until_stopped(order: Order, progress: Progress) -> None:
        runs.append(order.attempts)
        try:
            while len(runs) == 1:  # the second run just bakes
                progress("oven")
                time.sleep(0.01)
        except LeaseLostError:
            stopped.append(time.monotonic())
            raise
        finally:
            connection.close()  # this baking thread's connection

    worker = WorkerLoop(reports_until_stopped, name="shop-cut-off", concurrency=1)
    worker.register()
    worker._executor = ThreadPoolExecutor(1)
    try:
        order = make_order()
        assert turn_until(worker, lambda: Order.objects.filter(pk=order.pk, stage="oven").exists(), seconds=5)
        beat = membership.heartbeat
        renewed: list[float] = []

        def heartbeats_do_not_arrive(*args: Any, **kwargs: Any) -> str:
            if renewed:
                raise OperationalError("could not send data to server")
            sent = time.monotonic()
            status = beat(*args, **kwargs)
            renewed.append(sent)  # the last one that worked
            return status

        monkeypatch.setattr(membership, "heartbeat", heartbeats_do_not_arrive)
        worker._next_heartbeat = 0.0
        assert turn_until(worker, lambda: bool(stopped), seconds=5), "the handler baked on past its lease"

        out_of_touch = stopped[0] - renewed[0]
        assert 1.0 < out_of_touch < 2.0, f"stopped {out_of_touch:.2f}s after the last heartbeat (timeout 2 s)"
        first = worker.record
        monkeypatch.setattr(membership, "heartbeat", beat)  # the database answers again

        def done() -> bool:
            return Order.objects.filter(pk=order.pk, status=Order.Status.DONE).exists()

        assert turn_until(worker, done, seconds=10)
        # An outage is not a death: the same worker, and the attempt the outage cut short refunded.
        assert first is not None and worker.record is not None
        assert worker.record.pk == first.pk
        assert Worker.objects.get(pk=first.pk).status == Worker.Status.ALIVE
        assert runs == [1, 1]
        assert Order.objects.get(pk=order.pk).attempts == 1
        released = OrderEvent.objects.get(order=order, kind=OrderEvent.Kind.RELEASED)
        assert released.data == {"reason": "interrupted"}
    finally:
        worker._executor.shutdown(wait=True)
