"""Stage deadlines and promised times: which orders the board and the displays flag.

A stage is overdue when it has made no progress for longer than its limit:
its share of the order's estimated kitchen time (`handlers.STAGES`) times
PIZZAQUEUE_STAGE_DEADLINE_FACTOR. The monitor asks `stage_limit` too (through
PIZZAQUEUE_STAGE_LIMIT) when PIZZAQUEUE_STAGE_RETRY gives overdue orders to
another kitchen. An order is late when it is unfinished, or a made delivery
order not yet at its customer's door, past the time its customer was promised
(`orders.promises` quotes and revises it), counted from when it became due
(`due_at`): when it was placed, or when it was scheduled for.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db.models import BigIntegerField, ExpressionWrapper, F, FloatField, Q, QuerySet, Value
from django.db.models.functions import Round

from orders.handlers import READY, STAGES
from orders.promises import handover_seconds
from workers import queue
from workers.models import CLAIM_ORDER, Order

SHARES = dict(STAGES)
# Waiting for the first step takes as long as the first step may.
SHARES[""] = STAGES[0][1]
# Handing over at the counter: the kitchen completes it at once.
SHARES[READY] = min(share for _stage, share in STAGES)
# The promise leaves the kitchen this much slack over its own estimate.
PROMISE_SLACK = 1.5


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
    """Seconds from when the order became due to when its customer is promised it."""
    if order.promised_at is not None:
        return max(0, round((order.promised_at - due_at(order)).total_seconds()))
    return fixed_seconds(order.estimated_seconds)


def ready_seconds(order: Order) -> int:
    """Seconds from when the order became due to when its kitchen must have it made for
    its promise to hold: the promise less its hand-over (a delivery order's drive). The
    kitchen display's ticket timer runs against it."""
    if order.promised_at is None:
        return fixed_seconds(order.estimated_seconds)  # the fixed estimate is the kitchen's alone
    return max(1, promised_seconds(order) - round(handover_seconds(order.kind, order.area)))


def fixed_seconds(estimated_seconds: int) -> int:
    """The fixed estimate promises were before they were quoted from the queue: the
    order's own kitchen time with slack, whatever waits ahead of it. Orders placed
    before quotes keep it, and `bench/promises.py` measures the quotes against it."""
    return round(estimated_seconds * settings.PIZZAQUEUE_KITCHEN_SPEED * PROMISE_SLACK)


def fixed_promise(rank: int, priority: int, estimated_seconds: int) -> datetime:
    """The fixed estimate's promised time, counted from when the order became due (`due_at`)."""
    due = datetime.fromtimestamp((rank + queue.rank_offset(priority)) / 1_000_000, tz=UTC)
    return due + timedelta(seconds=fixed_seconds(estimated_seconds))


def due_at(order: Order) -> datetime:
    """When the order became due: when it was placed, or its `not_before` if it was
    scheduled for later.

    Read from its rank, which is that moment less its priority's offset
    (`queue.rank_for`) and, unlike `eligible_at`, is kept through retries and
    backoffs; a rush keeps it too. An operator's requeue starts it again.
    """
    micros = order.rank + queue.rank_offset(order.priority)
    return datetime.fromtimestamp(micros / 1_000_000, tz=UTC)


def promised_at(order: Order) -> datetime:
    """When the customer is promised the order: its quote, as revised (`orders.promises`);
    the fixed estimate for an order placed before quotes."""
    if order.promised_at is not None:
        return order.promised_at
    return fixed_promise(order.rank, order.priority, order.estimated_seconds)


def late(now: datetime, status: str) -> QuerySet[Order]:
    """Orders of `status` (queued or preparing) past their promised time, the longest
    due first: filtered by the database, so every late order is found however many
    orders are waiting or scheduled ahead of it.

    Queued orders are walked in rank order (`order_claim_idx`), from the
    earliest due: an order not yet due has a rank past `now` (a promise never
    comes before it is due, and no priority puts a rank later than that), so a
    backlog scheduled for later is never read. Orders in kitchens are as many
    as the kitchens hold (`order_preparing_worker_idx`).
    """
    now_micros = int(now.timestamp() * 1_000_000)
    aging = settings.PIZZAQUEUE_PRIORITY_AGING
    per_point = 10**15 if aging <= 0 else 60_000_000 / aging  # `queue.rank_offset`, per priority point
    promise_micros = settings.PIZZAQUEUE_KITCHEN_SPEED * PROMISE_SLACK * 1_000_000
    fixed = ExpressionWrapper(
        F("rank")
        + Round(F("priority") * Value(per_point, output_field=FloatField()))
        + Round(F("estimated_seconds") * Value(promise_micros, output_field=FloatField())),
        output_field=BigIntegerField(),
    )
    # Quoted orders carry their promise; the few placed before quotes, the fixed estimate.
    return (
        Order.objects.filter(status=status, rank__lt=now_micros)
        .alias(fixed_micros=fixed)
        .filter(Q(promised_at__lt=now) | Q(promised_at__isnull=True, fixed_micros__lt=now_micros))
        .select_related("worker")
        .order_by(*CLAIM_ORDER)
    )


LATE_STATUSES = (Order.Status.QUEUED, Order.Status.PREPARING)


def late_on_the_way(now: datetime) -> QuerySet[Order]:
    """Made delivery orders still on a shelf or out with a driver past their promised
    time (their customer's door): a few, read through the hand-over's partial index."""
    waiting = Order.objects.filter(queue.PROMISE_KEPT, status=Order.Status.DONE, promised_at__lt=now)
    return waiting.select_related("worker").order_by(*CLAIM_ORDER)


def late_orders(now: datetime, limit: int | None = None) -> list[Order]:
    """The first `limit` late orders (every one without a limit), the longest due first."""
    found: list[Order] = []
    for matching in (*(late(now, status) for status in LATE_STATUSES), late_on_the_way(now)):
        found += matching if limit is None else matching[:limit]
    found.sort(key=lambda order: (order.rank, order.created_at))
    return found if limit is None else found[:limit]


def late_count(now: datetime) -> int:
    """How many orders are late: the /metrics gauge."""
    return sum(late(now, status).count() for status in LATE_STATUSES) + late_on_the_way(now).count()


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
