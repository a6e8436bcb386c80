"""The shop's hand-written statements, read from `queries.sql`, each called by name.

The engine's are in `workers/queries.sql`; the format and the reader are the
same (`workers.sql.read_queries`).
"""

from __future__ import annotations

from pathlib import Path

from django.db import connection

from workers.sql import read_queries

queries = read_queries(Path(__file__).with_name("queries.sql"))


def for_this_database(name: str) -> str:
    """The statement `name` as written for the default connection's engine (`name_postgresql` or `name_sqlite`)."""
    return queries[f"{name}_{connection.vendor}"]
