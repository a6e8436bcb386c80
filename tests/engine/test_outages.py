"""An outage is not a death (SPEC §4.11): a heartbeat missed while the database
was away is the database's silence, and the monitor judges nobody by it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from tests.base import T0, at
from workers import membership, monitor, queue
from workers.models import Order, Worker

pytestmark = pytest.mark.django_db

TIMEOUT = 15.0


@pytest.fixture(autouse=True)
def _pinned(settings: Any) -> None:
    settings.PIZZAQUEUE_HEARTBEAT_TIMEOUT = TIMEOUT
    settings.PIZZAQUEUE_STEAL_AFTER = 0.0


def held_order(worker: Worker, now: datetime) -> Order:
    queue.place(queue.OrderRequest(items=[{"pizza": "margherita"}], kind="takeaway", pinned_to=worker.name), now=now)
    [claim] = queue.claim(worker.pk, 1, now=now)
    return claim.order


def test_a_monitor_back_from_an_outage_declares_nobody_dead_until_it_has_watched_a_whole_timeout() -> None:
    watcher = membership.register("watcher", "h", 1, 1, now=T0)
    silent = membership.register("silent", "h", 2, 1, now=T0)
    order = held_order(silent, T0)
    membership.heartbeat(watcher.pk, set(), now=at(40))  # the watcher is back; the other not yet

    assert monitor.tick(watcher.pk, now=at(40), in_touch_for=TIMEOUT - 1) == monitor.Recovery()

    assert Worker.objects.get(pk=silent.pk).status == Worker.Status.ALIVE
    kept = Order.objects.get(pk=order.pk)
    assert (kept.status, kept.worker_id, kept.attempts) == ("preparing", silent.pk, 1)


def test_a_monitor_in_touch_for_a_whole_timeout_declares_a_silent_worker_dead() -> None:
    watcher = membership.register("watcher", "h", 1, 1, now=T0)
    silent = membership.register("silent", "h", 2, 1, now=T0)
    order = held_order(silent, T0)
    membership.heartbeat(watcher.pk, set(), now=at(40))

    tally = monitor.tick(watcher.pk, now=at(40), in_touch_for=TIMEOUT)

    assert tally is not None and tally.dead == [silent.pk]
    back = Order.objects.get(pk=order.pk)
    assert (back.status, back.pinned_shop) == ("queued", "silent")  # for the shop's next process
