"""The one clock every decision is taken by: the database's.

Workers run on machines of their own, with clocks of their own, and a
worker whose clock is a minute fast must neither look dead to the others
nor see everyone else as dead when it is the monitor. So every time that is
compared with another one — a lease's expiry, a heartbeat, eligibility,
backoff, an order's placed/claimed/done time — is read from PostgreSQL's
clock: inside the statement that uses it where the statement is ours
(`sql.CLAIM`, `sql.COMPLETE`, `sql.PLACE`: `statement_timestamp()`), and
otherwise once per operation with `now()` below. A process's own clock is
for its local sleeps and timeouts only (`time.monotonic()`).

SQLite has no server: every process that opens the file is on the machine
that holds it, so that machine's clock is the database's.
"""

from __future__ import annotations

from datetime import datetime
from typing import TypeVar

from django.db import connection
from django.db.models import QuerySet
from django.db.models.functions import Now
from django.utils import timezone

from workers import sql

Q = TypeVar("Q", bound=QuerySet)


def now() -> datetime:
    """The database's current time (PostgreSQL: the server's `statement_timestamp()`)."""
    if connection.vendor != "postgresql":
        return timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(sql.queries["clock"])
        return cursor.fetchone()[0]


def with_db_now(queryset: Q) -> Q:
    """Each row with the database's time of its query (`db_now`): ages and freshness on a
    page of rows are the database's, at no query of their own."""
    return queryset.annotate(db_now=Now())
