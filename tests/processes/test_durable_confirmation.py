"""Confirmed means durable (SPEC §4.1), on PostgreSQL, whichever way a delivery
order waits for the disk (`workers.queue.intake.place_in_one_statement`): its
statement committed synchronously, or, with PIZZAQUEUE_INTAKE_SHARED_FLUSH, committed
without waiting and its flush waited for after.

The proof pauses PostgreSQL's WAL writer (SIGSTOP), the process that would
otherwise flush an unwaited commit within a fraction of a second: while it
is paused, the log on disk grows only when a session waits for it. So an
order is confirmed durably exactly when, at the moment `place` returns, the
log on disk already reaches past the order's commit. The test first shows
that the pause works: a commit that does not wait stays off the disk.

Signalling the server's processes needs root (or the server's own user), so
this runs where CI allows it: PIZZAQUEUE_TEST_SIGNAL_POSTGRES=1.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.db import connection, transaction

from orders.intake import clean_order_request
from tests.conftest import signals_postgres
from tests.factory import order_data
from workers import queue
from workers.models import Order

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite commits synchronously: nothing to prove"),
    signals_postgres,
]


def one(query: str, *params: object) -> Any:
    with connection.cursor() as cursor:
        cursor.execute(query, params)
        return cursor.fetchone()[0]


@contextlib.contextmanager
def wal_writer_paused() -> Iterator[None]:
    pid = one("SELECT pid FROM pg_stat_activity WHERE backend_type = 'walwriter'")
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def on_disk(lsn: str) -> bool:
    return one("SELECT pg_current_wal_flush_lsn() >= %s::pg_lsn", lsn)


@contextlib.contextmanager
def log_position_after_the_order() -> Iterator[list[str]]:
    """Where the log ended right after this connection's statement that writes an order
    (past its commit record); the statements before it (the promise's quote) only read."""
    seen: list[str] = []

    def note(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        result = execute(sql, params, many, context)
        if not seen and "INSERT INTO orders_order" in sql:
            # A cursor of its own, so the statement's rows stay for its caller.
            seen.append(str(connection.connection.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0]))
        return result

    with connection.execute_wrapper(note):
        yield seen


@pytest.fixture
def unwaited_commit() -> Iterator[None]:
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE unwaited_commit (n int)")
    yield
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE unwaited_commit")


@pytest.mark.parametrize("shared_flush", [False, True], ids=["its own commit", "a shared flush"])
def test_a_placed_order_is_on_disk_when_place_returns(
    live_menu: None, unwaited_commit: None, settings: Any, shared_flush: bool
) -> None:
    settings.PIZZAQUEUE_INTAKE_SHARED_FLUSH = shared_flush
    request = clean_order_request(order_data())
    with wal_writer_paused():
        # The pause works: a commit that does not wait for the disk stays off it.
        with connection.cursor() as cursor:
            cursor.execute("SET synchronous_commit = off")
            cursor.execute("INSERT INTO unwaited_commit VALUES (1)")
            cursor.execute("RESET synchronous_commit")
        control = one("SELECT pg_current_wal_insert_lsn()::text")
        assert not on_disk(control), "the WAL writer still flushes: the test could not tell"

        with log_position_after_the_order() as seen:
            order, created = queue.place(request)

        assert created
        assert seen, "place wrote no order"
        assert on_disk(seen[0]), "place returned before its order was flushed to disk"
    assert Order.objects.filter(pk=order.pk).exists()


def test_a_retried_key_is_answered_only_once_the_first_order_is_on_disk(live_menu: None) -> None:
    request = clean_order_request(order_data())
    with wal_writer_paused():
        # The first request's commit is visible before its flush (as between the two
        # transactions of `sql.committed_then_flushed`): here it commits and nothing flushes it.
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL synchronous_commit = off")
            first, created = queue.place(request, idempotency_key="twice")
        committed = one("SELECT pg_current_wal_insert_lsn()::text")
        assert created
        assert not on_disk(committed), "the first order reached the disk anyway: the test could not tell"

        # The retry inside a caller's transaction, which writes nothing of its own:
        # its commit would not wait for the disk unless `place` makes it.
        with transaction.atomic():
            again, created = queue.place(request, idempotency_key="twice")

        assert (again.pk, created) == (first.pk, False)
        assert on_disk(committed), "the retry was confirmed before the first order was on disk"
