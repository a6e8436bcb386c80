"""Intake: an order becomes a confirmed, durable row with its `placed` event.

`place` answers only once the order is committed (on PostgreSQL, on disk),
so a confirmation always means the order survives a crash; an idempotency
key makes a retried request return the first order, never a second one.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from workers import clock, ring, sql
from workers.models import Order, Worker
from workers.queue.outbox import Event, event, record

logger = logging.getLogger(__name__)


class IdempotencyConflictError(Exception):
    """The idempotency key was already used for a different request."""


@dataclass(frozen=True)
class OrderRequest:
    """What to place: a request the shop's intake has already checked."""

    items: list[dict[str, Any]]
    kind: str = Order.Fulfilment.DELIVERY
    area: str = ""
    # A takeaway order names the shop it is pinned to (its kitchens' worker name).
    pinned_to: str = ""
    priority: int = 0
    note: str = ""
    customer_name: str = ""
    # A delivery order's address and the phone its driver calls (the shop's rules say when they are needed).
    address: str = ""
    phone: str = ""
    not_before: datetime | None = None
    max_attempts: int | None = None
    estimated_seconds: int = field(default=0, compare=False)
    # The price the shop put on it (its items carry their unit prices); not part of the
    # request's content, so a retry after a price change is still the same request.
    total: Decimal = field(default=Decimal("0"), compare=False)
    delivery_fee: Decimal = field(default=Decimal("0"), compare=False)

    def fingerprint(self) -> str:
        """Identifies the request's content, to tell a retry from a different order reusing a key."""
        body = {
            # What was asked for, without the prices the shop added.
            "items": [{k: v for k, v in item.items() if k != "price"} for item in self.items],
            "kind": self.kind,
            "area": self.area,
            "shop": self.pinned_to,  # the key fingerprints already stored were hashed with
            "priority": self.priority,
            "note": self.note,
            "customer_name": self.customer_name,
            "not_before": self.not_before.isoformat() if self.not_before else None,
            "max_attempts": self.max_attempts,
        }
        # Only when given: the fingerprints of keys stored before orders had them are unchanged.
        body.update({name: value for name, value in (("address", self.address), ("phone", self.phone)) if value})
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Owner:
    """Who places an order: an API user (`user_id`), and/or a browser (its placing key)."""

    user_id: int | None = None
    session: str = ""


def rank_for(base: datetime, priority: int) -> int:
    """The claim-order key: smaller is claimed first.

    An order's effective priority is `priority + aging * minutes waited`.
    Comparing two orders' effective priorities at any moment gives the same
    answer as comparing `enqueued_at - priority / aging` (the clock cancels
    out), so this constant key, served by a plain index, orders the queue by
    priority, then age, with aging: an order that waited long enough
    overtakes newer urgent ones, and none is starved. The `place` statement
    computes the same in SQL (a test holds the two together).
    """
    return int(base.timestamp() * 1_000_000) - rank_offset(priority)


def rank_offset(priority: int) -> int:
    """How far ahead of its age a priority puts an order, in microseconds."""
    aging = settings.PIZZAQUEUE_PRIORITY_AGING
    if aging <= 0:
        return priority * 10**15  # strict priority, FIFO within it
    return round(priority * 60_000_000 / aging)


def not_before_error(not_before: datetime | None, now: datetime) -> str | None:
    """Why an order may not be scheduled for `not_before`; None when it may.

    At most PIZZAQUEUE_MAX_SCHEDULE_DAYS ahead, compared in UTC, as it is
    stored. A time years ahead is never made, and one past the year 9999 in
    UTC (`9999-12-31T23:59:59-12:00`) is stored by PostgreSQL but cannot be
    read back into Python, so every page listing the order would fail. A time
    in the past means "now".
    """
    if not_before is None:
        return None
    if timezone.is_naive(not_before):
        not_before = timezone.make_aware(not_before, timezone.get_current_timezone())
    days = settings.PIZZAQUEUE_MAX_SCHEDULE_DAYS
    offset = not_before.utcoffset()
    if offset is not None and abs(offset) >= timedelta(hours=16):
        # Python takes offsets up to a day; PostgreSQL refuses one past ±15:59 (a DataError).
        return "Must have a time zone offset within ±15:59."
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
        total=request.total,
        delivery_fee=request.delivery_fee,
        note=request.note,
        customer_name=request.customer_name,
        address=request.address,
        phone=request.phone,
        area=request.area,
        bucket=ring.bucket_for(request.area or str(order_id), settings.PIZZAQUEUE_BUCKETS),
        pinned_shop=request.pinned_to if request.kind == Order.Fulfilment.TAKEAWAY else "",
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


class Quote(Protocol):
    """What PIZZAQUEUE_QUOTE names: the shop's word on when a new order is promised."""

    def __call__(self, orders: Sequence[Order], now: datetime) -> Sequence[float | None]:
        """Seconds from each unsaved order's `eligible_at` to its promise (None: no promise)."""
        ...


def quote(orders: Sequence[Order], now: datetime) -> list[float | None]:
    """Seconds from each new order's `eligible_at` to the time its customer is promised:
    the shop's to say (PIZZAQUEUE_QUOTE names a `Quote`), as the stage limit is.
    None: no promise (no quote configured)."""
    path = settings.PIZZAQUEUE_QUOTE
    if not path or not orders:
        return [None] * len(orders)
    function: Quote = import_string(path)
    return list(function(orders, now))


def quote_in_statement(order: Order, now: datetime) -> tuple[str, dict[str, Any]] | None:
    """The quote of one order due at `now` as SQL for the `place` statement to run itself:
    a SELECT of one row and one column, the seconds, with its own parameters. A `Quote`
    offers it as its `in_statement(order, now)`; None when it does not (or none is configured).

    Its parameters are renamed (`%(x)s` to `%(q_x)s`) so they never meet the statement's own.
    """
    path = settings.PIZZAQUEUE_QUOTE
    in_statement = getattr(import_string(path), "in_statement", None) if path else None
    if in_statement is None:
        return None
    text, params = in_statement(order, now)
    return _quote_placeholders(text), {f"q_{name}": value for name, value in params.items()}


@functools.cache
def _quote_placeholders(text: str) -> str:
    return re.sub(r"%\((\w+)\)s", r"%(q_\1)s", text)


@functools.cache
def place_statement(quote_sql: str | None) -> str:
    """The `place` statement, with the promise's seconds computed by `quote_sql` in it, or
    given as the parameter `promise_seconds`."""
    statement = sql.queries["place"]
    if quote_sql is None:
        return statement
    # On one line: psycopg caches a statement's parsing only up to 4,096 characters, and
    # parsing this one afresh took 0.2 ms, as long as its execution.
    return " ".join(statement.replace("%(promise_seconds)s::float8", f"({quote_sql})").split())


def _promise(order: Order, seconds: float | None) -> None:
    order.promised_at = order.eligible_at + timedelta(seconds=seconds) if seconds is not None else None


def _require_open_shop(name: str, now: datetime) -> None:
    """A takeaway order's shop must be open (`WorkerQuerySet.open_shop`): up, or away for less
    than PIZZAQUEUE_SHOP_CLOSED_AFTER. A shop that closes as this commits is no hole: the
    monitor's next round (`recovery.close_shops`) cancels and tells what was placed for it."""
    if not Worker.objects.open_shop(name, now):
        # Keyed by the request's field, as the intake's own errors are.
        raise ValidationError({"shop": [f"No open shop named {name!r}."]})


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
    A delivery order on PostgreSQL is one statement (`place_in_one_statement`);
    everything else one transaction through the ORM (`place_in_transaction`).
    """
    fingerprint = request.fingerprint() if idempotency_key else ""  # only a retry is compared
    if idempotency_key and request.kind == Order.Fulfilment.TAKEAWAY:
        # Looked up first: the worker may have stopped since, and a retry must replay, not fail.
        existing = _holder_of(idempotency_key)
        if existing is not None:
            return _same_request(existing, fingerprint), False
    if request.kind == Order.Fulfilment.DELIVERY and connection.vendor == "postgresql":
        order = place_in_one_statement(request, idempotency_key, fingerprint, now, owner)
    else:
        order = place_in_transaction(request, idempotency_key, fingerprint, now, owner)
    if order is None:
        # The key is taken (a retry, or a submission that won the race): answer with its order.
        existing = _holder_of(idempotency_key or "")
        if existing is None:
            raise IntegrityError(f"idempotency key {idempotency_key!r} taken by an order that is gone")
        return _same_request(existing, fingerprint), False
    logger.info("placed order=%s bucket=%s priority=%s", order.id, order.bucket, order.priority)
    return order, True


def place_in_transaction(
    request: OrderRequest,
    idempotency_key: str | None = None,
    fingerprint: str = "",
    now: datetime | None = None,
    owner: Owner | None = None,
) -> Order | None:
    """`place` on any engine: the order and its event through the ORM, in one
    transaction; None when its idempotency key is taken."""
    try:
        with transaction.atomic():
            now = now or clock.now()
            if request.kind == Order.Fulfilment.TAKEAWAY:
                _require_open_shop(request.pinned_to, now)
            order = _new_order(request, now, idempotency_key, fingerprint, owner)
            _promise(order, quote([order], now)[0])
            order.save(force_insert=True)
            record([event(order.id, Event.PLACED, now)], work=True)
    except IntegrityError:
        # Two submissions with one key raced; the unique constraint let one in.
        if idempotency_key and _holder_of(idempotency_key) is not None:
            return None
        raise
    return order


def place_in_one_statement(
    request: OrderRequest,
    idempotency_key: str | None = None,
    fingerprint: str = "",
    now: datetime | None = None,
    owner: Owner | None = None,
) -> Order | None:
    """`place` of a delivery order on PostgreSQL: the `place` statement inserts the
    order, its event and the wake-ups in one round trip, at the server's time
    unless `now` is given, its promise quoted inside it where the shop's quote
    offers SQL (`quote_in_statement`). None when its idempotency key is taken:
    the INSERT then does nothing (it waits for an uncommitted holder of the key first).

    Outside a transaction the statement is its own, committed synchronously: the
    caller is answered, and anyone notified, only once the order is on disk.
    With PIZZAQUEUE_INTAKE_SHARED_FLUSH it commits without waiting, and the flush
    is waited for in the same round trip (`sql.committed_then_flushed`); a worker
    then makes nothing that is not durable, because its claim commits
    synchronously later in the same log, which is flushed in order. Inside a
    caller's transaction, a savepoint keeps a failed statement from spoiling it,
    and the caller's commit is the durable one.
    """
    # Its times are the server's, read by the statement itself (placeholders until then).
    order = _new_order(request, now or timezone.now(), idempotency_key, fingerprint, owner)
    # Quoted by this process's clock (the quote is seconds from when it is due): in the
    # statement where the shop offers it, else before it.
    due = order.eligible_at <= order.created_at
    in_statement = quote_in_statement(order, order.created_at) if due else None
    if in_statement is None:
        quote_sql, quote_params = None, {"promise_seconds": quote([order], order.created_at)[0]}
    else:
        quote_sql, quote_params = in_statement
    inside = connection.in_atomic_block
    shared_flush = settings.PIZZAQUEUE_INTAKE_SHARED_FLUSH and not inside
    parameters = {
        **quote_params,
        "now": now,
        "not_before": request.not_before,
        "rank_offset": rank_offset(order.priority),
        # Off for a statement whose flush is waited for after it; None leaves the session's
        # (or a caller's transaction's) setting as it is.
        "synchronous_commit": "off" if shared_flush else None,
        "id": order.id,
        "kind": order.kind,
        "items": Order._meta.get_field("items").get_db_prep_save(order.items, connection),
        "total": order.total,
        "delivery_fee": order.delivery_fee,
        "note": order.note,
        "customer_name": order.customer_name,
        "address": order.address,
        "phone": order.phone,
        "area": order.area,
        "bucket": order.bucket,
        "priority": order.priority,
        "max_attempts": order.max_attempts,
        "estimated_seconds": order.estimated_seconds,
        "idempotency_key": order.idempotency_key,
        "request_hash": order.request_hash,
        "placed_by_id": order.placed_by_id,
        "placed_by_session": order.placed_by_session,
    }
    statement = place_statement(quote_sql)
    if shared_flush:
        rows = sql.committed_then_flushed(statement, parameters)
    else:
        # Outside a transaction the statement is its own, committed synchronously.
        with transaction.atomic() if inside else contextlib.nullcontext(), sql.prepared_cursor() as cursor:
            cursor.execute(statement, parameters)
            rows = cursor.fetchall()
    if not rows:
        return None
    order.created_at, order.eligible_at, order.rank, order.promised_at = rows[0][:4]
    order._state.adding, order._state.db = False, connection.alias  # as save() leaves it
    return order


def _holder_of(idempotency_key: str) -> Order | None:
    return Order.objects.filter(idempotency_key=idempotency_key).first()


def _same_request(existing: Order, fingerprint: str) -> Order:
    """A retry's answer: the first order, once it is on disk.

    On PostgreSQL the first request's commit is visible before its flush
    (`sql.committed_then_flushed`). Outside a transaction the retry's own statement
    already waits for the log; inside a caller's transaction the retry writes
    nothing, so its commit would not wait at all. The log message makes it
    wait to reach past the first order, as the first request itself does: the
    confirmation means the same whichever request gets it.
    """
    if existing.request_hash != fingerprint:
        raise IdempotencyConflictError("This Idempotency-Key was already used for a different order.")
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(sql.queries["wait_for_flush"])
    return existing


def place_many(
    requests: Sequence[OrderRequest], now: datetime | None = None, owner: Owner | None = None
) -> list[Order]:
    """Bulk intake: many orders (all of one `owner`) and their events in one transaction."""
    now = now or clock.now()
    with transaction.atomic():
        for name in {r.pinned_to for r in requests if r.kind == Order.Fulfilment.TAKEAWAY}:
            _require_open_shop(name, now)
        orders = [_new_order(r, now, owner=owner) for r in requests]
        for order, seconds in zip(orders, quote(orders, now), strict=True):
            _promise(order, seconds)
        Order.objects.bulk_create(orders)
        record((event(o.id, Event.PLACED, now) for o in orders), work=True)
    return orders
