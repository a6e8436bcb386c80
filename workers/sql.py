"""Every statement the engine writes by hand, each once, called by name.

The ORM writes everything else. These are hand-written because each is a
hot path that the ORM would spread over several round trips, or a
PostgreSQL feature it has no word for; each says which in its comment.
Table and column names are filled in once from the models (`{orders}`,
`{events}`, …); every value is a query parameter.

`load` turns a row of `{order_columns}` (or any model's `columns`) back into
a model instance, with every converter the ORM would apply; `prepared_cursor`
runs the kitchens' hottest statements prepared.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from functools import cache
from typing import Any, TypeVar

import psycopg
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.db.backends.utils import CursorDebugWrapper, CursorWrapper
from django.db.models import Field, Model

from workers.models import CLAIM_ORDER, Bucket, Order, OrderEvent

M = TypeVar("M", bound=Model)


def prepared_cursor() -> CursorWrapper:
    """A cursor of the default connection whose statements PostgreSQL parses and plans
    once per connection, for the statements a kitchen runs thousands of times.

    Optimization: a claim sent inlined spends 42 % of its PostgreSQL CPU in
    parsing and planning (0.80 – 0.85 ms of CPU inlined, 0.46 – 0.50 prepared;
    docs/performance.md). Django's own cursors bind on the client and never
    prepare, so that a pooler in transaction mode that does not track
    prepared statements works; this one binds on the server and prepares at
    once, wrapped as Django wraps its own (query logging, error translation).
    With PIZZAQUEUE_PREPARED_STATEMENTS off, and on SQLite, it is Django's cursor.
    """
    if connection.vendor != "postgresql" or not settings.PIZZAQUEUE_PREPARED_STATEMENTS:
        return connection.cursor()
    connection.ensure_connection()
    raw = connection.connection
    raw.prepare_threshold = 0  # Django's cursors on it are client-side and never prepare
    cursor = psycopg.Cursor(raw)
    # As Django's BaseDatabaseWrapper.make_debug_cursor and make_cursor wrap its own.
    return (CursorDebugWrapper if connection.queries_logged else CursorWrapper)(cursor, connection)


def column(field: Any) -> str:
    """A concrete field's column name (the ORM's types allow for fields without one)."""
    if not isinstance(field, Field) or field.column is None:
        raise TypeError(f"{field!r} has no column")
    return field.column


def columns(model: type[Model], alias: str = "") -> str:
    """The model's concrete columns, in field order (the order `load` expects), qualified by `alias` if given."""
    prefix = f"{alias}." if alias else ""
    return ", ".join(f"{prefix}{connection.ops.quote_name(column(f))}" for f in model._meta.concrete_fields)


def load(model: type[M], row: Sequence[Any]) -> M:
    """An instance from the model's columns in field order (extra columns after them are ignored)."""
    # Optimization: the connection itself, not the `connection` proxy, whose every attribute access is a lookup.
    db = connections[DEFAULT_DB_ALIAS]
    names, converters = _loading(model, db.vendor)
    values = list(row[: len(names)])
    for n, convert, col in converters:
        values[n] = convert(values[n], col, db)
    return model.from_db(db.alias, names, values)


@cache
def _loading(model: type[Model], vendor: str) -> tuple[list[str], list[tuple[int, Callable[..., Any], Any]]]:
    fields = model._meta.concrete_fields
    converters = []
    for n, field in enumerate(fields):
        col = field.get_col(model._meta.db_table)
        for convert in connection.ops.get_db_converters(col) + col.get_db_converters(connection):
            converters.append((n, convert, col))
    return [f.attname for f in fields], converters


def _statement(text: str, **parts: str) -> str:
    return text.format(
        orders=Order._meta.db_table,
        events=OrderEvent._meta.db_table,
        buckets=Bucket._meta.db_table,
        order_columns=columns(Order),
        event_columns="order_id, kind, created_at, worker_id, stage, message, data",
        claim_order=", ".join(column(Order._meta.get_field(name)) for name in CLAIM_ORDER),
        **parts,
    )


# The time of a PostgreSQL statement with named parameters: the caller's `now` where
# one is given (tests pin the clock), else the server's own clock (`workers.clock`).
NOW = "COALESCE(%(now)s::timestamptz, statement_timestamp())"
# The database's clock, read on its own (`workers.clock.now`).
CLOCK = "SELECT statement_timestamp()"

# PostgreSQL channel a worker LISTENs on to wake up as soon as work appears.
ORDERS_CHANNEL = "pizzaqueue_orders"
# Channel each web process's live-update relay LISTENs on for new events.
EVENTS_CHANNEL = "pizzaqueue_events"

# A worker's and a relay's LISTEN connection subscribe once per connection.
LISTEN_ORDERS = f"LISTEN {ORDERS_CHANNEL}"
LISTEN_EVENTS = f"LISTEN {EVENTS_CHANNEL}"

# NOTIFY is transactional: the listeners wake when the caller's transaction commits. No ORM word for it.
# On the orders channel the payload says whom the work is for: a worker's id (the owner of a
# placed order's bucket, `PLACE`), or empty for anyone (`workers.listening.for_kitchen`).
NOTIFY_ORDERS = f"SELECT pg_notify('{ORDERS_CHANNEL}', '')"
NOTIFY_EVENTS = f"SELECT pg_notify('{EVENTS_CHANNEL}', '')"
NOTIFY_EVENTS_AND_ORDERS = f"SELECT pg_notify('{EVENTS_CHANNEL}', ''), pg_notify('{ORDERS_CHANNEL}', '')"

# Serialises membership changes until the transaction ends (PostgreSQL advisory lock; no ORM word for it).
LOCK_RING = "SELECT pg_advisory_xact_lock(%s)"
# A session left idle inside a transaction longer than this is ended by the server (PostgreSQL).
IDLE_IN_TRANSACTION_TIMEOUT = "SELECT set_config('idle_in_transaction_session_timeout', %s, false)"
# The longest this transaction's statements wait for a lock (PostgreSQL; SET LOCAL takes no parameter).
LOCK_TIMEOUT = "SELECT set_config('lock_timeout', %s, true)"

# What a worker may take at `now`, best first; both engines run this text. Ownership
# is read inside the statement, so a worker acting on a stale view of the ring claims
# nothing it lost; a pinned (takeaway) order is its worker's alone, whoever owns its
# bucket. An order taken from a kitchen that overran one of its stages (`avoid_worker_id`)
# is any other kitchen's, and that kitchen's again only after `avoid_before`.
# Walks `order_claim_idx`. Hand-written to be the inner SELECT of `CLAIM`.
_CLAIMABLE = """
    SELECT id FROM {orders}
    WHERE status = %(queued)s AND eligible_at <= {now}
      AND (avoid_worker_id IS NULL OR avoid_worker_id <> %(worker)s OR eligible_at < {avoid_before})
      AND (pinned_worker_id = %(worker)s
           OR (pinned_worker_id IS NULL
               AND (bucket IN (SELECT number FROM {buckets} WHERE owner_id = %(worker)s)
                    OR avoid_worker_id IS NOT NULL{steal})))
    ORDER BY {claim_order}
    LIMIT %(limit)s
"""
CLAIMABLE = _statement(_CLAIMABLE, steal="", now="%(now)s", avoid_before="%(avoid_before)s")
# With work stealing on, an unpinned order waiting past PIZZAQUEUE_STEAL_AFTER is anyone's.
CLAIMABLE_OR_STOLEN = _statement(
    _CLAIMABLE, steal=" OR eligible_at < %(steal_before)s", now="%(now)s", avoid_before="%(avoid_before)s"
)

# The claim on PostgreSQL: pick (FOR UPDATE SKIP LOCKED), lease, and write the `claimed`
# events from the UPDATE's own RETURNING rows, in one statement: one round trip where the
# ORM takes five, and the events commit with the lease or not at all.
_CLAIM = """
    WITH picked AS ({pick} FOR UPDATE SKIP LOCKED),
    claimed AS (
        UPDATE {orders} SET status = %(preparing)s, worker_id = %(worker)s,
            lease_token = %(token)s, lease_expires_at = {now} + %(lease)s, attempts = attempts + 1,
            claimed_at = {now}, stage = '', avoid_worker_id = NULL
        WHERE id IN (SELECT id FROM picked)
        RETURNING {order_columns}
    ),
    recorded AS (
        INSERT INTO {events} ({event_columns})
        SELECT id, %(claimed)s, claimed_at, %(worker)s, '', '', jsonb_build_object('attempt', attempts)
        FROM claimed ORDER BY {claim_order}
    )
    SELECT {order_columns}, pg_notify(%(channel)s, '') FROM claimed
"""
_AVOID_BEFORE = f"{NOW} - %(avoid_for)s"
CLAIM = _statement(_CLAIM, pick=_statement(_CLAIMABLE, steal="", now=NOW, avoid_before=_AVOID_BEFORE), now=NOW)
CLAIM_OR_STEAL = _statement(
    _CLAIM,
    pick=_statement(
        _CLAIMABLE, steal=f" OR eligible_at < {NOW} - %(steal_after)s", now=NOW, avoid_before=_AVOID_BEFORE
    ),
    now=NOW,
)

# Completion on PostgreSQL: each order fenced by its own token, and the `done` events
# written from the UPDATE's RETURNING rows, in one statement (the ORM: a transaction of
# five). Under READ COMMITTED a row re-queued meanwhile is re-checked against its new
# version, so a lost lease is never completed.
COMPLETE = _statement(
    """
    WITH held (id, token) AS (SELECT * FROM unnest(%(ids)s::uuid[], %(tokens)s::uuid[])),
    done AS (
        UPDATE {orders} o SET status = %(done)s, stage = '', lease_token = NULL,
            lease_expires_at = NULL, finished_at = {now}
        FROM held WHERE o.id = held.id AND o.lease_token = held.token AND o.status = %(preparing)s
        RETURNING o.id, o.finished_at
    ),
    recorded AS (
        INSERT INTO {events} ({event_columns})
        SELECT id, %(done)s, finished_at, %(worker)s, '', %(message)s, '{{}}'::jsonb FROM done
    )
    SELECT id, pg_notify(%(channel)s, '') FROM done
    """,
    now=NOW,
)

# Returns once the log is on disk up to here, so every commit already visible is
# durable (a transactional logical message: the smallest write a commit waits for).
WAIT_FOR_FLUSH = "SELECT pg_logical_emit_message(true, 'pizzaqueue', 'flush')"

# A delivery order with its `placed` event and both wake-ups, in one statement (the ORM:
# a transaction of five). A taken idempotency key makes the INSERT do nothing (ON
# CONFLICT on the key's partial index), so a client's retry leaves no error in the log.
# The kitchens' wake-up names the owner of the order's bucket, the only kitchen that
# may claim it, so the others do not all run a claim for nothing.
# Its clock is the server's, read once in the statement (`clock.now`): the order's
# `created_at`, and `eligible_at` and `rank` from it (`place_parameters` says which
# parameter goes where).
_PLACE = """
    WITH clock AS (SELECT COALESCE(%s::timestamptz, statement_timestamp()) AS now),
    placed AS (
        INSERT INTO {orders} ({order_columns}) SELECT {place_values} FROM clock
        ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
        RETURNING id, created_at, eligible_at, rank, bucket
    ),
    recorded AS (
        INSERT INTO {events} ({event_columns})
        SELECT id, %s, created_at, NULL, '', %s, '{{}}'::jsonb FROM placed
    )
    SELECT created_at, eligible_at, rank, pg_notify(%s, ''),
        pg_notify(%s, COALESCE((SELECT owner_id::text FROM {buckets} WHERE number = placed.bucket), '')){async_commit}
    FROM placed
    {then_wait_for_the_disk}
"""
# When an order may be claimed: its `not_before`, but never before it was placed.
_ELIGIBLE = "GREATEST(COALESCE(%s::timestamptz, clock.now), clock.now)"
# Values from the clock, by field; every other field is one parameter, in field order.
_FROM_THE_CLOCK = {
    "created_at": "clock.now",
    "eligible_at": _ELIGIBLE,
    # queue.rank_for in SQL: the eligible time in microseconds, less the priority's offset.
    "rank": f"(EXTRACT(EPOCH FROM {_ELIGIBLE}) * 1000000)::bigint - %s",
}
_PLACE_VALUES = ", ".join(_FROM_THE_CLOCK.get(f.attname, "%s") for f in Order._meta.concrete_fields)


def place_parameters(
    values: Sequence[Any], now: datetime | None, not_before: datetime | None, rank_offset: int, *tail: Any
) -> list[Any]:
    """`PLACE`'s parameters: `values` are the order's, in field order (those that come
    from the clock are skipped), and `tail` the event kind, its message and the two channels."""
    parameters: list[Any] = [now]
    for f, value in zip(Order._meta.concrete_fields, values, strict=True):
        if f.attname == "eligible_at":
            parameters.append(not_before)
        elif f.attname == "rank":
            parameters += [not_before, rank_offset]
        elif f.attname not in _FROM_THE_CLOCK:
            parameters.append(value)
    return [*parameters, *tail]


# Inside a caller's transaction: the caller's commit is the durable one.
PLACE = _statement(_PLACE, place_values=_PLACE_VALUES, async_commit="", then_wait_for_the_disk="")
# Outside one. Optimization: the order's own commit does not wait for its flush
# (synchronous_commit off for that transaction), so the kitchens see it at once; the
# flush is waited for in the same round trip, so `place` still returns only once the
# order is on disk. After the statement, in one simple query: COMMIT, then a
# transaction that returns once the log is on disk. A commit waits for the log up to
# its own record, and the log is flushed in order, so it flushes every earlier commit
# too. To wait at all it must write to the log: a transactional logical message is the
# smallest such write, and changes no table (logical decoding consumers see a
# `pizzaqueue` message).
PLACE_THEN_FLUSH = _statement(
    _PLACE,
    place_values=_PLACE_VALUES,
    async_commit=", set_config('synchronous_commit', 'off', true)",
    then_wait_for_the_disk=f"; COMMIT; {WAIT_FOR_FLUSH}",
)

# One batch of purged orders with their events, in one statement. The DELETE itself
# re-checks "finished before the cutoff": under READ COMMITTED a row an operator
# requeued after the batch was picked is re-checked against its new version and kept,
# with its timeline (the ORM's delete() deletes by the ids it collected, and no word of
# it returns the rows a DELETE took). The events' foreign key is checked at commit.
PURGE = _statement(
    """
    WITH gone AS (
        DELETE FROM {orders}
        WHERE id IN (
            SELECT id FROM {orders}
            WHERE status = ANY(%(final)s) AND finished_at < %(before)s
            LIMIT %(limit)s
        )
        AND status = ANY(%(final)s) AND finished_at < %(before)s
        RETURNING id
    ),
    timeline AS (DELETE FROM {events} WHERE order_id IN (SELECT id FROM gone))
    SELECT count(*) FROM gone
    """
)

# The oldest transaction still running, and the first not yet started, in this
# statement's snapshot (PostgreSQL; no ORM word for them): the relay's test of whether a
# missing event id can still appear.
SNAPSHOT_XMIN = "pg_snapshot_xmin(pg_current_snapshot())::text::bigint"
SNAPSHOT_XMAX = "pg_snapshot_xmax(pg_current_snapshot())::text::bigint"
