"""The queue operations: every change to an order's state happens here.

Each operation is one transaction that writes the change *and* its
`OrderEvent` together, so the timeline (and the outbox that live updates are
read from) can never disagree with the order. Views, the API, admin actions,
commands and the worker loop call these functions; nothing else writes an
order's status.

Contested writes are conditional UPDATEs whose row count is checked: a worker's
writes about an order (stage, done, fail, release) are fenced by the lease
token it got when it claimed the order, so a worker that lost its lease can
only record `lease-lost`, never overwrite the new holder's work.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import (
    DEFAULT_DB_ALIAS,
    IntegrityError,
    connection,
    connections,
    transaction,
)
from django.db.models import F
from django.utils import timezone

from orders import rows
from orders.intake import OrderRequest
from orders.models import Order, OrderEvent
from workers import ring
from workers.buckets import lock_ring, rebalance
from workers.models import Bucket, BucketMove, Worker

logger = logging.getLogger(__name__)

# PostgreSQL channel a worker LISTENs on to wake up as soon as work appears.
ORDERS_CHANNEL = "pizzaqueue_orders"
# Channel the web process's live-update relay LISTENs on for new events.
EVENTS_CHANNEL = "pizzaqueue_events"
SHOP_UNAVAILABLE = "shop unavailable"
PLACED_MESSAGE = "Order confirmed."
DONE_MESSAGE = "Ready!"

Status = Order.Status
Event = OrderEvent.Kind

# For the single-statement operations on PostgreSQL (see `claim`, `complete_many`, `place`).
_ORDER_FIELDS = Order._meta.concrete_fields
_ORDER_COLUMNS = rows.columns(Order)  # in field order, as `rows.load` reads them back
_EVENT_TABLE = OrderEvent._meta.db_table
_EVENT_COLUMNS = "order_id, kind, created_at, worker_id, stage, message, data"


class OrderNotFoundError(Exception):
    pass


class InvalidTransitionError(Exception):
    """The order is not in a state that allows this (e.g. cancelling a baked pizza)."""


class IdempotencyConflictError(Exception):
    """The idempotency key was already used for a different request."""


class WorkerLostError(Exception):
    """This worker incarnation was declared dead (or stopped) by someone else."""


@dataclass(frozen=True)
class Claim:
    """An order handed to one worker, with the token that fences its later writes."""

    order: Order
    token: uuid.UUID


@dataclass
class Recovery:
    """What one dead-worker or expired-lease sweep did, for logs and tests."""

    requeued: list[uuid.UUID] = field(default_factory=list)
    failed: list[uuid.UUID] = field(default_factory=list)
    cancelled: list[uuid.UUID] = field(default_factory=list)
    moved_buckets: int = 0


def lease_duration() -> timedelta:
    return timedelta(seconds=settings.PIZZAQUEUE_HEARTBEAT_TIMEOUT)


def rank_for(base: datetime, priority: int) -> int:
    """The claim-order key: smaller is claimed first.

    An order's effective priority is `priority + aging * minutes waited`.
    Comparing two orders' effective priorities at any moment gives the same
    answer as comparing `enqueued_at - priority / aging` (the clock cancels
    out), so this constant key, served by a plain index, orders the queue by
    priority, then age, with aging: an order that waited long enough
    overtakes newer urgent ones, and none is starved.
    """
    micros = int(base.timestamp() * 1_000_000)
    aging = settings.PIZZAQUEUE_PRIORITY_AGING
    if aging <= 0:
        return micros - priority * 10**15  # strict priority, FIFO within it
    return micros - round(priority * 60_000_000 / aging)


def retry_delay(attempt: int) -> timedelta:
    base = settings.PIZZAQUEUE_RETRY_BACKOFF
    return timedelta(seconds=min(base * 2 ** max(attempt - 1, 0), settings.PIZZAQUEUE_RETRY_BACKOFF_MAX))


def _event(
    order_id: uuid.UUID,
    kind: str,
    now: datetime,
    *,
    worker_id: int | None = None,
    stage: str = "",
    message: str = "",
    **data: object,
) -> OrderEvent:
    return OrderEvent(
        order_id=order_id, kind=kind, created_at=now, worker_id=worker_id, stage=stage, message=message[:500], data=data
    )


def _notify(*channels: str) -> None:
    """Wake listeners once this transaction commits (PostgreSQL only; NOTIFY is transactional)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT " + ", ".join(f"pg_notify('{c}', '')" for c in channels))


def _notify_work() -> None:
    _notify(ORDERS_CHANNEL)


def _record(events: Iterable[OrderEvent], *, work: bool = False) -> None:
    """Write events inside the caller's transaction and wake the live-update relays
    (and, with `work`, the workers: the change made an order claimable)."""
    events = list(events)
    if not events:
        return
    OrderEvent.objects.bulk_create(events)
    _notify(EVENTS_CHANNEL, *([ORDERS_CHANNEL] if work else []))


def _get(order_id: uuid.UUID | str) -> Order:
    try:
        return Order.objects.get(pk=order_id)
    except (Order.DoesNotExist, ValidationError, ValueError):
        raise OrderNotFoundError(str(order_id)) from None


# --- Intake -------------------------------------------------------------------


def _new_order(
    request: OrderRequest, now: datetime, shop_id: int | None, idempotency_key: str | None = None, fingerprint: str = ""
) -> Order:
    eligible = max(request.not_before or now, now)
    order_id = uuid.uuid4()
    return Order(
        id=order_id,
        kind=request.kind,
        items=request.items,
        note=request.note,
        customer_name=request.customer_name,
        area=request.area,
        bucket=ring.bucket_for(request.area or str(order_id), settings.PIZZAQUEUE_BUCKETS),
        pinned_worker_id=shop_id,
        priority=request.priority,
        rank=rank_for(eligible, request.priority),
        eligible_at=eligible,
        max_attempts=request.max_attempts or settings.PIZZAQUEUE_MAX_ATTEMPTS,
        estimated_seconds=request.estimated_seconds,
        idempotency_key=idempotency_key or None,
        request_hash=fingerprint if idempotency_key else "",
        created_at=now,
    )


def _open_shop(name: str, *, lock: bool) -> Worker:
    shops = Worker.objects.live().filter(name=name)
    if lock:
        # Holding the shop's row until commit means a concurrent declare_dead
        # either sees this order (and cancels it) or runs before it, in which
        # case the shop is no longer live here and the order is refused.
        shops = shops.select_for_update(no_key=True)
    shop = shops.first()
    if shop is None:
        raise ValidationError({"shop": [f"No open shop named {name!r}."]})
    return shop


def place(request: OrderRequest, idempotency_key: str | None = None, now: datetime | None = None) -> tuple[Order, bool]:
    """Persist a confirmed order and its `placed` event; returns (order, created).

    With an idempotency key, a retry of the same request returns the first
    order (created=False) and a different request raises IdempotencyConflictError.
    """
    now = now or timezone.now()
    fingerprint = request.fingerprint() if idempotency_key else ""  # only a retry is compared
    if idempotency_key and request.kind == Order.Kind.TAKEAWAY:
        # Looked up first: the shop may have closed since, and a retry must replay, not fail.
        existing = _holder_of(idempotency_key)
        if existing is not None:
            return _same_request(existing, fingerprint), False
    if request.kind == Order.Kind.DELIVERY and connection.vendor == "postgresql":
        order = _new_order(request, now, None, idempotency_key, fingerprint)
        # Inside a caller's transaction, a savepoint keeps a failed statement from spoiling it.
        with transaction.atomic() if connection.in_atomic_block else contextlib.nullcontext():
            inserted = _place_in_one_statement(order)
        if not inserted:
            # The key is taken (a retry, or a submission that won the race): answer with its order.
            existing = _holder_of(idempotency_key or "")
            if existing is None:
                raise IntegrityError(f"idempotency key {idempotency_key!r} taken by an order that is gone")
            return _same_request(existing, fingerprint), False
    else:
        try:
            with transaction.atomic():
                shop_id = _open_shop(request.shop, lock=True).pk if request.kind == Order.Kind.TAKEAWAY else None
                order = _new_order(request, now, shop_id, idempotency_key, fingerprint)
                order.save(force_insert=True)
                _record([_event(order.id, Event.PLACED, now, message=PLACED_MESSAGE)], work=True)
        except IntegrityError:
            # Two submissions with one key raced; the unique constraint let one in.
            existing = _holder_of(idempotency_key) if idempotency_key else None
            if existing is None:
                raise
            return _same_request(existing, fingerprint), False
    logger.info("placed order=%s bucket=%s priority=%s", order.id, order.bucket, order.priority)
    return order, True


def _place_in_one_statement(order: Order) -> bool:
    """Insert an order (no shop to lock) with its `placed` event and wake-ups, in one statement:
    one round trip, and outside a transaction its own transaction.

    False when its idempotency key is taken: the INSERT then does nothing (it
    waits for an uncommitted holder of the key to commit or roll back first),
    so a client's retry costs no error in the server's log.

    Outside a transaction the commit does not wait for the disk: the order
    becomes visible and the kitchens are woken at once, while the flush is
    waited for in the same round trip by a second transaction
    (`_THEN_WAIT_FOR_THE_DISK`). The caller is answered only once the order is
    on disk, so confirmed still means durable; and a kitchen bakes nothing
    that is not durable, because its claim commits synchronously later in the
    same write-ahead log, which is flushed in order. What an idle kitchen's
    pickup saves is one disk flush (about 1 ms here; docs/peers.md).
    """
    flush_later = not connection.in_atomic_block  # inside one, the caller's commit is the durable one
    db = connections[DEFAULT_DB_ALIAS]  # the connection itself: through the proxy each field's lookups cost twice
    values = [f.get_db_prep_save(getattr(order, f.attname), db) for f in _ORDER_FIELDS]
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            WITH placed AS (
                INSERT INTO {Order._meta.db_table} ({_ORDER_COLUMNS}) VALUES ({", ".join(["%s"] * len(values))})
                ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
                RETURNING id
            ),
            recorded AS (
                INSERT INTO {_EVENT_TABLE} ({_EVENT_COLUMNS})
                SELECT id, %s, %s, NULL, '', %s, '{{}}'::jsonb FROM placed
            )
            SELECT pg_notify(%s, ''), pg_notify(%s, ''){_ASYNC_COMMIT if flush_later else ""} FROM placed
            {_THEN_WAIT_FOR_THE_DISK if flush_later else ""}
            """,  # noqa: S608 - names from the models; every value is a parameter
            [*values, Event.PLACED, order.created_at, PLACED_MESSAGE, EVENTS_CHANNEL, ORDERS_CHANNEL],
        )
        if not cursor.fetchall():  # the first statement's rows
            return False
    order._state.adding, order._state.db = False, connection.alias  # as save() leaves it
    return True


# This transaction's commit returns without waiting for its flush (see `_place_in_one_statement`).
_ASYNC_COMMIT = ", set_config('synchronous_commit', 'off', true)"
# Sent with it, in one simple query: commit, then a transaction that returns
# once the log is on disk (and on any synchronous standby). A commit waits for
# the log up to its own record, and the log is flushed in order, so it
# flushes every earlier commit too. To wait at all, the transaction must
# write to the log: a transactional logical message is the smallest such
# write, and changes no table (logical decoding consumers see a `pizzaqueue`
# message).
_THEN_WAIT_FOR_THE_DISK = "; COMMIT; SELECT pg_logical_emit_message(true, 'pizzaqueue', 'flush')"


def _holder_of(idempotency_key: str) -> Order | None:
    return Order.objects.filter(idempotency_key=idempotency_key).first()


def _same_request(existing: Order, fingerprint: str) -> Order:
    if existing.request_hash != fingerprint:
        raise IdempotencyConflictError("This Idempotency-Key was already used for a different order.")
    return existing


def place_many(requests: Sequence[OrderRequest], now: datetime | None = None) -> list[Order]:
    """Bulk intake: many orders and their events in one transaction."""
    now = now or timezone.now()
    with transaction.atomic():
        shops = {
            name: _open_shop(name, lock=True).pk for name in {r.shop for r in requests if r.kind == Order.Kind.TAKEAWAY}
        }
        orders = [_new_order(r, now, shops.get(r.shop) if r.kind == Order.Kind.TAKEAWAY else None) for r in requests]
        Order.objects.bulk_create(orders)
        _record((_event(o.id, Event.PLACED, now, message=PLACED_MESSAGE) for o in orders), work=True)
    return orders


# --- Claiming and the worker's fenced writes ----------------------------------


# The claim query: what a worker may take at `now`, best first; both engines run
# this text. Ownership is read inside the statement, so a worker acting on a
# stale view of the ring claims nothing it lost; a pinned (takeaway) order is
# its shop's alone, whoever owns its bucket. Ordered along `order_claim_idx`.
_CLAIMABLE = f"""
    SELECT id FROM {Order._meta.db_table}
    WHERE status = %(queued)s AND eligible_at <= %(now)s
      AND (pinned_worker_id = %(worker)s
           OR (pinned_worker_id IS NULL
               AND (bucket IN (SELECT number FROM {Bucket._meta.db_table} WHERE owner_id = %(worker)s){{steal}})))
    ORDER BY rank, created_at
    LIMIT %(limit)s
"""  # noqa: S608 - names from the models; every value is a parameter
# With work stealing on, an unpinned order waiting past PIZZAQUEUE_STEAL_AFTER is anyone's.
_STEAL = " OR eligible_at < %(steal_before)s"


def _claimable(worker_id: int, now: datetime, limit: int) -> tuple[str, dict[str, object]]:
    steal_after = settings.PIZZAQUEUE_STEAL_AFTER
    adapt = connection.ops.adapt_datetimefield_value
    params: dict[str, object] = {"queued": Status.QUEUED, "now": adapt(now), "worker": worker_id, "limit": limit}
    if steal_after > 0:
        params["steal_before"] = adapt(now - timedelta(seconds=steal_after))
    return _CLAIMABLE.format(steal=_STEAL if steal_after > 0 else ""), params


def claim(worker_id: int, limit: int, now: datetime | None = None) -> list[Claim]:
    """Hand up to `limit` orders to a worker, highest effective priority first.

    One transaction with the lock held briefly: on PostgreSQL one statement
    locks the rows with FOR UPDATE SKIP LOCKED, so concurrent claimers pass
    over each other's rows instead of waiting; on SQLite the IMMEDIATE
    transaction holds the database's single write lock.
    """
    token = uuid.uuid4()
    if connection.vendor == "postgresql":
        return _claim_in_one_statement(worker_id, limit, token, now or timezone.now())
    # A read outside any transaction (WAL readers take no lock) first, on SQLite:
    if not _claimable_ids(worker_id, now or timezone.now(), 1):
        # An idle poll must not take SQLite's one write lock: a worker paused
        # while holding it (SIGSTOP, a long GC pause) would stall every writer.
        return []
    with transaction.atomic():
        # Read the clock once the transaction holds the lock: on SQLite BEGIN
        # IMMEDIATE may wait up to the busy timeout, and a clock read before it
        # would stamp claimed_at too early and shorten the lease by the wait.
        now = now or timezone.now()
        expires = now + lease_duration()
        ids = _claimable_ids(worker_id, now, limit)
        if not ids:
            return []
        updated = Order.objects.filter(id__in=ids, status=Status.QUEUED).update(
            status=Status.PREPARING,
            worker_id=worker_id,
            lease_token=token,
            lease_expires_at=expires,
            attempts=F("attempts") + 1,
            claimed_at=now,
            stage="",
        )
        if updated != len(ids):
            # Impossible under the write lock; refuse rather than hand out a half claim.
            raise RuntimeError(f"claim raced: {updated} of {len(ids)} rows updated")
        by_id = Order.objects.in_bulk(ids)
        orders = [by_id[i] for i in ids]
        _record(_event(o.id, Event.CLAIMED, now, worker_id=worker_id, attempt=o.attempts) for o in orders)
    logger.debug("claimed count=%d worker=%s lease=%s", len(orders), worker_id, token)
    return [Claim(o, token) for o in orders]


def _claimable_ids(worker_id: int, now: datetime, limit: int) -> list[uuid.UUID]:
    sql, params = _claimable(worker_id, now, limit)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [uuid.UUID(str(row[0])) for row in cursor.fetchall()]


def _claim_in_one_statement(worker_id: int, limit: int, token: uuid.UUID, now: datetime) -> list[Claim]:
    """The claim on PostgreSQL: pick, lease and record in one statement.

    One statement is one round trip and, outside a transaction, its own
    transaction: FOR UPDATE SKIP LOCKED picks rows no other claimer holds, the
    UPDATE leases exactly those, and the `claimed` events are written from the
    UPDATE's own RETURNING rows by a data-modifying CTE, so no row crosses the
    wire twice and the events commit with the lease or not at all.
    """
    pick, params = _claimable(worker_id, now, limit)
    params |= {
        "preparing": Status.PREPARING,
        "token": token,
        "expires": now + lease_duration(),
        "claimed": Event.CLAIMED,
        "channel": EVENTS_CHANNEL,
    }
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            WITH picked AS ({pick} FOR UPDATE SKIP LOCKED),
            claimed AS (
                UPDATE {Order._meta.db_table} SET status = %(preparing)s, worker_id = %(worker)s,
                    lease_token = %(token)s, lease_expires_at = %(expires)s, attempts = attempts + 1,
                    claimed_at = %(now)s, stage = ''
                WHERE id IN (SELECT id FROM picked)
                RETURNING {_ORDER_COLUMNS}
            ),
            recorded AS (
                INSERT INTO {_EVENT_TABLE} ({_EVENT_COLUMNS})
                SELECT id, %(claimed)s, %(now)s, %(worker)s, '', '', jsonb_build_object('attempt', attempts)
                FROM claimed ORDER BY rank, created_at
            )
            SELECT {_ORDER_COLUMNS}, pg_notify(%(channel)s, '') FROM claimed
            """,  # noqa: S608 - names from the models; every value is a parameter
            params,
        )
        claimed = [rows.load(Order, row) for row in cursor.fetchall()]
    claimed.sort(key=lambda o: (o.rank, o.created_at))
    logger.debug("claimed count=%d worker=%s lease=%s", len(claimed), worker_id, token)
    return [Claim(o, token) for o in claimed]


def _record_lease_lost(order_ids: Iterable[uuid.UUID], worker_id: int | None, now: datetime, action: str) -> None:
    existing = list(Order.objects.filter(id__in=list(order_ids)).values_list("id", flat=True))
    _record(
        _event(
            oid,
            Event.LEASE_LOST,
            now,
            worker_id=worker_id,
            message=f"A kitchen that lost this order tried to {action} it; ignored.",
            action=action,
        )
        for oid in existing
    )
    if existing:
        logger.warning("lease lost orders=%s worker=%s action=%s", existing, worker_id, action)


def report_stage(
    order_id: uuid.UUID, token: uuid.UUID, stage: str, worker_id: int | None = None, now: datetime | None = None
) -> bool:
    """Record the kitchen stage; False when the lease is no longer this worker's."""
    now = now or timezone.now()
    with transaction.atomic():
        updated = Order.objects.filter(id=order_id, status=Status.PREPARING, lease_token=token).update(stage=stage)
        if updated != 1:
            _record_lease_lost([order_id], worker_id, now, f"report stage {stage} of")
            return False
        _record([_event(order_id, Event.STAGE, now, worker_id=worker_id, stage=stage)])
    return True


def complete_many(
    held: Sequence[tuple[uuid.UUID, uuid.UUID]], worker_id: int | None = None, now: datetime | None = None
) -> set[uuid.UUID]:
    """Mark orders done, each only if its lease token still matches.

    Returns the ids completed; the others get a `lease-lost` event and are
    dropped, so an order reaches `done` exactly once. One transaction for the
    whole batch: batching is what lets a worker go past one commit per order.
    """
    now = now or timezone.now()
    if connection.vendor == "postgresql":
        return _complete_in_one_statement(held, worker_id, now)
    by_token: dict[uuid.UUID, list[uuid.UUID]] = defaultdict(list)
    for order_id, token in held:
        by_token[token].append(order_id)
    done: set[uuid.UUID] = set()
    with transaction.atomic():
        for token, ids in by_token.items():
            # Lock the rows that are still ours, so the UPDATE below changes exactly these.
            mine = set(
                Order.objects.select_for_update()
                .filter(id__in=ids, status=Status.PREPARING, lease_token=token)
                .values_list("id", flat=True)
            )
            if mine:
                Order.objects.filter(id__in=mine).update(
                    status=Status.DONE, stage="", lease_token=None, lease_expires_at=None, finished_at=now
                )
                done |= mine
            lost = [i for i in ids if i not in mine]
            if lost:
                _record_lease_lost(lost, worker_id, now, "complete")
        _record(_event(oid, Event.DONE, now, worker_id=worker_id, message=DONE_MESSAGE) for oid in done)
    return done


def _complete_in_one_statement(
    held: Sequence[tuple[uuid.UUID, uuid.UUID]], worker_id: int | None, now: datetime
) -> set[uuid.UUID]:
    """complete_many on PostgreSQL: the fenced UPDATE and the `done` events in one statement.

    The UPDATE matches each order with its own token, and under READ
    COMMITTED a row changed meanwhile (re-queued by the monitor) is
    re-checked against the new version, so a lost lease is never completed.
    """
    if not held:
        return set()
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            WITH held (id, token) AS (SELECT * FROM unnest(%s::uuid[], %s::uuid[])),
            done AS (
                UPDATE {Order._meta.db_table} o SET status = %s, stage = '', lease_token = NULL,
                    lease_expires_at = NULL, finished_at = %s
                FROM held WHERE o.id = held.id AND o.lease_token = held.token AND o.status = %s
                RETURNING o.id
            ),
            recorded AS (
                INSERT INTO {_EVENT_TABLE} ({_EVENT_COLUMNS})
                SELECT id, %s, %s, %s, '', %s, '{{}}'::jsonb FROM done
            )
            SELECT id, pg_notify(%s, '') FROM done
            """,  # noqa: S608 - names from the models; every value is a parameter
            [
                [order_id for order_id, _ in held],
                [token for _, token in held],
                Status.DONE,
                now,
                Status.PREPARING,
                Event.DONE,
                now,
                worker_id,
                DONE_MESSAGE,
                EVENTS_CHANNEL,
            ],
        )
        done = {row[0] for row in cursor.fetchall()}
    lost = [order_id for order_id, _ in held if order_id not in done]
    if lost:
        with transaction.atomic():
            _record_lease_lost(lost, worker_id, now, "complete")
    return done


def complete(order_id: uuid.UUID, token: uuid.UUID, worker_id: int | None = None, now: datetime | None = None) -> bool:
    return order_id in complete_many([(order_id, token)], worker_id, now)


def fail(
    order_id: uuid.UUID, token: uuid.UUID, error: str, worker_id: int | None = None, now: datetime | None = None
) -> str:
    """End a failed attempt: retry after a backoff, or dead-letter at max attempts.

    Returns the event kind written: `retried`, `failed` or `lease-lost`.
    """
    now = now or timezone.now()
    error = error[:2000]
    with transaction.atomic():
        order = (
            Order.objects.select_for_update()
            .filter(id=order_id, status=Status.PREPARING, lease_token=token)
            .only("id", "attempts", "max_attempts")
            .first()
        )
        if order is None:
            _record_lease_lost([order_id], worker_id, now, "fail")
            return Event.LEASE_LOST
        if order.attempts >= order.max_attempts:
            _to_failed([order_id], error, now)
            _record([_event(order_id, Event.FAILED, now, worker_id=worker_id, message=error, attempts=order.attempts)])
            return Event.FAILED
        delay = retry_delay(order.attempts)
        Order.objects.filter(id=order_id).update(
            status=Status.QUEUED,
            stage="",
            lease_token=None,
            lease_expires_at=None,
            worker=None,
            eligible_at=now + delay,
            last_error=error,
        )
        _record(
            [
                _event(
                    order_id,
                    Event.RETRIED,
                    now,
                    worker_id=worker_id,
                    message=error,
                    attempts=order.attempts,
                    retry_in=delay.total_seconds(),
                )
            ]
        )
    return Event.RETRIED


def _to_failed(ids: Sequence[uuid.UUID], error: str, now: datetime) -> None:
    Order.objects.filter(id__in=ids).update(
        status=Status.FAILED, stage="", lease_token=None, lease_expires_at=None, last_error=error, finished_at=now
    )


def release(
    held: Sequence[tuple[uuid.UUID, uuid.UUID]], worker_id: int | None = None, now: datetime | None = None
) -> int:
    """Give back claimed orders that were never started (a graceful stop).

    The attempt is refunded: nothing was tried. Fenced like every worker write.
    """
    now = now or timezone.now()
    events, lost = [], []
    with transaction.atomic():
        for order_id, token in held:
            updated = Order.objects.filter(id=order_id, status=Status.PREPARING, lease_token=token).update(
                status=Status.QUEUED,
                stage="",
                lease_token=None,
                lease_expires_at=None,
                worker=None,
                attempts=F("attempts") - 1,
                eligible_at=now,
            )
            if updated:
                events.append(
                    _event(
                        order_id,
                        Event.RELEASED,
                        now,
                        worker_id=worker_id,
                        message="Handed back unstarted by a closing kitchen.",
                    )
                )
            else:
                lost.append(order_id)
        _record(events, work=True)
        if lost:
            _record_lease_lost(lost, worker_id, now, "release")
    return len(events)


# --- Customers and operators --------------------------------------------------


def cancel(order_id: uuid.UUID | str, reason: str = "cancelled by customer", now: datetime | None = None) -> Order:
    """Cancel a queued order. A pizza already in the kitchen cannot be cancelled."""
    now = now or timezone.now()
    with transaction.atomic():
        order = _get(order_id)
        updated = Order.objects.filter(id=order.id, status=Status.QUEUED).update(
            status=Status.CANCELLED, cancel_reason=reason[:200], finished_at=now
        )
        if updated != 1:
            order.refresh_from_db(fields=["status"])
            raise InvalidTransitionError(f"Order is {order.status}; only a queued order can be cancelled.")
        _record([_event(order.id, Event.CANCELLED, now, message=reason)])
    order.refresh_from_db()
    return order


def requeue(order_id: uuid.UUID | str, reason: str = "requeued by an operator", now: datetime | None = None) -> Order:
    """Operator's second chance: a failed or cancelled order goes back in the queue
    with fresh attempts; a preparing one is taken from its worker (its lease
    token is revoked, so that worker can no longer complete it)."""
    now = now or timezone.now()
    with transaction.atomic():
        order = _get(order_id)
        if order.pinned_worker_id is not None and not Worker.objects.live().filter(pk=order.pinned_worker_id).exists():
            # Nobody else may bake a takeaway order: back in the queue it would wait for ever.
            raise InvalidTransitionError("Its shop is closed; a takeaway order can only be baked by its own shop.")
        if order.status in (Status.FAILED, Status.CANCELLED):
            updated = Order.objects.filter(id=order.id, status=order.status).update(
                status=Status.QUEUED,
                attempts=0,
                eligible_at=now,
                rank=rank_for(now, order.priority),
                finished_at=None,
                cancel_reason="",
            )
        elif order.status == Status.PREPARING:
            updated = Order.objects.filter(id=order.id, lease_token=order.lease_token).update(
                status=Status.QUEUED,
                stage="",
                lease_token=None,
                lease_expires_at=None,
                worker=None,
                eligible_at=now,
                attempts=F("attempts") - 1,
            )
        else:
            raise InvalidTransitionError(
                f"Order is {order.status}; only failed, cancelled or preparing orders can be requeued."
            )
        if updated != 1:
            raise InvalidTransitionError("Order changed meanwhile; try again.")
        _record([_event(order.id, Event.RETRIED, now, message=reason, by="operator")], work=True)
    order.refresh_from_db()
    return order


def rush(order_id: uuid.UUID | str, priority: int = Order.MAX_PRIORITY, now: datetime | None = None) -> Order:
    """Raise a queued order's priority (the kitchen display's "rush")."""
    now = now or timezone.now()
    if not Order.MIN_PRIORITY <= priority <= Order.MAX_PRIORITY:
        raise ValidationError({"priority": [f"Must be between {Order.MIN_PRIORITY} and {Order.MAX_PRIORITY}."]})
    with transaction.atomic():
        order = _get(order_id)
        if order.status != Status.QUEUED:
            raise InvalidTransitionError(f"Order is {order.status}; only a queued order can be rushed.")
        if priority <= order.priority:
            raise InvalidTransitionError(f"Order already has priority {order.priority}; a rush only raises it.")
        # Keep the order's place in time: the rank is rebuilt from when it became eligible.
        updated = Order.objects.filter(id=order.id, status=Status.QUEUED, priority=order.priority).update(
            priority=priority, rank=rank_for(order.eligible_at, priority)
        )
        if updated != 1:
            raise InvalidTransitionError("Order changed meanwhile; try again.")
        _record([_event(order.id, Event.RUSHED, now, message=f"Priority raised to {priority}.", priority=priority)])
    order.refresh_from_db()
    return order


# --- Workers: membership, heartbeats and recovery -----------------------------


def register_worker(name: str, host: str, pid: int, concurrency: int, now: datetime | None = None) -> Worker:
    """Add a kitchen to the ring; it gets its share of buckets in the same transaction.

    A live worker of the same name whose heartbeat is stale is declared dead
    first (a restart after a crash); a fresh one means the name is taken.
    """
    now = now or timezone.now()
    with transaction.atomic():
        lock_ring()
        previous = Worker.objects.filter(name=name).order_by("-incarnation").first()
        if previous is not None and previous.status in Worker.LIVE_STATUSES:
            stale_since = now - timedelta(seconds=settings.PIZZAQUEUE_HEARTBEAT_TIMEOUT)
            if previous.last_heartbeat >= stale_since:
                raise ValidationError({"name": [f"A live worker named {name!r} is already running."]})
            declare_dead(previous.pk, "replaced by a new incarnation", now)
        worker = Worker.objects.create(
            name=name,
            host=host[:255],
            pid=pid,
            concurrency=concurrency,
            started_at=now,
            last_heartbeat=now,
            incarnation=(previous.incarnation + 1) if previous else 1,
        )
        rebalance(now, BucketMove.Reason.JOIN)
        _notify_work()
    logger.info("registered worker=%s id=%s", worker, worker.pk)
    return worker


def heartbeat(worker_id: int, now: datetime | None = None) -> str:
    """Say "still alive" and extend the leases of everything this worker holds.

    Returns the worker's status (alive or draining); raises WorkerLostError when it
    was declared dead or stopped meanwhile.
    """
    now = now or timezone.now()
    with transaction.atomic():
        if not Worker.objects.live().filter(pk=worker_id).update(last_heartbeat=now):
            raise WorkerLostError(f"worker {worker_id} is no longer live")
        Order.objects.held_by(worker_id).update(lease_expires_at=now + lease_duration())
        return Worker.objects.filter(pk=worker_id).values_list("status", flat=True).get()


def drain_worker(worker_id: int) -> bool:
    """Ask a worker to finish what it holds and stop (it notices on its next heartbeat)."""
    return bool(Worker.objects.filter(pk=worker_id, status=Worker.Status.ALIVE).update(status=Worker.Status.DRAINING))


def stop_worker(worker_id: int, reason: str = "stopped", now: datetime | None = None) -> Recovery | None:
    """A clean stop: leave the ring, hand back anything still held, close the shop.

    Whatever the worker still holds (it overran its grace period) is re-queued
    as a retry; its queued takeaway orders are cancelled, as no other shop may
    bake them. None if the worker was not live.
    """
    return _leave(worker_id, Worker.Status.STOPPED, reason, BucketMove.Reason.STOP, now or timezone.now())


def declare_dead(worker_id: int, reason: str = "missed heartbeats", now: datetime | None = None) -> Recovery | None:
    """The monitor's (or an operator's) verdict on a silent kitchen.

    1. Mark it dead, unless something else already took it out of the ring.
    2. Rebalance: its buckets go to live workers.
    3. Cancel its takeaway orders ("shop unavailable"): they are pinned to it.
    4. Re-queue the delivery orders it was preparing (an attempt spent), naming
       the shop whose bucket they now sit in; dead-letter those out of attempts.
    All in one transaction, so nobody sees a dead worker still owning buckets.
    """
    return _leave(worker_id, Worker.Status.DEAD, reason, BucketMove.Reason.DEATH, now or timezone.now())


def _leave(worker_id: int, status: str, reason: str, move_reason: str, now: datetime) -> Recovery | None:
    with transaction.atomic():
        lock_ring()
        left = (
            Worker.objects.live().filter(pk=worker_id).update(status=status, stopped_at=now, stop_reason=reason[:200])
        )
        if not left:
            return None
        recovery = Recovery(moved_buckets=len(rebalance(now, move_reason)))
        recovery.cancelled = _cancel_pinned(worker_id, now)
        held = list(Order.objects.select_for_update().held_by(worker_id).values_list("id", "attempts", "max_attempts"))
        why = "shop went offline" if status == Worker.Status.DEAD else "shop closed"
        _take_back(held, worker_id, now, recovery, f"{why} on the last attempt", _reassigned(worker_id, now, why))
        _notify_work()  # its buckets' queued orders have new owners: wake them
    logger.warning(
        "worker left id=%s status=%s reason=%s requeued=%d failed=%d cancelled=%d",
        worker_id,
        status,
        reason,
        len(recovery.requeued),
        len(recovery.failed),
        len(recovery.cancelled),
    )
    return recovery


def _cancel_pinned(worker_id: int, now: datetime) -> list[uuid.UUID]:
    ids = list(
        Order.objects.select_for_update()
        .filter(pinned_worker_id=worker_id, status__in=[Status.QUEUED, Status.PREPARING])
        .values_list("id", flat=True)
    )
    if ids:
        Order.objects.filter(id__in=ids).update(
            status=Status.CANCELLED,
            stage="",
            lease_token=None,
            lease_expires_at=None,
            cancel_reason=SHOP_UNAVAILABLE,
            finished_at=now,
        )
        _record(
            _event(
                oid,
                Event.CANCELLED,
                now,
                worker_id=worker_id,
                reason=SHOP_UNAVAILABLE,
                message="Your shop is unavailable, so your takeaway order was cancelled. Please order again.",
            )
            for oid in ids
        )
    return ids


def _take_back(
    held: Sequence[tuple[uuid.UUID, int, int]],
    worker_id: int | None,
    now: datetime,
    recovery: Recovery,
    failure: str,
    requeued: Callable[[list[uuid.UUID]], list[OrderEvent]],
) -> None:
    """Take (id, attempts, max_attempts) orders away from a worker that can no
    longer finish them: back in the queue, or dead-lettered when that was the
    last attempt. `requeued` builds the events telling what happened to the rest."""
    exhausted = [oid for oid, attempts, most in held if attempts >= most]
    retry = [oid for oid, attempts, most in held if attempts < most]
    if exhausted:
        _to_failed(exhausted, failure, now)
        _record(_event(oid, Event.FAILED, now, worker_id=worker_id, message=failure) for oid in exhausted)
    if retry:
        Order.objects.filter(id__in=retry).update(
            status=Status.QUEUED, stage="", lease_token=None, lease_expires_at=None, worker=None, eligible_at=now
        )
        _record(requeued(retry), work=True)
    recovery.requeued += retry
    recovery.failed += exhausted


def _reassigned(worker_id: int, now: datetime, why: str) -> Callable[[list[uuid.UUID]], list[OrderEvent]]:
    def events(ids: list[uuid.UUID]) -> list[OrderEvent]:
        # Name the shop each order now belongs to: the owner of its bucket after the rebalance.
        buckets = dict(Order.objects.filter(id__in=ids).values_list("id", "bucket"))
        owners = dict(Bucket.objects.filter(number__in=set(buckets.values())).values_list("number", "owner__name"))
        return [
            _event(
                oid,
                Event.REASSIGNED,
                now,
                worker_id=worker_id,
                to_shop=owners.get(buckets[oid]) or "",
                message=f"Your {why}; your order moved to {owners.get(buckets[oid]) or 'the next free shop'}.",
            )
            for oid in ids
        ]

    return events


def recover_expired_leases(now: datetime | None = None) -> Recovery:
    """Re-queue orders whose lease ran out while their worker still looks alive
    (a worker too slow to heartbeat); its late writes will be fenced off."""
    now = now or timezone.now()
    recovery = Recovery()
    with transaction.atomic():
        expired = list(
            Order.objects.select_for_update(skip_locked=True)
            .expired_leases(now)
            .values_list("id", "attempts", "max_attempts")[:1000]
        )
        _take_back(
            expired,
            None,
            now,
            recovery,
            "lease expired on the last attempt",
            lambda ids: [
                _event(oid, Event.RETRIED, now, message="The kitchen's lease expired; back in the queue.")
                for oid in ids
            ],
        )
    return recovery
