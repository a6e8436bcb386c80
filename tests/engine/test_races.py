"""Races on a pinned (takeaway) order, forced deterministically on PostgreSQL: a shop
that closes while an operation on one of its orders is under way never leaves that
order queued for nobody. The closing either sees the operation's change and cancels
it, or the monitor's next round does (`recovery.close_shops`) (SPEC §4, §7b).

Each race runs the operation in one connection, paused between its read and
its write, and the competing change in a second one; the test then watches
the server (`pg_stat_activity`) to know whether the second one waits.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection, connections

from tests.base import make_order, make_worker, wait_until
from workers import membership, monitor, queue, recovery
from workers.clock import now as clock_now
from workers.models import CLOSED, Order, OrderEvent, Worker
from workers.queue import operators

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        "connection.vendor != 'postgresql'",
        reason="SQLite's IMMEDIATE transactions take the one write lock first: these interleavings cannot happen",
    ),
]


class InAnotherConnection(threading.Thread):
    """Runs `call` on its own database connection, keeping its result or its error."""

    def __init__(self, call: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.call = call
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.call()
        except BaseException as exc:
            self.error = exc
        finally:
            connections.close_all()


def waiting_for_a_lock() -> bool:
    """Whether some other session of this database is waiting for a row or lock."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        )
        return bool(cursor.fetchone()[0])


def paused_before_its_write(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, threading.Event]:
    """Pause the next requeue between its checks and its UPDATE (at `rank_for`, which
    builds the UPDATE's new rank): (reached, go)."""
    reached, go = threading.Event(), threading.Event()
    rank_for = operators.rank_for

    def pausing(*args: Any) -> int:
        reached.set()
        assert go.wait(timeout=30)
        return rank_for(*args)

    monkeypatch.setattr(operators, "rank_for", pausing)
    return reached, go


def close(shop: Worker) -> None:
    """An operator closes the shop: its kitchen drains, then stops."""
    membership.drain(shop.pk)
    membership.stop(shop.pk, CLOSED)


def test_a_requeue_racing_its_shops_closing_never_strands_the_order(
    live_menu: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    shop = make_worker("shop-1")
    make_worker("watcher")
    order = make_order(kind="takeaway", pinned_to="shop-1")
    queue.cancel(order.pk, "changed my mind")
    reached, go = paused_before_its_write(monkeypatch)

    requeue = InAnotherConnection(lambda: queue.requeue(order.pk))
    requeue.start()
    assert reached.wait(timeout=30)  # the requeue found the shop open and is about to write
    closing = InAnotherConnection(lambda: close(shop))
    closing.start()
    wait_until(lambda: not closing.is_alive() or waiting_for_a_lock(), what="the closing to finish or wait")
    go.set()
    requeue.join(timeout=30)
    closing.join(timeout=30)
    assert requeue.error is None and closing.error is None, (requeue.error, closing.error)
    assert Worker.objects.get(pk=shop.pk).status == Worker.Status.STOPPED

    # Whichever came first, the order is not left queued for a closed shop past the next round.
    monitor.close_closed_shops(clock_now())
    order.refresh_from_db()
    assert order.status == Order.Status.CANCELLED
    assert order.cancel_reason == recovery.SHOP_UNAVAILABLE
    kinds = list(OrderEvent.objects.filter(order=order).values_list("kind", flat=True))
    assert kinds[-2:] == [OrderEvent.Kind.RETRIED, OrderEvent.Kind.CANCELLED]


def test_a_requeue_after_its_shop_closed_is_refused(live_menu: None) -> None:
    shop = make_worker("shop-1")
    order = make_order(kind="takeaway", pinned_to="shop-1")
    queue.cancel(order.pk, "changed my mind")
    close(shop)

    with pytest.raises(queue.InvalidTransitionError, match="^Its shop is closed"):
        queue.requeue(order.pk)
    order.refresh_from_db()
    assert order.status == Order.Status.CANCELLED


def test_a_rush_racing_its_shops_closing_is_cancelled_with_the_shop(
    live_menu: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    shop = make_worker("shop-1")
    order = make_order(kind="takeaway", pinned_to="shop-1")
    reached, go = threading.Event(), threading.Event()
    rank_for = operators.rank_for

    def pausing(*args: Any) -> int:
        reached.set()
        assert go.wait(timeout=30)
        return rank_for(*args)

    monkeypatch.setattr(operators, "rank_for", pausing)
    rush = InAnotherConnection(lambda: queue.raise_priority(order.pk, priority=9))
    rush.start()
    assert reached.wait(timeout=30)  # the rush read the order queued and is about to write
    closing = InAnotherConnection(lambda: close(shop))
    closing.start()
    # The closing's cancelling of the shop's orders waits for the order the rush holds.
    wait_until(waiting_for_a_lock, what="the closing to wait for the rushed order")
    go.set()
    rush.join(timeout=30)
    closing.join(timeout=30)
    assert rush.error is None and closing.error is None, (rush.error, closing.error)

    order.refresh_from_db()
    assert (order.status, order.priority) == (Order.Status.CANCELLED, 9)
