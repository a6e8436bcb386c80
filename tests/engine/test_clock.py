"""Every decision by the database's clock (SPEC §4.8), proven from a process whose
own clock is a minute fast: nothing it writes or judges may follow that clock.

The process's clock is made wrong here by replacing the time Django reads
(`django.utils.timezone.now`), which every part of the project would use for
a time of its own. Kitchens with wrong clocks in processes of their own, on
hosts of their own, are in the many-machines tests.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from tests.base import make_order, make_worker
from workers import clock, membership, monitor, queue
from workers.models import Order, OrderEvent, Worker

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor != "postgresql",
        reason="SQLite has no server: the machine holding the file is every process's clock",
    ),
]

FAST = timedelta(seconds=60)


def database_time() -> datetime:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement_timestamp()")
        return cursor.fetchone()[0]


@pytest.fixture
def fast_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    real = timezone.now
    monkeypatch.setattr(timezone, "now", lambda: real() + FAST)
    assert timezone.now() - database_time() > FAST - timedelta(seconds=1), "the clock is not wrong: no proof"


def near_database_time(moment: datetime | None) -> bool:
    assert moment is not None
    return abs(moment - database_time()) < timedelta(seconds=5)


def test_a_process_with_a_fast_clock_stamps_every_time_with_the_databases(fast_clock: None) -> None:
    worker = make_worker("shop-fast")
    order = make_order()
    [claim] = queue.claim(worker.pk, 1)
    assert queue.report_stage(order.pk, claim.token, "oven", worker.pk)
    membership.heartbeat(worker.pk, [claim.token])
    held = Order.objects.get(pk=order.pk)
    assert queue.complete(order.pk, claim.token, worker.pk)
    done = Order.objects.get(pk=order.pk)
    worker.refresh_from_db()

    for moment in (order.created_at, order.eligible_at, held.claimed_at, done.finished_at):
        assert near_database_time(moment)
    assert near_database_time(worker.started_at) and near_database_time(worker.last_heartbeat)
    assert abs(held.lease_expires_at - held.claimed_at - timedelta(seconds=settings.PIZZAQUEUE_HEARTBEAT_TIMEOUT)) < (
        timedelta(seconds=5)
    )
    for event in OrderEvent.objects.filter(order=order):
        assert near_database_time(event.created_at), event.kind
    assert queue.rank_for(order.eligible_at, order.priority) == pytest.approx(order.rank, abs=1)


def test_an_order_placed_by_a_fast_clock_is_claimable_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    worker = make_worker("shop-1")
    real = timezone.now
    monkeypatch.setattr(timezone, "now", lambda: real() + FAST)  # the web process's clock
    order = make_order()
    monkeypatch.setattr(timezone, "now", real)

    assert [c.order.pk for c in queue.claim(worker.pk, 1)] == [order.pk]


def test_a_monitor_with_a_fast_clock_declares_no_healthy_worker_dead(fast_clock: None) -> None:
    boss = make_worker("shop-boss")
    healthy = make_worker("shop-healthy")
    membership.heartbeat(healthy.pk)

    report = monitor.tick(boss.pk)

    assert report is not None and report.dead == []
    assert Worker.objects.get(pk=healthy.pk).status == Worker.Status.ALIVE
    assert near_database_time(clock.now())
