"""The engine's hand-written statements, read from `queries.sql`, and how they run.

Each statement is written out whole, once, under a `-- name: …` header with a
comment saying why the ORM does not write it (procrastinate's `queries.sql`
layout); code calls it by name: `sql.queries["claim"]`. `rows` turns a
cursor's rows back into model instances with every converter the ORM would
apply, and `prepared_cursor` runs the workers' hottest statements prepared.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.db.backends.utils import CursorDebugWrapper, CursorWrapper
from django.db.models import Field, Model

M = TypeVar("M", bound=Model)

_HEADER = re.compile(r"^-- name: (\S+)\s*$", re.MULTILINE)


def read_queries(path: Path) -> dict[str, str]:
    """The statements of a `queries.sql` file by name: the text under each
    `-- name: NAME` header, without its comment lines or a closing semicolon."""
    parts = _HEADER.split(path.read_text())
    queries = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        lines = [line for line in body.splitlines() if line.strip() and not line.lstrip().startswith("--")]
        if name in queries:
            raise ValueError(f"{path.name}: the statement {name!r} is written twice")
        queries[name] = "\n".join(lines).rstrip().rstrip(";")
    return queries


queries = read_queries(Path(__file__).with_name("queries.sql"))

# The PostgreSQL channels the statements notify on: a worker LISTENs on the first to
# wake as soon as work appears (the payload names the worker it is for, or is empty
# for anyone: `workers.listening.for_worker`); each web process's relay on the second.
ORDERS_CHANNEL = "pizzaqueue_orders"
EVENTS_CHANNEL = "pizzaqueue_events"


def committed_then_flushed(statement: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    """Run `statement` as its own transaction, then a second transaction that
    waits for the log to reach the disk; returns the statement's rows. The statement
    commits without waiting for its flush (it sets `synchronous_commit` off for itself),
    so whoever it notifies sees it at once, and the flush is waited for before the
    caller is answered: a commit waits for the log up to its own record, and the log
    is flushed in order, so the second commit flushes the first.

    `place` runs its statement so with PIZZAQUEUE_INTAKE_SHARED_FLUSH: PostgreSQL serialises
    the commits of transactions that NOTIFY, flush included, so a statement committed
    synchronously with its NOTIFY makes each producer's flush wait for the one before;
    the flush-only second transaction lets producers share flushes, where the disk and
    not the CPU is the limit (docs/performance.md, "Intake").

    Optimization: both go in one round trip, prepared: a pipeline of the two with a
    Sync between them (the Sync ends the first transaction). With
    PIZZAQUEUE_PREPARED_STATEMENTS off they go as one simple query instead.
    """
    text = "; ".join([statement, "COMMIT", queries["wait_for_flush"]])
    if not settings.PIZZAQUEUE_PREPARED_STATEMENTS:
        with connection.cursor() as cursor:
            cursor.execute(text, params)
            return cursor.fetchall()
    connection.ensure_connection()
    raw = connection.connection
    raw.prepare_threshold = 0

    def pipelined(_text: str, params: Any, _many: bool, _context: Any) -> list[tuple[Any, ...]]:
        with connection.wrap_database_errors:
            first, flush = psycopg.Cursor(raw), psycopg.Cursor(raw)
            with raw.pipeline() as pipeline:
                first.execute(statement, params, prepare=True)
                pipeline.sync()
                flush.execute(queries["wait_for_flush"], prepare=True)
            return first.fetchall()

    # Through the connection's execute wrappers and its query log, as Django's own cursors
    # run theirs: whoever watches this connection's statements sees the two as one.
    execute: Callable[..., list[tuple[Any, ...]]] = pipelined
    for wrapper in reversed(connection.execute_wrappers):
        execute = functools.partial(wrapper, execute)
    started = time.monotonic()
    rows = execute(text, params, False, {"connection": connection, "cursor": None})
    if connection.queries_logged:
        connection.queries_log.append({"sql": text, "time": f"{time.monotonic() - started:.3f}"})
    return rows


def prepared_cursor() -> CursorWrapper:
    """A cursor of the default connection whose statements PostgreSQL parses and plans
    once per connection, for the statements a worker runs thousands of times.

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


def rows(model: type[M], cursor: Any) -> list[M]:
    """The cursor's remaining rows as instances of `model`, matched by column name
    (columns the model does not have, such as a `pg_notify(…)`, are left out)."""
    names = tuple(d[0] for d in cursor.description)
    return [load(model, row, names) for row in cursor.fetchall()]


def load(model: type[M], row: Sequence[Any], names: tuple[str, ...] | None = None) -> M:
    """An instance from one row: its columns named by `names` (a cursor's description),
    or without names the model's concrete columns in field order, extra ones after them ignored."""
    # Optimization: the connection itself, not the `connection` proxy, whose every attribute access is a lookup.
    db = connections[DEFAULT_DB_ALIAS]
    positions, attnames, converters = _loading(model, db.vendor, names)
    values = [row[p] for p in positions]
    for n, convert, col in converters:
        values[n] = convert(values[n], col, db)
    return model.from_db(db.alias, attnames, values)


@cache
def _loading(
    model: type[Model], vendor: str, names: tuple[str, ...] | None
) -> tuple[list[int], list[str], list[tuple[int, Callable[..., Any], Any]]]:
    fields = model._meta.concrete_fields
    if names is None:
        positions = list(range(len(fields)))
    else:
        where = {name: n for n, name in enumerate(names)}
        missing = [column(f) for f in fields if column(f) not in where]
        if missing:
            raise ValueError(f"the row has no {', '.join(missing)} for {model.__name__}")
        positions = [where[column(f)] for f in fields]
    converters = []
    for n, field in enumerate(fields):
        col = field.get_col(model._meta.db_table)
        for convert in connection.ops.get_db_converters(col) + col.get_db_converters(connection):
            converters.append((n, convert, col))
    return positions, [f.attname for f in fields], converters
