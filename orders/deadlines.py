"""Stage deadlines and promised times: which orders the board and the displays flag.

A stage is overdue when it has made no progress for longer than its limit:
its share of the order's estimated kitchen time (`handlers.STAGES`) times
PIZZAQUEUE_STAGE_DEADLINE_FACTOR. The monitor asks `stage_limit` too (through
PIZZAQUEUE_STAGE_LIMIT) when PIZZAQUEUE_STAGE_RETRY gives overdue orders to
another kitchen. An order is late when it is unfinished past the time its
customer was promised.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings

from orders.handlers import READY, STAGES
from workers import queue
from workers.models import Order

SHARES = dict(STAGES)
# Waiting for the first step takes as long as the first step may.
SHARES[""] = STAGES[0][1]
# Handing over at the counter: the kitchen completes it at once.
SHARES[READY] = min(share for _stage, share in STAGES)
# The promise leaves the kitchen this much slack over its own estimate.
PROMISE_SLACK = 1.5
# Unfinished orders looked at for the "late" list, oldest first, per status.
LATE_SCAN = 50


def stage_limit(order: Order) -> float | None:
    """Seconds the order's current stage may go without progress; None: no limit."""
    factor = settings.PIZZAQUEUE_STAGE_DEADLINE_FACTOR
    if factor <= 0 or order.estimated_seconds <= 0:
        return None
    share = SHARES.get(order.stage, max(SHARES.values()))
    return share * order.estimated_seconds * factor


def stage_since(order: Order) -> datetime | None:
    """When the order's current stage began: its last report, or the claim before any."""
    return order.stage_started_at or order.claimed_at


@dataclass(frozen=True)
class Overdue:
    order: Order
    limit: float
    over: float  # seconds past the limit


def overdue(order: Order, now: datetime) -> Overdue | None:
    """How far the order's current stage is past its limit; None while it is not."""
    if order.status != Order.Status.PREPARING:
        return None
    limit, since = stage_limit(order), stage_since(order)
    if limit is None or since is None:
        return None
    over = (now - since).total_seconds() - limit
    return Overdue(order, limit, over) if over > 0 else None


def overdue_stages(now: datetime, limit: int = 1000) -> list[Overdue]:
    """Every order in a kitchen whose stage is overdue, worst first. Reads only
    orders being prepared (a partial index), as many as the kitchens hold."""
    preparing = Order.objects.filter(status=Order.Status.PREPARING).select_related("worker")[:limit]
    found = [o for o in (overdue(order, now) for order in preparing) if o is not None]
    return sorted(found, key=lambda o: -o.over)


def promised_seconds(order: Order) -> int:
    """Seconds from placing to ready that the customer is promised."""
    return round(order.estimated_seconds * settings.PIZZAQUEUE_KITCHEN_SPEED * PROMISE_SLACK)


def promised_at(order: Order) -> datetime:
    return order.created_at + timedelta(seconds=promised_seconds(order))


def late_orders(now: datetime) -> list[Order]:
    """Unfinished orders past their promised time, oldest first.

    Only the oldest LATE_SCAN queued and LATE_SCAN preparing orders are looked
    at (the (status, created_at) index serves each), so the list costs the same
    with millions of orders waiting; the late ones are among the oldest.
    """
    candidates: list[Order] = []
    for status in (Order.Status.QUEUED, Order.Status.PREPARING):
        candidates += Order.objects.filter(status=status).select_related("worker").order_by("created_at")[:LATE_SCAN]
    late = [order for order in candidates if order.eligible_at <= now and promised_at(order) < now]
    return sorted(late, key=lambda order: order.created_at)


# Why a cancelled order is not requeued, in the operator's words (admin, `manage.py requeue`).
CANCELLED_NOT_REQUEUED = "it was cancelled, so it is not requeued (its promise has passed); place a new order instead."


def requeue(order_id: uuid.UUID | str, reason: str, actor_id: int | None = None) -> None:
    """An operator's requeue, keeping the shop's promises: a failed order, or one stuck in a
    kitchen, goes back in the queue; a cancelled one does not. It would come back under
    the promise it was placed with, long past, and whoever cancelled it (its customer,
    its shop's closing) meant it. Refusals raise `queue.InvalidTransitionError`."""
    if Order.objects.filter(pk=order_id, status=Order.Status.CANCELLED).exists():
        raise queue.InvalidTransitionError(CANCELLED_NOT_REQUEUED)
    queue.requeue(order_id, reason, actor_id=actor_id)
