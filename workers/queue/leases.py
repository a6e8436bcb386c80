"""Leases: a worker claims orders, and every later write it makes about one is fenced.

A claim hands orders to one worker under a new lease token; the worker's
stage reports, completion, failure and hand-back are conditional on that
token (`Order.objects.leased`, the fence), so a worker that lost its lease
(presumed dead, lease expired, order cancelled or moved) can only record
`lease-lost`, never overwrite the new holder's work: an order reaches `done`
exactly once.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Case, F, Q, Value, When

from workers import clock, sql, storable
from workers.models import Order, OrderEvent
from workers.queue.outbox import Event, event, record

logger = logging.getLogger(__name__)

Status = Order.Status

# An order no worker holds: what every write that ends or gives back a lease sets
# (the `complete` and `claim` statements set the same; a test holds them together).
LEASE_CLEARED: dict[str, Any] = {"lease_token": None, "lease_expires_at": None, "stage": "", "stage_started_at": None}
# An order taken from its worker and waiting again.
BACK_IN_QUEUE: dict[str, Any] = {"status": Status.QUEUED, "worker": None, **LEASE_CLEARED}

# Where a made order waits at its shop, by its kind: the counter or the shelf (the
# `complete` statement sets the same; a test holds them together).
WAITS_AT_SHOP = Case(
    When(kind=Order.Fulfilment.TAKEAWAY, then=Value(Order.Handover.COUNTER)), default=Value(Order.Handover.SHELF)
)

# Why a worker gave an order back without an attempt charged (`release`'s reasons).
STOPPING = "stopping"  # a graceful stop: never started
INTERRUPTED = "interrupted"  # the database went away while it was being made
UNANSWERED = "unanswered"  # claimed by a request whose answer was lost
# A stopping kitchen passed a ticket on: its shop's next kitchen process goes on from its stage.
HANDED_OVER = "handed-over"


@dataclass(frozen=True)
class Claim:
    """An order handed to one worker, with the token that fences its later writes."""

    order: Order
    token: uuid.UUID


def lease_duration() -> timedelta:
    return timedelta(seconds=settings.PIZZAQUEUE_HEARTBEAT_TIMEOUT)


def retry_delay(attempt: int) -> timedelta:
    base = settings.PIZZAQUEUE_RETRY_BACKOFF
    return timedelta(seconds=min(base * 2 ** max(attempt - 1, 0), settings.PIZZAQUEUE_RETRY_BACKOFF_MAX))


# --- Claiming -------------------------------------------------------------------


def claim(worker_id: int, limit: int, now: datetime | None = None) -> list[Claim]:
    """Hand up to `limit` orders to a worker, highest effective priority first.

    One transaction with the lock held briefly: on PostgreSQL one statement
    locks the rows with FOR UPDATE SKIP LOCKED, so concurrent claimers pass
    over each other's rows instead of waiting (`claim_in_one_statement`); on
    SQLite the IMMEDIATE transaction holds the database's single write lock
    (`claim_in_transaction`). Both apply the `claimable` rule of `queries.sql`.
    """
    if connection.vendor == "postgresql":
        return claim_in_one_statement(worker_id, limit, now)
    return claim_in_transaction(worker_id, limit, now)


def claimable_ids(worker_id: int, now: datetime, limit: int) -> list[uuid.UUID]:
    """What the worker would claim next at `now`, best first (the `claimable` statement)."""
    steal_after = settings.PIZZAQUEUE_STEAL_AFTER
    adapt = connection.ops.adapt_datetimefield_value
    parameters = {
        "now": adapt(now),
        "worker": worker_id,
        "limit": limit,
        "avoid_before": adapt(now - lease_duration()),
        "steal_before": adapt(now - timedelta(seconds=steal_after)) if steal_after > 0 else None,
    }
    with connection.cursor() as cursor:
        cursor.execute(sql.queries["claimable"], parameters)
        return [uuid.UUID(str(row[0])) for row in cursor.fetchall()]


def claim_in_transaction(worker_id: int, limit: int, now: datetime | None = None) -> list[Claim]:
    """The claim on any engine: the `claimable` ids, then a conditional UPDATE and
    the events through the ORM, in one transaction."""
    token = uuid.uuid4()
    # A read outside any transaction (SQLite's WAL readers take no lock) first:
    if not claimable_ids(worker_id, now or clock.now(), 1):
        # An idle poll must not take SQLite's one write lock: a worker paused
        # while holding it (SIGSTOP, a long GC pause) would stall every writer.
        return []
    with transaction.atomic():
        # Read the clock once the transaction holds the lock: on SQLite BEGIN
        # IMMEDIATE may wait up to the busy timeout, and a clock read before it
        # would stamp claimed_at too early and shorten the lease by the wait.
        now = now or clock.now()
        ids = claimable_ids(worker_id, now, limit)
        if not ids:
            return []
        updated = Order.objects.filter(id__in=ids, status=Status.QUEUED).update(
            status=Status.PREPARING,
            worker_id=worker_id,
            lease_token=token,
            lease_expires_at=now + lease_duration(),
            attempts=F("attempts") + 1,
            claimed_at=now,
            avoid_worker=None,
        )
        if updated != len(ids):
            # Impossible under SQLite's write lock; refuse rather than hand out a half claim.
            raise RuntimeError(f"claim raced: {updated} of {len(ids)} rows updated")
        by_id = Order.objects.in_bulk(ids)
        orders = [by_id[i] for i in ids]
        record(event(o.id, Event.CLAIMED, now, worker_id=worker_id, stage=o.stage, attempt=o.attempts) for o in orders)
    logger.debug("claimed count=%d worker=%s lease=%s", len(orders), worker_id, token)
    return [Claim(o, token) for o in orders]


def claim_in_one_statement(worker_id: int, limit: int, now: datetime | None = None) -> list[Claim]:
    """The claim on PostgreSQL (the `claim` statement): pick, lease and record in one
    statement, and outside a transaction its own transaction; at the server's time
    unless `now` is given."""
    token = uuid.uuid4()
    steal_after = settings.PIZZAQUEUE_STEAL_AFTER
    parameters: dict[str, Any] = {
        "now": now,
        "worker": worker_id,
        "limit": limit,
        "token": token,
        "lease": lease_duration(),
        "steal_after": timedelta(seconds=steal_after) if steal_after > 0 else None,
    }
    with sql.prepared_cursor() as cursor:
        cursor.execute(sql.queries["claim"], parameters)
        claimed = sql.rows(Order, cursor)
    claimed.sort(key=lambda o: o.claim_key)
    logger.debug("claimed count=%d worker=%s lease=%s", len(claimed), worker_id, token)
    return [Claim(o, token) for o in claimed]


# --- The worker's fenced writes ---------------------------------------------------


def record_lease_lost(order_ids: Iterable[uuid.UUID], worker_id: int | None, now: datetime, action: str) -> None:
    """Inside the caller's transaction: a worker that no longer holds these orders
    tried to `action` them (`stage`, `continue`, `complete`, `fail`, `release`); ignored."""
    existing = list(Order.objects.filter(id__in=list(order_ids)).values_list("id", flat=True))
    record(event(oid, Event.LEASE_LOST, now, worker_id=worker_id, action=action) for oid in existing)
    if existing:
        logger.warning("lease lost orders=%s worker=%s action=%s", existing, worker_id, action)


def report_stage(
    order_id: uuid.UUID, token: uuid.UUID, stage: str, worker_id: int | None = None, now: datetime | None = None
) -> bool:
    """Record the stage the handler reached; False when the lease is no longer this worker's."""
    stage = storable.stage(stage)
    now = now or clock.now()
    with transaction.atomic():
        if Order.objects.leased(order_id, token).update(stage=stage, stage_started_at=now) != 1:
            record_lease_lost([order_id], worker_id, now, "stage")
            return False
        record([event(order_id, Event.STAGE, now, worker_id=worker_id, stage=stage)])
    return True


def check_lease(
    order_id: uuid.UUID, token: uuid.UUID, worker_id: int | None, now: datetime | None = None
) -> str | None:
    """The order's stage while `token` still holds it; None once it does not (cancelled,
    taken back, moved), with a `lease-lost` event saying the worker stopped there.

    A handler waiting (for people's taps, or between simulated stages)
    between stages) calls this every few tenths of a second, so a revoked lease
    stops it within that, not at a stage that may be minutes away. The common
    case is one read by primary key and no write.
    """
    stage = Order.objects.leased(order_id, token).values_list("stage", flat=True).first()
    if stage is None:
        with transaction.atomic():
            record_lease_lost([order_id], worker_id, now or clock.now(), "continue")
    return stage


def advance_stage(
    order_id: uuid.UUID,
    token: uuid.UUID,
    from_stage: str,
    to_stage: str,
    now: datetime | None = None,
    actor_id: int | None = None,
    by: str = "staff",
) -> bool:
    """A person moves an order from `from_stage` to `to_stage` for the worker that
    holds it (a staffed kitchen's display in the shop, SPEC §7a); False when nothing was written.

    Fenced twice: by the lease token the display was rendered with, so a tap
    from a display whose order moved to another worker (or was cancelled)
    changes nothing; and by the stage it showed, so a double tap, or two
    tablets tapping at once, moves the order one step, not two. The worker
    holding the lease sees the new stage on its next look (`check_lease`) and,
    at the last one, returns so its loop completes it. `actor_id` is the person,
    `by` who tapped as the timeline tells it ("staff", or a stand-in).
    """
    now = now or clock.now()
    with transaction.atomic():
        worker_id = (
            Order.objects.select_for_update()
            .leased(order_id, token)
            .filter(stage=from_stage)
            .values_list("worker_id", flat=True)
            .first()
        )
        if worker_id is None:
            return False
        Order.objects.leased(order_id, token).update(stage=to_stage, stage_started_at=now)
        record([event(order_id, Event.STAGE, now, worker_id=worker_id, stage=to_stage, actor_id=actor_id, by=by)])
    return True


def complete_many(
    held: Sequence[tuple[uuid.UUID, uuid.UUID]], worker_id: int | None = None, now: datetime | None = None
) -> set[uuid.UUID]:
    """Mark orders done, each only if its lease token still matches.

    Returns the ids completed; the others get a `lease-lost` event and are
    dropped, so an order reaches `done` exactly once. One transaction for the
    whole batch: batching is what lets a worker go past one commit per order.
    On PostgreSQL one statement (`complete_in_one_statement`), elsewhere the
    ORM (`complete_in_transaction`).
    """
    if connection.vendor == "postgresql":
        return complete_in_one_statement(held, worker_id, now)
    return complete_in_transaction(held, worker_id, now)


def complete_in_transaction(
    held: Sequence[tuple[uuid.UUID, uuid.UUID]], worker_id: int | None = None, now: datetime | None = None
) -> set[uuid.UUID]:
    """`complete_many` on any engine: locked rows, a fenced UPDATE and the events, one transaction."""
    now = now or clock.now()
    by_token: dict[uuid.UUID, list[uuid.UUID]] = defaultdict(list)
    for order_id, token in held:
        by_token[token].append(order_id)
    done: set[uuid.UUID] = set()
    with transaction.atomic():
        for token, ids in by_token.items():
            # Lock the rows that are still ours, so the UPDATE below changes exactly these.
            mine = set(Order.objects.select_for_update().leased(ids, token).values_list("id", flat=True))
            if mine:
                Order.objects.filter(id__in=mine).update(
                    status=Status.DONE, finished_at=now, handover=WAITS_AT_SHOP, **LEASE_CLEARED
                )
                done |= mine
            lost = not_done_by([i for i in ids if i not in mine], worker_id)
            if lost:
                record_lease_lost(lost, worker_id, now, "complete")
        record(event(oid, Event.DONE, now, worker_id=worker_id) for oid in done)
    return done


def complete_in_one_statement(
    held: Sequence[tuple[uuid.UUID, uuid.UUID]], worker_id: int | None = None, now: datetime | None = None
) -> set[uuid.UUID]:
    """`complete_many` on PostgreSQL (the `complete` statement): the fenced UPDATE and
    the `done` events in one statement, at the server's time unless `now` is given."""
    if not held:
        return set()
    parameters = {
        "ids": [order_id for order_id, _ in held],
        "tokens": [token for _, token in held],
        "now": now,
        "worker": worker_id,
    }
    with sql.prepared_cursor() as cursor:
        cursor.execute(sql.queries["complete"], parameters)
        done = {row[0] for row in cursor.fetchall()}
    lost = not_done_by([order_id for order_id, _ in held if order_id not in done], worker_id)
    if lost:
        with transaction.atomic():
            record_lease_lost(lost, worker_id, now or clock.now(), "complete")
    return done


def not_done_by(order_ids: Sequence[uuid.UUID], worker_id: int | None) -> list[uuid.UUID]:
    """The orders among `order_ids` that `worker_id` did not complete: those whose lease it really lost.

    A completion can commit and its answer be lost on the way back (the
    connection drops); the worker then writes the same completion again and
    finds the order no longer under its lease. The order's `done` event says
    who completed it: if it was this worker, the retry is an echo, not a lost
    lease, and no `lease-lost` is recorded for it.
    """
    if not order_ids or worker_id is None:
        return list(order_ids)
    done = set(
        OrderEvent.objects.filter(
            order_id__in=list(order_ids), kind=OrderEvent.Kind.DONE, worker_id=worker_id
        ).values_list("order_id", flat=True)
    )
    return [order_id for order_id in order_ids if order_id not in done]


def complete(order_id: uuid.UUID, token: uuid.UUID, worker_id: int | None = None, now: datetime | None = None) -> bool:
    return order_id in complete_many([(order_id, token)], worker_id, now)


def to_failed(ids: Sequence[uuid.UUID], error: str, now: datetime) -> None:
    """Inside the caller's transaction: dead-letter these orders with their last error."""
    Order.objects.filter(id__in=ids).update(status=Status.FAILED, last_error=error, finished_at=now, **LEASE_CLEARED)


def fail(
    order_id: uuid.UUID, token: uuid.UUID, error: str, worker_id: int | None = None, now: datetime | None = None
) -> str:
    """End a failed attempt: retry after a backoff, or dead-letter at max attempts.

    Returns the event kind written: `retried`, `failed` or `lease-lost`.
    """
    now = now or clock.now()
    error = storable.text(error, storable.ERROR_LENGTH)
    with transaction.atomic():
        order = Order.objects.select_for_update().leased(order_id, token).only("id", "attempts", "max_attempts").first()
        if order is None:
            record_lease_lost([order_id], worker_id, now, "fail")
            return Event.LEASE_LOST
        if order.attempts >= order.max_attempts:
            to_failed([order_id], error, now)
            record([event(order_id, Event.FAILED, now, worker_id=worker_id, message=error, attempts=order.attempts)])
            return Event.FAILED
        delay = retry_delay(order.attempts)
        Order.objects.filter(id=order_id).update(**BACK_IN_QUEUE, eligible_at=now + delay, last_error=error)
        record(
            [
                event(
                    order_id,
                    Event.RETRIED,
                    now,
                    worker_id=worker_id,
                    message=error,
                    reason="failed",
                    attempts=order.attempts,
                    retry_in=delay.total_seconds(),
                )
            ]
        )
    return Event.RETRIED


def release(
    held: Sequence[tuple[uuid.UUID, uuid.UUID]],
    worker_id: int | None = None,
    now: datetime | None = None,
    reason: str = STOPPING,
) -> int:
    """Give back claimed orders without charging an attempt: never started (a
    graceful stop), interrupted by the database rather than by the handler, or
    handed over by a kitchen stopping mid-ticket (`reason` says which). Fenced
    like every worker write. A handed-over takeaway order keeps its stage, which
    the claim keeps too: the pizza is in its shop's oven, and the shop's next
    process goes on from there. A delivery order starts afresh wherever its area
    is made now, which may be another shop.
    """
    now = now or clock.now()
    events, lost = [], []
    kept = {}
    if reason == HANDED_OVER:
        at_its_shop = ~Q(pinned_shop="")
        kept = {
            "stage": Case(When(at_its_shop, then=F("stage")), default=Value("")),
            "stage_started_at": Case(When(at_its_shop, then=F("stage_started_at")), default=None),
        }
    with transaction.atomic():
        for order_id, token in held:
            updated = Order.objects.leased(order_id, token).update(
                **{**BACK_IN_QUEUE, **kept}, attempts=F("attempts") - 1, eligible_at=now
            )
            if updated:
                events.append(event(order_id, Event.RELEASED, now, worker_id=worker_id, reason=reason))
            else:
                lost.append(order_id)
        record(events, work=True)
        if lost:
            record_lease_lost(lost, worker_id, now, "release")
    return len(events)


def hand_back_unanswered(
    worker_id: int, known: Iterable[uuid.UUID], now: datetime | None = None, reason: str = UNANSWERED
) -> list[uuid.UUID]:
    """Give back what the worker holds under a lease token it does not know (or, with
    `reason` INTERRUPTED, no longer has in hand after an outage: `workers.loop`).

    A claim can commit and its answer be lost (the connection drops on the way
    back): the orders are then the worker's, but it will never make them, and
    its heartbeats renew only the tokens it knows, so without this they would
    wait for their leases to run out. Called by the worker's own loop, the only
    claimer of its id, after a database error; the attempt is refunded.
    """
    with transaction.atomic():
        held = Order.objects.select_for_update().held_by(worker_id).exclude(lease_token__in=list(known))
        # A held order always has its token (`order_lease_iff_preparing`).
        unknown = [(oid, token) for oid, token in held.values_list("id", "lease_token") if token is not None]
        release(unknown, worker_id, now, reason=reason)
    if unknown:
        logger.warning("handed back unanswered claims orders=%s worker=%s", [oid for oid, _ in unknown], worker_id)
    return [oid for oid, _ in unknown]
