"""PostgreSQL restarted in the middle of a rush (SPEC §4.4: a lost database
connection loses nothing): workers and the web process reconnect on their
own, and every order is done exactly once.

This test restarts the local PostgreSQL server, so it runs only where that is
allowed: CI sets PIZZAQUEUE_TEST_SIGNAL_POSTGRES=1 (and needs root and the
Debian `pg_ctlcluster` tool).
"""

from __future__ import annotations

import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection, connections
from django.db.models import Count

from orders.intake import clean_order_request
from tests.base import wait_until
from tests.conftest import Daphne, WorkerProcesses, signals_postgres
from tests.factory import order_data
from workers import queue
from workers.models import Order, OrderEvent

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.processes]

ORDERS = 1000


def restart_postgres() -> None:
    version = sorted(p.name for p in Path("/etc/postgresql").iterdir())[0]
    tool = shutil.which("pg_ctlcluster")
    assert tool, "pg_ctlcluster (Debian's postgresql-common) is needed to restart the server"
    subprocess.run([tool, "--skip-systemctl-redirect", version, "main", "restart"], check=True, timeout=60)


def health(daphne: Daphne) -> int:
    try:
        with urllib.request.urlopen(daphne.url("/healthz"), timeout=5) as response:  # noqa: S310 - our own server
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def count(status: str) -> int:
    try:
        return Order.objects.filter(status=status).count()
    except Exception:  # noqa: BLE001 - the server is restarting; ask again on the next poll
        connections.close_all()
        return -1


@signals_postgres
def test_a_database_restart_mid_rush_loses_nothing_and_bakes_nothing_twice(
    worker_processes: WorkerProcesses, daphne: Daphne
) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("SQLite has no server to restart")
    assert "postgresql" in settings.DATABASES["default"]["ENGINE"]
    daphne.start()
    for name in ("shop-a", "shop-b"):
        # Each order reports its oven stage and takes 50 ms: the kitchens are mid-write when the server goes.
        # Leases outlast the restart, so an attempt could only be charged by the kitchen's own writes failing.
        worker_processes.start(
            "--name", name, "--handler", "tests.handlers.slow", "--concurrency", "8", PIZZAQUEUE_HEARTBEAT_TIMEOUT="30"
        )
    # One attempt each: an attempt charged for the database's restart would dead-letter its order.
    queue.place_many(
        [clean_order_request(order_data(area=f"area-{n % 50}", note="0.05", max_attempts=1)) for n in range(ORDERS)]
    )
    wait_until(lambda: count(Order.Status.DONE) >= ORDERS // 10, what="the rush under way")
    assert health(daphne) == 200

    assert count(Order.Status.DONE) < ORDERS, "the rush ended before the restart: nothing would be proven"
    restart_postgres()
    connections.close_all()

    wait_until(lambda: count(Order.Status.DONE) == ORDERS, timeout=90, interval=0.2, what="every order done")
    wait_until(lambda: health(daphne) == 200, timeout=30, what="the web process answering again")
    assert all(proc.poll() is None for proc in worker_processes.procs), worker_processes.logs()[-3000:]
    # The kitchens really lost their connections, and carried on.
    assert "turn failed; reconnecting" in worker_processes.logs()
    done = OrderEvent.objects.filter(kind=OrderEvent.Kind.DONE)
    assert done.count() == ORDERS
    assert not done.values("order").annotate(n=Count("id")).filter(n__gt=1).exists()
    assert not Order.objects.exclude(status=Order.Status.DONE).exists()
