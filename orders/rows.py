"""Model instances from rows of fixed SQL, as the ORM would load them.

The hot paths that run one SQL text over and over (the claim, the API's
token check) skip the ORM's per-query work of compiling it; what the ORM
would still do with the rows, this does too: every converter the backend
and the fields apply (SQLite's datetimes, JSON), then `Model.from_db`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache
from typing import Any, TypeVar

from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.db.models import Model

M = TypeVar("M", bound=Model)


def columns(model: type[Model], alias: str = "") -> str:
    """The model's concrete columns, in field order (the order `load` expects), qualified by `alias` if given."""
    prefix = f"{alias}." if alias else ""
    return ", ".join(f"{prefix}{connection.ops.quote_name(f.column)}" for f in model._meta.concrete_fields)


def load(model: type[M], row: Sequence[Any]) -> M:
    """An instance from the model's columns in field order (extra columns after them are ignored)."""
    db = connections[DEFAULT_DB_ALIAS]  # once: each access through the `connection` proxy is a lookup
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
