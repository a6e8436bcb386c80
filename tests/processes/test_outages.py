"""An outage is not a death (SPEC §4.11): the database away for a while, as every
kitchen sees it, cancels nothing, charges no attempt, and the kitchens carry on
as themselves once it is back.

On PostgreSQL the test database refuses connections and drops the ones it has,
as a restart does (`ALLOW_CONNECTIONS false` and `pg_terminate_backend`, on this
test's own database only); on SQLite another process holds the write lock, the
one way a single file goes away from its writers. And on PostgreSQL it is
black-holed: kitchens on hosts of their own (tests/hosts.py) lose their links
together, as when the database's network fails, so packets vanish and nobody
is told.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest
from django.db import connection

from tests.base import make_worker, wait_until
from tests.conftest import FAST_WORKER_ENV, WorkerProcesses, database_url
from tests.factory import make_order
from tests.hosts import CHAIN, Hosts
from workers import clock
from workers.models import Order, OrderEvent, Worker

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.processes]

TIMEOUT = float(FAST_WORKER_ENV["PIZZAQUEUE_HEARTBEAT_TIMEOUT"])


class Outage:
    """The test database away from every kitchen until `end`."""

    def __init__(self) -> None:
        self.name = connection.settings_dict["NAME"]
        self.lock: sqlite3.Connection | None = None

    def _maintenance(self) -> psycopg.Connection:
        return psycopg.connect(database_url().rsplit("/", 1)[0] + "/postgres", autocommit=True)

    def begin(self) -> None:
        connection.close()
        if connection.vendor == "postgresql":
            with self._maintenance() as admin:
                admin.execute(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS false')
                admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", [self.name])
        else:
            self.lock = sqlite3.connect(self.name, timeout=30, isolation_level=None)
            self.lock.execute("BEGIN IMMEDIATE")

    def end(self) -> None:
        if connection.vendor == "postgresql":
            with self._maintenance() as admin:
                admin.execute(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS true')
        elif self.lock is not None:
            self.lock.execute("ROLLBACK")
            self.lock.close()
            self.lock = None


@pytest.fixture
def outage() -> Iterator[Outage]:
    away = Outage()
    yield away
    away.end()


# The defaults' shape: a beat every third of the timeout (5 s and 15 s), where a beat is
# rare enough that the leases could lapse before the next one after an outage.
DEFAULTS_SHAPED = {"PIZZAQUEUE_HEARTBEAT_INTERVAL": "1", "PIZZAQUEUE_HEARTBEAT_TIMEOUT": "3"}


@pytest.mark.parametrize(
    ("share", "clocks"),
    [
        (0.5, {}),
        (0.75, {}),
        (2.0, {}),
        pytest.param(0.5, DEFAULTS_SHAPED, id="0.5-defaults-shaped"),
        pytest.param(0.75, DEFAULTS_SHAPED, id="0.75-defaults-shaped"),
    ],
)
def test_an_outage_cancels_nothing_and_charges_nothing(
    worker_processes: WorkerProcesses, outage: Outage, share: float, clocks: dict[str, str]
) -> None:
    timeout = float(clocks.get("PIZZAQUEUE_HEARTBEAT_TIMEOUT", TIMEOUT))
    for name in ("shop-1", "shop-2"):
        worker_processes.start("--name", name, "--concurrency", "2", "--handler", "tests.handlers.slow", **clocks)
    wait_until(lambda: Worker.objects.filter(status=Worker.Status.ALIVE).count() == 2, what="two kitchens")
    # Takeaway orders at both shops: two in each oven (4 s each), two waiting, one scheduled for tonight.
    orders = [make_order(kind="takeaway", shop=shop, note="4") for shop in ("shop-1", "shop-2") for _ in range(4)]
    tonight = make_order(kind="takeaway", shop="shop-1", not_before=(clock.now() + timedelta(hours=6)).isoformat())
    wait_until(lambda: Order.objects.filter(status="preparing", stage="oven").count() == 4, what="four in the ovens")

    outage.begin()
    time.sleep(share * timeout)
    outage.end()
    connection.close()

    wait_until(
        lambda: Order.objects.filter(pk__in=[o.pk for o in orders], status="done").count() == len(orders),
        timeout=60,
        what="every order made",
    )
    kinds = set(OrderEvent.objects.values_list("kind", flat=True))
    assert kinds & {"cancelled", "failed", "retried", "reassigned"} == set()
    assert set(Order.objects.filter(pk__in=[o.pk for o in orders]).values_list("attempts", flat=True)) == {1}
    scheduled = Order.objects.get(pk=tonight.pk)
    assert (scheduled.status, scheduled.attempts) == ("queued", 0)
    # The same two kitchens, neither declared dead nor started again.
    assert sorted(Worker.objects.values_list("name", "incarnation", "status")) == [
        ("shop-1", 1, "alive"),
        ("shop-2", 1, "alive"),
    ]


def test_a_black_holed_database_cancels_nothing_and_charges_nothing_once_the_links_heal(hosts: Hosts) -> None:
    timeout = float(CHAIN["PIZZAQUEUE_HEARTBEAT_TIMEOUT"])
    kitchens = [hosts.add(name) for name in ("shop-1", "shop-2")]
    for kitchen in kitchens:
        kitchen.start_worker("--name", kitchen.name, "--concurrency", "2", "--handler", "tests.handlers.slow", **CHAIN)
    wait_until(lambda: Worker.objects.filter(status=Worker.Status.ALIVE).count() == 2, what="two kitchens")
    orders = [make_order(kind="takeaway", shop=shop, note="4") for shop in ("shop-1", "shop-2") for _ in range(4)]
    tonight = make_order(kind="takeaway", shop="shop-2", not_before=(clock.now() + timedelta(hours=6)).isoformat())
    wait_until(lambda: Order.objects.filter(status="preparing", stage="oven").count() == 4, what="four in the ovens")

    for kitchen in kitchens:
        kitchen.cut()
    time.sleep(2 * timeout)
    healed = time.monotonic()
    for kitchen in kitchens:
        kitchen.heal()

    wait_until(
        lambda: OrderEvent.objects.filter(kind="claimed").count() > 4 or Order.objects.filter(status="done").exists(),
        timeout=30,
        what="a kitchen working again",
    )
    back_after = time.monotonic() - healed
    wait_until(
        lambda: Order.objects.filter(pk__in=[o.pk for o in orders], status="done").count() == len(orders),
        timeout=60,
        what="every order made",
    )
    kinds = set(OrderEvent.objects.values_list("kind", flat=True))
    assert kinds & {"cancelled", "failed", "retried", "reassigned"} == set(), hosts.logs()
    assert set(Order.objects.filter(pk__in=[o.pk for o in orders]).values_list("attempts", flat=True)) == {1}
    assert Order.objects.get(pk=tonight.pk).status == "queued"
    assert sorted(Worker.objects.values_list("name", "incarnation", "status")) == [
        ("shop-1", 1, "alive"),
        ("shop-2", 1, "alive"),
    ]
    assert back_after < 3 * timeout, back_after


def test_a_kitchen_silent_while_the_database_was_up_is_still_declared_dead(
    worker_processes: WorkerProcesses,
) -> None:
    # The other side of the rule: an outage of one kitchen alone, seen by a monitor in touch.
    watcher = worker_processes.start("--name", "watcher")
    wait_until(lambda: Worker.objects.filter(name="watcher", status="alive").exists(), what="the watcher")
    silent = make_worker("silent")  # registered, and never heartbeats
    wait_until(
        lambda: Worker.objects.filter(pk=silent.pk, status="dead").exists(),
        timeout=3 * TIMEOUT + 2,
        what="the silent kitchen declared dead",
    )
    assert watcher.poll() is None
