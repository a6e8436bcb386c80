"""The queue operations: every change to an order's state happens here.

Each operation is one transaction that writes the change *and* its
`OrderEvent` together, so the timeline (and the outbox that live updates are
read from) can never disagree with the order. Views, the API, admin actions,
commands, the worker loop and the monitor call these functions; nothing else
writes an order's status.

Contested writes are conditional UPDATEs whose row count is checked: a worker's
writes about an order (stage, done, fail, release) are fenced by the lease
token it got when it claimed the order (`Order.objects.leased`), so a worker
that lost its lease can only record `lease-lost`, never overwrite the new
holder's work.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import DEFAULT_DB_ALIAS, IntegrityError, connection, connections, transaction
from django.db.models import F
from django.utils import timezone

from workers import clock, completions, ring, shops, sql, storable
from workers.models import Bucket, Order, OrderEvent, OrderQuerySet, Worker

logger = logging.getLogger(__name__)

SHOP_UNAVAILABLE = "shop unavailable"
PLACED_MESSAGE = "Order confirmed."
DONE_MESSAGE = "Ready!"
RELEASED_MESSAGE = "Handed back unstarted by a closing kitchen."
INTERRUPTED_MESSAGE = "The kitchen lost its database connection; back in the queue, no attempt charged."
UNANSWERED_MESSAGE = "Claimed by a request whose answer was lost; back in the queue, no attempt charged."

Status = Order.Status
Event = OrderEvent.Kind

# An order no worker holds: what every write that ends or gives back a lease sets.
LEASE_CLEARED: dict[str, Any] = {"lease_token": None, "lease_expires_at": None, "stage": "", "stage_started_at": None}
# An order taken from its worker and waiting again.
BACK_IN_QUEUE: dict[str, Any] = {"status": Status.QUEUED, "worker": None, **LEASE_CLEARED}


class OrderNotFoundError(Exception):
    pass


class InvalidTransitionError(Exception):
    """The order is not in a state that allows this (e.g. cancelling a baked pizza)."""


class IdempotencyConflictError(Exception):
    """The idempotency key was already used for a different request."""


@dataclass(frozen=True)
class OrderRequest:
    """What to place: a request the shop's intake has already checked."""

    items: list[dict[str, Any]]
    kind: str = Order.Kind.DELIVERY
    area: str = ""
    # A takeaway order names the worker it is pinned to.
    pinned_to: str = ""
    priority: int = 0
    note: str = ""
    customer_name: str = ""
    not_before: datetime | None = None
    max_attempts: int | None = None
    estimated_seconds: int = field(default=0, compare=False)

    def fingerprint(self) -> str:
        """Identifies the request's content, to tell a retry from a different order reusing a key."""
        body = {
            "items": self.items,
            "kind": self.kind,
            "area": self.area,
            "shop": self.pinned_to,  # the key fingerprints already stored were hashed with
            "priority": self.priority,
            "note": self.note,
            "customer_name": self.customer_name,
            "not_before": self.not_before.isoformat() if self.not_before else None,
            "max_attempts": self.max_attempts,
        }
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Owner:
    """Who places an order: an API user (`user_id`), and/or a browser (its placing key)."""

    user_id: int | None = None
    session: str = ""


@dataclass(frozen=True)
class Claim:
    """An order handed to one worker, with the token that fences its later writes."""

    order: Order
    token: uuid.UUID


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
    return int(base.timestamp() * 1_000_000) - rank_offset(priority)


def rank_offset(priority: int) -> int:
    """How far ahead of its age a priority puts an order, in microseconds (`sql.PLACE` subtracts it too)."""
    aging = settings.PIZZAQUEUE_PRIORITY_AGING
    if aging <= 0:
        return priority * 10**15  # strict priority, FIFO within it
    return round(priority * 60_000_000 / aging)


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
    actor_id: int | None = None,
    **data: object,
) -> OrderEvent:
    return OrderEvent(
        order_id=order_id,
        kind=kind,
        created_at=now,
        worker_id=worker_id,
        stage=storable.stage(stage),
        message=storable.message(message),
        actor_id=actor_id,
        data=data,
    )


def _notify(statement: str) -> None:
    """Wake listeners once this transaction commits (PostgreSQL only; NOTIFY is transactional)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(statement)


def notify_work() -> None:
    """Wake the workers once this transaction commits: an order became claimable."""
    _notify(sql.NOTIFY_ORDERS)


def _record(events: Iterable[OrderEvent], *, work: bool = False) -> None:
    """Write events inside the caller's transaction and wake the live-update relays
    (and, with `work`, the workers: the change made an order claimable)."""
    events = list(events)
    if not events:
        return
    OrderEvent.objects.bulk_create(events)
    _notify(sql.NOTIFY_EVENTS_AND_ORDERS if work else sql.NOTIFY_EVENTS)


def _get(order_id: uuid.UUID | str, among: OrderQuerySet | None = None, lock: bool = False) -> Order:
    try:
        found = Order.objects.all() if among is None else among
        return (found.select_for_update(of=("self",)) if lock else found).get(pk=order_id)
    except (Order.DoesNotExist, ValidationError, ValueError):
        raise OrderNotFoundError(str(order_id)) from None


# --- Intake -------------------------------------------------------------------


def not_before_error(not_before: datetime | None, now: datetime) -> str | None:
    """Why an order may not be scheduled for `not_before`; None when it may.

    At most PIZZAQUEUE_MAX_SCHEDULE_DAYS ahead, compared in UTC, as it is
    stored. A time years ahead is never baked, and one past the year 9999 in
    UTC (`9999-12-31T23:59:59-12:00`) is stored by PostgreSQL but cannot be
    read back into Python, so every page listing the order would fail. A time
    in the past means "now".
    """
    if not_before is None:
        return None
    if timezone.is_naive(not_before):
        not_before = timezone.make_aware(not_before, timezone.get_current_timezone())
    days = settings.PIZZAQUEUE_MAX_SCHEDULE_DAYS
    try:
        in_utc = not_before.astimezone(UTC)
    except OverflowError:
        # Beyond the years 1 to 9999 once in UTC.
        return f"Must be at most {days} days from now." if not_before.year > 1 else "Must be after the year 1 in UTC."
    if in_utc > now + timedelta(days=days):
        return f"Must be at most {days} days from now."
    return None


def _new_order(
    request: OrderRequest,
    now: datetime,
    pinned_to: int | None,
    idempotency_key: str | None = None,
    fingerprint: str = "",
    owner: Owner | None = None,
) -> Order:
    # Checked here too, so no caller of `place` can write an order no page could show.
    error = not_before_error(request.not_before, now)
    if error is not None:
        raise ValidationError({"not_before": [error]})
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
        pinned_worker_id=pinned_to,
        priority=request.priority,
        rank=rank_for(eligible, request.priority),
        eligible_at=eligible,
        max_attempts=request.max_attempts or settings.PIZZAQUEUE_MAX_ATTEMPTS,
        estimated_seconds=request.estimated_seconds,
        idempotency_key=idempotency_key or None,
        request_hash=fingerprint if idempotency_key else "",
        created_at=now,
        placed_by_id=owner.user_id if owner else None,
        placed_by_session=owner.session if owner else "",
    )


def _open_worker_named(name: str) -> Worker:
    # Holding the worker's row until commit means a concurrent declare_dead
    # (or drain) either sees this order (and cancels it) or runs before it, in
    # which case the worker is out of the ring here and the order is refused.
    # A draining worker takes nothing new: it would only cancel the order at its stop.
    worker = Worker.objects.in_ring().filter(name=name).select_for_update(no_key=True).first()
    if worker is None:
        # Keyed by the request's field, as the intake's own errors are.
        raise ValidationError({"shop": [f"No open shop named {name!r}."]})
    return worker


def place(
    request: OrderRequest,
    idempotency_key: str | None = None,
    now: datetime | None = None,
    owner: Owner | None = None,
) -> tuple[Order, bool]:
    """Persist a confirmed order and its `placed` event; returns (order, created).

    With an idempotency key, a retry of the same request returns the first
    order (created=False) and a different request raises IdempotencyConflictError.
    The `owner` is recorded on the order: who may later read and change it.
    """
    fingerprint = request.fingerprint() if idempotency_key else ""  # only a retry is compared
    if idempotency_key and request.kind == Order.Kind.TAKEAWAY:
        # Looked up first: the worker may have stopped since, and a retry must replay, not fail.
        existing = _holder_of(idempotency_key)
        if existing is not None:
            return _same_request(existing, fingerprint), False
    if request.kind == Order.Kind.DELIVERY and connection.vendor == "postgresql":
        # Its times are the server's, read by the statement itself (placeholders until then).
        order = _new_order(request, now or timezone.now(), None, idempotency_key, fingerprint, owner)
        # Inside a caller's transaction, a savepoint keeps a failed statement from spoiling it.
        with transaction.atomic() if connection.in_atomic_block else contextlib.nullcontext():
            inserted = _place_in_one_statement(order, request.not_before, now)
        if not inserted:
            # The key is taken (a retry, or a submission that won the race): answer with its order.
            existing = _holder_of(idempotency_key or "")
            if existing is None:
                raise IntegrityError(f"idempotency key {idempotency_key!r} taken by an order that is gone")
            return _same_request(existing, fingerprint), False
    else:
        try:
            with transaction.atomic():
                now = now or clock.now()
                pinned_to = _open_worker_named(request.pinned_to).pk if request.kind == Order.Kind.TAKEAWAY else None
                order = _new_order(request, now, pinned_to, idempotency_key, fingerprint, owner)
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


def _place_in_one_statement(order: Order, not_before: datetime | None, now: datetime | None) -> bool:
    """Insert an order (no worker to lock) with its `placed` event and wake-ups, in one
    statement (`sql.PLACE`): one round trip, and outside a transaction its own transaction.

    False when its idempotency key is taken: the INSERT then does nothing (it
    waits for an uncommitted holder of the key to commit or roll back first).

    Outside a transaction the order's commit does not wait for the disk, and
    the flush is waited for in the same round trip (`sql.PLACE_THEN_FLUSH`):
    the caller is answered only once the order is on disk, so confirmed still
    means durable; and a worker bakes nothing that is not durable, because its
    claim commits synchronously later in the same write-ahead log, which is
    flushed in order.
    """
    statement = sql.PLACE if connection.in_atomic_block else sql.PLACE_THEN_FLUSH
    # Optimization: the connection itself; through the `connection` proxy each field's lookups cost twice.
    db = connections[DEFAULT_DB_ALIAS]
    values = [f.get_db_prep_save(getattr(order, f.attname), db) for f in Order._meta.concrete_fields]
    tail = Event.PLACED, PLACED_MESSAGE, sql.EVENTS_CHANNEL, sql.ORDERS_CHANNEL
    with connection.cursor() as cursor:
        cursor.execute(statement, sql.place_parameters(values, now, not_before, rank_offset(order.priority), *tail))
        rows = cursor.fetchall()  # the first statement's rows
    if not rows:
        return False
    order.created_at, order.eligible_at, order.rank = rows[0][:3]
    order._state.adding, order._state.db = False, connection.alias  # as save() leaves it
    return True


def _holder_of(idempotency_key: str) -> Order | None:
    return Order.objects.filter(idempotency_key=idempotency_key).first()


def _same_request(existing: Order, fingerprint: str) -> Order:
    """A retry's answer: the first order, once it is on disk.

    On PostgreSQL the first request's commit is visible before its flush
    (`sql.PLACE_THEN_FLUSH`). Outside a transaction the retry's own statement
    already waits for the log; inside a caller's transaction the retry writes
    nothing, so its commit would not wait at all. The log message makes it
    wait to reach past the first order, as the first request itself does: the
    confirmation means the same whichever request gets it.
    """
    if existing.request_hash != fingerprint:
        raise IdempotencyConflictError("This Idempotency-Key was already used for a different order.")
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(sql.WAIT_FOR_FLUSH)
    return existing


def place_many(
    requests: Sequence[OrderRequest], now: datetime | None = None, owner: Owner | None = None
) -> list[Order]:
    """Bulk intake: many orders (all of one `owner`) and their events in one transaction."""
    now = now or clock.now()
    with transaction.atomic():
        pinned = {
            name: _open_worker_named(name).pk
            for name in {r.pinned_to for r in requests if r.kind == Order.Kind.TAKEAWAY}
        }
        orders = [
            _new_order(r, now, pinned.get(r.pinned_to) if r.kind == Order.Kind.TAKEAWAY else None, owner=owner)
            for r in requests
        ]
        Order.objects.bulk_create(orders)
        _record((_event(o.id, Event.PLACED, now, message=PLACED_MESSAGE) for o in orders), work=True)
    return orders


# --- Claiming and the worker's fenced writes ----------------------------------


def _claim_params(worker_id: int, now: datetime, limit: int) -> tuple[bool, dict[str, Any]]:
    """(stealing?, the parameters of `sql.CLAIMABLE`), on SQLite."""
    steal_after = settings.PIZZAQUEUE_STEAL_AFTER
    adapt = connection.ops.adapt_datetimefield_value
    params: dict[str, Any] = {
        "queued": Status.QUEUED,
        "now": adapt(now),
        "worker": worker_id,
        "limit": limit,
        "avoid_before": adapt(now - lease_duration()),
    }
    if steal_after > 0:
        params["steal_before"] = adapt(now - timedelta(seconds=steal_after))
    return steal_after > 0, params


def claim(worker_id: int, limit: int, now: datetime | None = None) -> list[Claim]:
    """Hand up to `limit` orders to a worker, highest effective priority first.

    One transaction with the lock held briefly: on PostgreSQL one statement
    locks the rows with FOR UPDATE SKIP LOCKED, so concurrent claimers pass
    over each other's rows instead of waiting; on SQLite the IMMEDIATE
    transaction holds the database's single write lock.
    """
    token = uuid.uuid4()
    if connection.vendor == "postgresql":
        return _claim_in_one_statement(worker_id, limit, token, now)
    # A read outside any transaction (WAL readers take no lock) first, on SQLite:
    if not _claimable_ids(worker_id, now or clock.now(), 1):
        # An idle poll must not take SQLite's one write lock: a worker paused
        # while holding it (SIGSTOP, a long GC pause) would stall every writer.
        return []
    with transaction.atomic():
        # Read the clock once the transaction holds the lock: on SQLite BEGIN
        # IMMEDIATE may wait up to the busy timeout, and a clock read before it
        # would stamp claimed_at too early and shorten the lease by the wait.
        now = now or clock.now()
        ids = _claimable_ids(worker_id, now, limit)
        if not ids:
            return []
        updated = Order.objects.filter(id__in=ids, status=Status.QUEUED).update(
            status=Status.PREPARING,
            worker_id=worker_id,
            lease_token=token,
            lease_expires_at=now + lease_duration(),
            attempts=F("attempts") + 1,
            claimed_at=now,
            stage="",
            avoid_worker=None,
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
    stealing, params = _claim_params(worker_id, now, limit)
    with connection.cursor() as cursor:
        cursor.execute(sql.CLAIMABLE_OR_STOLEN if stealing else sql.CLAIMABLE, params)
        return [uuid.UUID(str(row[0])) for row in cursor.fetchall()]


def _claim_in_one_statement(worker_id: int, limit: int, token: uuid.UUID, now: datetime | None) -> list[Claim]:
    """The claim on PostgreSQL (`sql.CLAIM`): pick, lease and record in one statement, and
    outside a transaction its own transaction; at the server's time unless `now` is given."""
    steal_after = settings.PIZZAQUEUE_STEAL_AFTER
    params: dict[str, Any] = {
        "queued": Status.QUEUED,
        "now": now,
        "worker": worker_id,
        "limit": limit,
        "steal_after": timedelta(seconds=steal_after),
        "preparing": Status.PREPARING,
        "token": token,
        "lease": lease_duration(),
        "avoid_for": lease_duration(),
        "claimed": Event.CLAIMED,
        "channel": sql.EVENTS_CHANNEL,
    }
    with sql.prepared_cursor() as cursor:
        cursor.execute(sql.CLAIM_OR_STEAL if steal_after > 0 else sql.CLAIM, params)
        claimed = [sql.load(Order, row) for row in cursor.fetchall()]
    claimed.sort(key=lambda o: o.claim_key)
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
    stage = storable.stage(stage)
    now = now or clock.now()
    with transaction.atomic():
        if Order.objects.leased(order_id, token).update(stage=stage, stage_started_at=now) != 1:
            _record_lease_lost([order_id], worker_id, now, f"report stage {stage} of")
            return False
        _record([_event(order_id, Event.STAGE, now, worker_id=worker_id, stage=stage)])
    return True


def check_lease(
    order_id: uuid.UUID, token: uuid.UUID, worker_id: int | None, now: datetime | None = None
) -> str | None:
    """The order's stage while `token` still holds it; None once it does not (cancelled,
    taken back, moved), with a `lease-lost` event saying the kitchen stopped there.

    A handler waiting (a staffed kitchen for its staff's taps, a simulated oven
    between stages) calls this every few tenths of a second, so a revoked lease
    stops it within that, not at a stage that may be minutes away. The common
    case is one read by primary key and no write.
    """
    stage = Order.objects.leased(order_id, token).values_list("stage", flat=True).first()
    if stage is None:
        with transaction.atomic():
            _record_lease_lost([order_id], worker_id, now or clock.now(), "go on with")
    return stage


def advance_stage(
    order_id: uuid.UUID, token: uuid.UUID, from_stage: str, to_stage: str, now: datetime | None = None
) -> bool:
    """Staff at a staffed kitchen's display move an order from `from_stage` to `to_stage`
    (SPEC §7a); False when nothing was written.

    Fenced twice: by the lease token the display was rendered with, so a tap
    from a display whose order moved to another kitchen (or was cancelled)
    changes nothing; and by the stage it showed, so a double tap, or two
    tablets tapping at once, moves the order one step, not two. The kitchen
    process holding the lease sees the new stage on its next look
    (`check_lease`) and, at the last one, returns so its loop completes it.
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
        _record([_event(order_id, Event.STAGE, now, worker_id=worker_id, stage=to_stage, by="staff")])
    return True


def complete_many(
    held: Sequence[tuple[uuid.UUID, uuid.UUID]], worker_id: int | None = None, now: datetime | None = None
) -> set[uuid.UUID]:
    """Mark orders done, each only if its lease token still matches.

    Returns the ids completed; the others get a `lease-lost` event and are
    dropped, so an order reaches `done` exactly once. One transaction for the
    whole batch: batching is what lets a worker go past one commit per order.
    """
    if connection.vendor == "postgresql":
        return _complete_in_one_statement(held, worker_id, now)
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
                Order.objects.filter(id__in=mine).update(status=Status.DONE, finished_at=now, **LEASE_CLEARED)
                done |= mine
            lost = completions.not_done_by([i for i in ids if i not in mine], worker_id)
            if lost:
                _record_lease_lost(lost, worker_id, now, "complete")
        _record(_event(oid, Event.DONE, now, worker_id=worker_id, message=DONE_MESSAGE) for oid in done)
    return done


def _complete_in_one_statement(
    held: Sequence[tuple[uuid.UUID, uuid.UUID]], worker_id: int | None, now: datetime | None
) -> set[uuid.UUID]:
    """complete_many on PostgreSQL (`sql.COMPLETE`): the fenced UPDATE and the `done` events in one
    statement, at the server's time unless `now` is given."""
    if not held:
        return set()
    with sql.prepared_cursor() as cursor:
        cursor.execute(
            sql.COMPLETE,
            {
                "ids": [order_id for order_id, _ in held],
                "tokens": [token for _, token in held],
                "done": Status.DONE,
                "preparing": Status.PREPARING,
                "now": now,
                "worker": worker_id,
                "message": DONE_MESSAGE,
                "channel": sql.EVENTS_CHANNEL,
            },
        )
        done = {row[0] for row in cursor.fetchall()}
    lost = completions.not_done_by([order_id for order_id, _ in held if order_id not in done], worker_id)
    if lost:
        with transaction.atomic():
            _record_lease_lost(lost, worker_id, now or clock.now(), "complete")
    return done


def complete(order_id: uuid.UUID, token: uuid.UUID, worker_id: int | None = None, now: datetime | None = None) -> bool:
    return order_id in complete_many([(order_id, token)], worker_id, now)


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
            _record_lease_lost([order_id], worker_id, now, "fail")
            return Event.LEASE_LOST
        if order.attempts >= order.max_attempts:
            _to_failed([order_id], error, now)
            _record([_event(order_id, Event.FAILED, now, worker_id=worker_id, message=error, attempts=order.attempts)])
            return Event.FAILED
        delay = retry_delay(order.attempts)
        Order.objects.filter(id=order_id).update(**BACK_IN_QUEUE, eligible_at=now + delay, last_error=error)
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
    Order.objects.filter(id__in=ids).update(status=Status.FAILED, last_error=error, finished_at=now, **LEASE_CLEARED)


def release(
    held: Sequence[tuple[uuid.UUID, uuid.UUID]],
    worker_id: int | None = None,
    now: datetime | None = None,
    message: str = RELEASED_MESSAGE,
) -> int:
    """Give back claimed orders without charging an attempt: never started (a
    graceful stop), or interrupted by the database rather than by the handler
    (`message` says which). Fenced like every worker write.
    """
    now = now or clock.now()
    events, lost = [], []
    with transaction.atomic():
        for order_id, token in held:
            updated = Order.objects.leased(order_id, token).update(
                **BACK_IN_QUEUE, attempts=F("attempts") - 1, eligible_at=now
            )
            if updated:
                events.append(
                    _event(
                        order_id,
                        Event.RELEASED,
                        now,
                        worker_id=worker_id,
                        message=message,
                    )
                )
            else:
                lost.append(order_id)
        _record(events, work=True)
        if lost:
            _record_lease_lost(lost, worker_id, now, "release")
    return len(events)


def hand_back_unanswered(worker_id: int, known: Iterable[uuid.UUID], now: datetime | None = None) -> list[uuid.UUID]:
    """Give back what the worker holds under a lease token it does not know.

    A claim can commit and its answer be lost (the connection drops on the way
    back): the orders are then the worker's, but it will never bake them, and
    its heartbeats renew only the tokens it knows, so without this they would
    wait for their leases to run out. Called by the worker's own loop, the only
    claimer of its id, after a database error; the attempt is refunded.
    """
    with transaction.atomic():
        held = Order.objects.select_for_update().held_by(worker_id).exclude(lease_token__in=list(known))
        # A held order always has its token (`order_lease_iff_preparing`).
        unknown = [(oid, token) for oid, token in held.values_list("id", "lease_token") if token is not None]
        release(unknown, worker_id, now, message=UNANSWERED_MESSAGE)
    if unknown:
        logger.warning("handed back unanswered claims orders=%s worker=%s", [oid for oid, _ in unknown], worker_id)
    return [oid for oid, _ in unknown]


# --- Customers and operators --------------------------------------------------


def cancel(
    order_id: uuid.UUID | str,
    reason: str = "cancelled by customer",
    now: datetime | None = None,
    *,
    in_kitchen: Callable[[Order], bool] | None = None,
    among: OrderQuerySet | None = None,
    actor_id: int | None = None,
) -> Order:
    """Cancel an order that is not finished (SPEC §4.10).

    A queued order, always. One already in a kitchen only where `in_kitchen`
    allows it (the shop's rule: operators always, customers until a stage):
    its lease is revoked in this transaction, so the kitchen's next stage
    report is refused (it stops there) and its completion can never land.
    `among` scopes the lookup (e.g. `Order.objects.changeable_by(user)`): an
    order outside it is OrderNotFoundError, as an unknown id is. `actor_id` is
    the user who cancelled it, recorded on its timeline.
    """
    with transaction.atomic():
        order = _get(order_id, among, lock=True)
        now = now or clock.now()
        if order.status == Status.QUEUED:
            Order.objects.filter(id=order.id, status=Status.QUEUED).update(
                status=Status.CANCELLED, cancel_reason=reason[:200], finished_at=now
            )
            _record([_event(order.id, Event.CANCELLED, now, message=reason, actor_id=actor_id)])
        elif order.status == Status.PREPARING and order.lease_token is not None and in_kitchen is not None:
            if not in_kitchen(order):
                raise InvalidTransitionError(f"Too late to cancel: the order is at the {order.stage or 'start'}.")
            Order.objects.leased(order.id, order.lease_token).update(
                status=Status.CANCELLED, cancel_reason=reason[:200], finished_at=now, **LEASE_CLEARED
            )
            _record(
                [
                    _event(
                        order.id,
                        Event.CANCELLED,
                        now,
                        worker_id=order.worker_id,
                        message=reason,
                        stage=order.stage,
                        actor_id=actor_id,
                    )
                ]
            )
        else:
            raise InvalidTransitionError(f"Order is {order.status}; only a queued order can be cancelled.")
    order.refresh_from_db()
    return order


def requeue(
    order_id: uuid.UUID | str,
    reason: str = "requeued by an operator",
    now: datetime | None = None,
    actor_id: int | None = None,
) -> Order:
    """Operator's second chance: a failed or cancelled order goes back in the queue
    with fresh attempts; a preparing one is taken from its worker (its lease
    token is revoked, so that worker can no longer complete it). `actor_id`
    is the operator, recorded on the timeline."""
    now = now or clock.now()
    with transaction.atomic():
        order = _get(order_id)
        if order.pinned_worker_id is not None and not shops.hold_open(order.pinned_worker_id):
            # Nobody else may bake a takeaway order: back in the queue it would wait for ever.
            raise InvalidTransitionError("Its shop is closed; a takeaway order can only be baked by its own shop.")
        order = Order.objects.select_for_update(no_key=True).get(pk=order.pk)  # after its shop, as `monitor.leave`
        if order.status in (Status.FAILED, Status.CANCELLED):
            updated = Order.objects.filter(id=order.id, status=order.status).update(
                status=Status.QUEUED,
                attempts=0,
                eligible_at=now,
                rank=rank_for(now, order.priority),
                finished_at=None,
                cancel_reason="",
            )
        elif order.status == Status.PREPARING and order.lease_token is not None:
            updated = Order.objects.leased(order.id, order.lease_token).update(
                **BACK_IN_QUEUE, eligible_at=now, attempts=F("attempts") - 1
            )
        else:
            raise InvalidTransitionError(
                f"Order is {order.status}; only failed, cancelled or preparing orders can be requeued."
            )
        if updated != 1:
            raise InvalidTransitionError("Order changed meanwhile; try again.")
        _record([_event(order.id, Event.RETRIED, now, message=reason, actor_id=actor_id, by="operator")], work=True)
    order.refresh_from_db()
    return order


def expedite(
    order_id: uuid.UUID | str,
    priority: int = Order.MAX_PRIORITY,
    now: datetime | None = None,
    actor_id: int | None = None,
    among: OrderQuerySet | None = None,
) -> Order:
    """Raise a queued order's priority (the kitchen display's "rush" button), by `actor_id` if a
    person did; `among` scopes the lookup, as in `cancel`."""
    now = now or clock.now()
    if not Order.MIN_PRIORITY <= priority <= Order.MAX_PRIORITY:
        raise ValidationError({"priority": [f"Must be between {Order.MIN_PRIORITY} and {Order.MAX_PRIORITY}."]})
    with transaction.atomic():
        order = _get(order_id, among)
        order = Order.objects.select_for_update(no_key=True).get(pk=order.pk)  # held until commit: see `shops`
        if order.status != Status.QUEUED:
            raise InvalidTransitionError(f"Order is {order.status}; only a queued order can be expedited.")
        if priority <= order.priority:
            raise InvalidTransitionError(f"Order already has priority {order.priority}; expediting only raises it.")
        # Keep the order's place in time: the rank is rebuilt from when it became eligible.
        updated = Order.objects.filter(id=order.id, status=Status.QUEUED, priority=order.priority).update(
            priority=priority, rank=rank_for(order.eligible_at, priority)
        )
        if updated != 1:
            raise InvalidTransitionError("Order changed meanwhile; try again.")
        _record(
            [
                _event(
                    order.id,
                    Event.EXPEDITED,
                    now,
                    message=f"Priority raised to {priority}.",
                    actor_id=actor_id,
                    priority=priority,
                )
            ]
        )
    order.refresh_from_db()
    return order


def purge(before: datetime, limit: int) -> int:
    """Delete up to `limit` orders finished before `before`, with their events; returns how many.

    One short transaction per call, so purging millions of rows never holds a
    long lock. An order is deleted only if it is still finished when the
    DELETE reaches it: one requeued meanwhile by an operator is kept.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                sql.PURGE, {"final": [s.value for s in Order.FINAL_STATUSES], "before": before, "limit": limit}
            )
            return int(cursor.fetchone()[0])
    # SQLite: the IMMEDIATE transaction holds the one write lock from the read to the
    # DELETE, so nobody can requeue in between; the ORM's delete() takes the events too.
    old = Order.objects.finished().filter(finished_at__lt=before)
    with transaction.atomic():
        ids = list(old.values_list("id", flat=True)[:limit])
        if ids:
            old.filter(id__in=ids).delete()
    return len(ids)


def reroute(count: int, stranded_only: bool = False) -> int:
    """Give unfinished orders the bucket their routing key hashes to among `count`
    buckets; returns how many moved. With `stranded_only`, just the queued orders in
    a bucket numbered `count` or above (an index range of `order_queued_bucket_idx`):
    those a process still configured with a larger count placed.

    Runs inside the caller's transaction, under the ring's lock (`monitor.resize_buckets`).
    Only the bucket changes: a claim or lease is untouched, and the order's place in
    the queue (its rank) is kept.
    """
    if stranded_only:
        orders = Order.objects.filter(status=Status.QUEUED, bucket__gte=count)
    else:
        orders = Order.objects.filter(status__in=[Status.QUEUED, Status.PREPARING])
    to_bucket: dict[int, list[uuid.UUID]] = defaultdict(list)
    for order_id, area, bucket in orders.values_list("id", "area", "bucket").iterator(chunk_size=2000):
        target = ring.bucket_for(area or str(order_id), count)
        if target != bucket:
            to_bucket[target].append(order_id)
    for target, ids in to_bucket.items():
        for start in range(0, len(ids), 500):
            Order.objects.filter(id__in=ids[start : start + 500]).update(bucket=target)
    return sum(len(ids) for ids in to_bucket.values())


# --- Taking orders from a worker that left (inside the monitor's transactions) ---


def cancel_pinned(worker_id: int, now: datetime, actor_id: int | None = None) -> list[uuid.UUID]:
    """Cancel the takeaway orders pinned to a worker that left: nobody else may bake them.

    Runs inside the caller's transaction (the worker's leaving); `actor_id` is
    the operator who declared the worker dead, if one did.
    """
    ids = list(
        Order.objects.select_for_update()
        .filter(pinned_worker_id=worker_id, status__in=[Status.QUEUED, Status.PREPARING])
        .values_list("id", flat=True)
    )
    if ids:
        Order.objects.filter(id__in=ids).update(
            status=Status.CANCELLED, cancel_reason=SHOP_UNAVAILABLE, finished_at=now, **LEASE_CLEARED
        )
        _record(
            _event(
                oid,
                Event.CANCELLED,
                now,
                worker_id=worker_id,
                actor_id=actor_id,
                reason=SHOP_UNAVAILABLE,
                message="Your shop is unavailable, so your takeaway order was cancelled. Please order again.",
            )
            for oid in ids
        )
    return ids


def take_back(
    held: Sequence[tuple[uuid.UUID, int, int]],
    worker_id: int | None,
    now: datetime,
    failure: str,
    requeued: Callable[[list[uuid.UUID]], list[OrderEvent]],
    actor_id: int | None = None,
) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
    """Take (id, attempts, max_attempts) orders from a worker that can no longer
    finish them: back in the queue, or dead-lettered when that was the last
    attempt. `requeued` builds the events telling what happened to the rest.

    Runs inside the caller's transaction, on rows it locked; returns (requeued ids, failed ids).
    """
    exhausted = [oid for oid, attempts, most in held if attempts >= most]
    retry = [oid for oid, attempts, most in held if attempts < most]
    if exhausted:
        _to_failed(exhausted, failure, now)
        _record(
            _event(oid, Event.FAILED, now, worker_id=worker_id, message=failure, actor_id=actor_id) for oid in exhausted
        )
    if retry:
        Order.objects.filter(id__in=retry).update(**BACK_IN_QUEUE, eligible_at=now)
        _record(requeued(retry), work=True)
    return retry, exhausted


def reassigned_events(
    worker_id: int, now: datetime, why: str, actor_id: int | None = None
) -> Callable[[list[uuid.UUID]], list[OrderEvent]]:
    """`take_back`'s events for a worker's orders after it left: each names the
    worker now owning the order's bucket (read after the rebalance)."""

    def events(ids: list[uuid.UUID]) -> list[OrderEvent]:
        buckets = dict(Order.objects.filter(id__in=ids).values_list("id", "bucket"))
        owners = dict(Bucket.objects.filter(number__in=set(buckets.values())).values_list("number", "owner__name"))
        return [
            _event(
                oid,
                Event.REASSIGNED,
                now,
                worker_id=worker_id,
                actor_id=actor_id,
                to_shop=owners.get(buckets[oid]) or "",
                message=f"Your {why}; your order moved to {owners.get(buckets[oid]) or 'the next free shop'}.",
            )
            for oid in ids
        ]

    return events


def announce_moved_queue(
    moves: Iterable[tuple[int, int | None, int]], worker_id: int, now: datetime, why: str
) -> list[uuid.UUID]:
    """Tell every customer whose queued delivery order moved with a bucket of a leaving
    worker which shop will make it now (SPEC §7b): one `reassigned` event each.

    `moves` are `monitor.rebalance`'s (bucket, from, to); only those from the
    leaving worker count. Runs inside the caller's transaction (the leaving or
    the drain), after the rebalance, so the events commit with the move or not
    at all. The read walks `order_queued_bucket_idx`.
    """
    by_target: dict[int, list[int]] = defaultdict(list)
    for number, source, target in moves:
        if source == worker_id:
            by_target[target].append(number)
    if not by_target:
        return []
    names = dict(Worker.objects.filter(pk__in=[worker_id, *by_target]).values_list("pk", "name"))
    leaving = names.get(worker_id, "your shop")
    moved: list[uuid.UUID] = []
    for target, numbers in by_target.items():
        ids = list(
            Order.objects.filter(status=Status.QUEUED, pinned_worker__isnull=True, bucket__in=numbers).values_list(
                "id", flat=True
            )
        )
        to_shop = names.get(target, "")
        message = f"{leaving} {why}; {to_shop or 'the next free shop'} will make your order."
        for start in range(0, len(ids), 1000):
            _record(
                _event(oid, Event.REASSIGNED, now, worker_id=worker_id, message=message, to_shop=to_shop, queued=True)
                for oid in ids[start : start + 1000]
            )
        moved += ids
    return moved


def retry_overdue(order_id: uuid.UUID, token: uuid.UUID, stage: str, limit: float, now: datetime | None = None) -> str:
    """Take an order whose stage overran its limit from its kitchen and let another
    kitchen make it: back in the queue with that kitchen to avoid (`sql.CLAIMABLE`),
    or dead-lettered on its last attempt. Returns the event kind written, or "" when
    the order moved on meanwhile (fenced by its token and the stage that overran).
    """
    now = now or clock.now()
    with transaction.atomic():
        order = (
            Order.objects.select_for_update()
            .leased(order_id, token)
            .filter(stage=stage)
            .only("id", "worker_id", "attempts", "max_attempts")
            .first()
        )
        if order is None:
            return ""
        what = f"The kitchen took more than {limit:.0f} s at the {stage or 'start'}"
        if order.attempts >= order.max_attempts:
            _to_failed([order_id], f"{what} on the last attempt.", now)
            _record([_event(order_id, Event.FAILED, now, worker_id=order.worker_id, message=what, stage=stage)])
            return Event.FAILED
        Order.objects.filter(id=order_id).update(**BACK_IN_QUEUE, eligible_at=now, avoid_worker_id=order.worker_id)
        _record(
            [
                _event(
                    order_id,
                    Event.RETRIED,
                    now,
                    worker_id=order.worker_id,
                    stage=stage,
                    message=f"{what}; another kitchen will make it.",
                    reason="stage-overdue",
                    limit=limit,
                )
            ],
            work=True,
        )
    logger.warning("stage overdue order=%s stage=%s limit=%.1fs: retried elsewhere", order_id, stage, limit)
    return Event.RETRIED


def lease_expired_events(now: datetime) -> Callable[[list[uuid.UUID]], list[OrderEvent]]:
    """`take_back`'s events for orders whose lease ran out."""

    def events(ids: list[uuid.UUID]) -> list[OrderEvent]:
        return [
            _event(oid, Event.RETRIED, now, message="The kitchen's lease expired; back in the queue.") for oid in ids
        ]

    return events
