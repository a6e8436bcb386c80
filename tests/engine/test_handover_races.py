"""Two drivers' phones tapping *take* on one order at once, forced on PostgreSQL: the first
take holds the order's row until it commits, so the second waits for it, then finds the order
out with the first driver and changes nothing (one driver per order)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection  # noqa: F401 - read by the skipif condition

from tests.base import fresh, make_order, make_worker, wait_until
from tests.engine.test_races import InAnotherConnection, waiting_for_a_lock
from workers import queue
from workers.models import Order, OrderEvent
from workers.queue import handover

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        "connection.vendor != 'postgresql'",
        reason="SQLite's IMMEDIATE transactions take the one write lock first: these interleavings cannot happen",
    ),
]


def test_two_phones_taking_one_order_at_once_give_it_to_one_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    kitchen = make_worker("shop-1")
    order = make_order()
    (claim,) = queue.claim(kitchen.pk, 1)
    queue.complete(order.pk, claim.token, kitchen.pk)
    dora, dan = User.objects.create_user("dora"), User.objects.create_user("dan")
    reached, go = threading.Event(), threading.Event()
    seconds = handover._seconds

    def pausing(*args: Any) -> float | None:
        # Inside the first take's transaction, after its UPDATE: the row is held until commit.
        if not reached.is_set():
            reached.set()
            assert go.wait(timeout=30)
        return seconds(*args)

    monkeypatch.setattr(handover, "_seconds", pausing)
    first = InAnotherConnection(lambda: queue.take(order.pk, dora.pk))
    first.start()
    assert reached.wait(timeout=30)
    second = InAnotherConnection(lambda: queue.take(order.pk, dan.pk))
    second.start()
    wait_until(waiting_for_a_lock, timeout=10, what="the second take to wait for the first")
    go.set()
    first.join(timeout=30)
    second.join(timeout=30)

    assert first.error is None and second.error is None
    assert first.result is not None and second.result is None
    order = fresh(order)
    assert (order.handover, order.driver_id, order.handover_token) == (Order.Handover.OUT, dora.pk, first.result)
    assert OrderEvent.objects.filter(order=order, kind=OrderEvent.Kind.OUT_FOR_DELIVERY).count() == 1
