"""The engine's hand-written statements, read from `queries.sql`, and how they run.

Each statement is written out whole, once, under a `-- name: …` header with a
comment saying why the ORM does not write it (procrastinate's `queries.sql`
layout); code calls it by name: `sql.queries["claim"]`. `rows` turns a
cursor's rows back into model instances with every converter the ORM would
apply, and `prepared_cursor` runs the workers' hottest statements prepared.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
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

# `place` as its own transaction, then a second one that waits for the log, sent in
# one simple query (one round trip). Optimization: the order's commit does not wait
# for its flush (`place` turns `synchronous_commit` off for it), so the workers see it
# at once; the flush is waited for before the caller is answered, so confirmed still
# means durable. A commit waits for the log up to its own record and the log is
# flushed in order, so the second commit flushes the first.
PLACE_THEN_FLUSH = "; ".join([queries["place"], "COMMIT", queries["wait_for_flush"]])


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
