"""The database fails over and nothing confirmed is lost (a Patroni cluster, tests/cluster.py).

A rush goes through the API of two daphnes to kitchens, all on the cluster's
multi-host DATABASE_URL; the primary's postmaster is SIGKILLed mid-rush and
Patroni promotes the synchronous standby, whose clock is a few seconds ahead
of (or behind) the old primary's. Every order that got a 2xx must be on the
new primary, done exactly once, none cancelled or failed; the API must take
orders again, and the kitchens claim again, within 15 s of the promotion.

A primary that is only cut off (its link down) must confirm nothing: a client
on its own machine, still connected to it, keeps placing orders through the
cut, and every order it was told is confirmed is on the new primary.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.db import connection

from tests.base import ROOT
from tests.cluster import INSTALL, Cluster, Node, missing
from tests.conftest import Daphne, WorkerProcesses
from tests.factory import order_data
from tests.webtier import post_order

pytestmark = pytest.mark.processes

DATABASE = "pizzaqueue"
# The kitchens' clocks: beats every second, and a kitchen counts as dead after 10 s
# without one, so a failover of a few seconds plus a clock that jumped 4 s is ridden out.
KITCHEN_ENV = {
    "PIZZAQUEUE_HEARTBEAT_INTERVAL": "1",
    "PIZZAQUEUE_HEARTBEAT_TIMEOUT": "10",
    "PIZZAQUEUE_MONITOR_INTERVAL": "0.5",
}
# What a person or HAProxy would wait at most for the database to be back.
BACK_WITHIN = 15.0


def require_cluster() -> None:
    """Skip on SQLite (a cluster is PostgreSQL's) and where the stack is missing; in CI,
    which installs it (.ci/run), a missing stack fails instead."""
    if connection.vendor != "postgresql":
        pytest.skip("a PostgreSQL cluster: PostgreSQL only")
    reason = missing()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(f"{reason} ({INSTALL})")


def manage(url: str, *argv: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *argv],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


INTEGRATOR = """
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token
from orders import roles
from tests.base import in_role
print(Token.objects.create(user=in_role(User.objects.create_user("integrator"), roles.INTEGRATORS)).key)
"""


class Rush(threading.Thread):
    """An integrator placing orders one after another through one daphne, each with its own
    Idempotency-Key; a 2xx is a confirmation, anything else (a 5xx, no answer) is not."""

    def __init__(self, url: str, token: str, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.url, self.token, self.stop = url, token, stop
        self.confirmed: dict[str, str] = {}  # Idempotency-Key → order id
        self.answers: list[tuple[float, bool]] = []  # (monotonic time, confirmed)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                self.answers.append((time.monotonic(), self.place(str(uuid.uuid4()))))
                self.stop.wait(0.01)
        except BaseException as error:  # noqa: BLE001 - reported by the test
            self.error = error

    def place(self, key: str) -> bool:
        answer = post_order(self.url, self.token, key, order_data(area=f"area-{key[:2]}", note="0.02"))
        if answer is None:
            return False
        self.confirmed[key] = answer
        return True


def under_way(rushes: list[Rush], confirmed: int) -> bool:
    for rush in rushes:
        assert rush.error is None, rush.error
    return sum(len(rush.confirmed) for rush in rushes) >= confirmed


def ask(cluster: Cluster, query: str, *params: Any) -> list[tuple[Any, ...]] | None:
    """A query on the cluster's primary, or None while there is none to answer."""
    try:
        with cluster.connect(DATABASE) as conn:
            return conn.execute(query, params).fetchall()
    except psycopg.Error:
        return None


def promoted(node: Node) -> bool:
    try:
        with psycopg.connect(f"postgresql://postgres@{node.address}:5432/{DATABASE}", connect_timeout=1) as conn:
            return conn.execute("SELECT NOT pg_is_in_recovery()").fetchone() == (True,)
    except psycopg.Error:
        return False


@pytest.fixture
def shop(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Cluster, list[Daphne], WorkerProcesses]]:
    """The cluster (its standby's clock off by the test's parameter, if any), migrated, with
    two daphnes and two kitchens on its multi-host URL; all of it gone afterwards."""
    require_cluster()
    clock = getattr(request, "param", None)
    # Three nodes: the synchronous standby is promoted and the third takes its place, so
    # commits go on while the old primary rejoins (with two, they wait for it: strict mode).
    # Both standbys have the shifted clock, so whichever is promoted brings it.
    cluster = Cluster(size=3, clocks={"node2": clock, "node3": clock} if clock else {})
    cluster.up()
    daphnes: list[Daphne] = []
    kitchens = WorkerProcesses(tmp_path, database=cluster.url(DATABASE))
    try:
        cluster.create_database(DATABASE)
        manage(cluster.url(DATABASE), "migrate", "-v", "0")
        for n in (1, 2):
            # Web processes as docs/operations.md runs them: connections from psycopg's pool.
            daphne = Daphne(tmp_path, name=f"web{n}", database=cluster.url(DATABASE, pool="true"))
            daphne.start()
            daphnes.append(daphne)
        for name in ("shop-a", "shop-b"):
            kitchens.start("--name", name, "--handler", "tests.handlers.slow", "--concurrency", "4", **KITCHEN_ENV)
        yield cluster, daphnes, kitchens
    finally:
        kitchens.stop_all()
        for daphne in daphnes:
            daphne.stop()
        for log in cluster.root.glob("*.log"):  # kept with the test's own logs
            (tmp_path / f"cluster-{log.name}").write_bytes(log.read_bytes())
        cluster.teardown()


CLAIMS = "SELECT count(*) FROM orders_orderevent WHERE kind = 'claimed'"


def rush(cluster: Cluster, daphnes: list[Daphne], stop: threading.Event) -> list[Rush]:
    token = manage(cluster.url(DATABASE), "shell", "-v", "0", "-c", INTEGRATOR).strip()
    rushes = [Rush(daphnes[n % 2].url("/api/orders/"), token, stop) for n in range(4)]
    for each in rushes:
        each.start()
    return rushes


def recovery(cluster: Cluster, rushes: list[Rush], failed: float, promotion: float) -> dict[str, float]:
    """Waits for the kitchens' first claim and the API's first confirmation on the new
    primary, lets the rush go on a while, stops it: the failover's figures."""
    claims = None
    while claims is None and time.monotonic() - promotion < 30:
        claims = ask(cluster, CLAIMS)
    assert claims is not None, cluster.logs()[-6000:]
    cluster.wait(
        lambda: (now := ask(cluster, CLAIMS)) is not None and now[0][0] > claims[0][0], 60, "a claim on the new primary"
    )
    first_claim = time.monotonic() - promotion
    cluster.wait(
        lambda: any(ok and at > promotion for r in rushes for at, ok in r.answers), 60, "an order confirmed again"
    )
    time.sleep(3)  # the rush goes on a while on the new primary
    rushes[0].stop.set()
    for each in rushes:
        each.join(timeout=30)
        assert each.error is None, each.error
    # An answer's time is when it arrived: one sent before the failure may arrive after it.
    # So the window the API confirmed nothing is the longest silence between confirmations.
    confirmations = sorted(at for each in rushes for at, ok in each.answers if ok and at > failed - 1)
    silence = max(later - earlier for earlier, later in itertools.pairwise(confirmations))
    first_after_promotion = min(at for at in confirmations if at > promotion)
    return {
        "promoted_after_failure_s": round(promotion - failed, 2),
        "unavailable_s": round(silence, 2),
        "api_back_after_promotion_s": round(first_after_promotion - promotion, 2),
        "first_claim_after_promotion_s": round(first_claim, 2),
    }


def every_order_done_once(cluster: Cluster, confirmed: dict[str, str]) -> dict[str, tuple[str, str, int]]:
    """Every confirmed order (Idempotency-Key → id) is on the primary, and every order there is
    done exactly once (none cancelled, failed or left): the orders found, by key."""
    cluster.wait(
        lambda: (
            (left := ask(cluster, "SELECT count(*) FROM orders_order WHERE status <> 'done'")) is not None
            and left[0][0] == 0
        ),
        90,
        "every order done",
    )
    rows = ask(
        cluster,
        "SELECT o.idempotency_key, o.id::text, o.status,"
        " (SELECT count(*) FROM orders_orderevent e WHERE e.order_id = o.id AND e.kind = 'done')"
        " FROM orders_order o",
    )
    assert rows is not None
    found = {key.rpartition(":")[2]: (order, status, dones) for key, order, status, dones in rows}
    lost = [key for key in confirmed if key not in found]
    assert not lost, f"{len(lost)} of {len(confirmed)} confirmed orders lost"
    assert all(found[key][0] == order for key, order in confirmed.items())
    assert {status for _order, status, _dones in found.values()} == {"done"}
    assert {dones for _order, _status, dones in found.values()} == {1}, "an order done twice, or never"
    return found


@pytest.mark.parametrize("shop", ["+4s", "-4s"], indirect=True, ids=["new-clock-ahead", "new-clock-behind"])
def test_a_primary_killed_mid_rush_fails_over_to_the_standby_and_loses_no_confirmed_order(
    shop: tuple[Cluster, list[Daphne], WorkerProcesses],
) -> None:
    cluster, daphnes, kitchens = shop
    old, new = cluster.leader(), cluster.sync_standby()
    assert old is not None and new is not None, cluster.members()
    rushes = rush(cluster, daphnes, threading.Event())
    cluster.wait(lambda: under_way(rushes, 150), 60, "the rush under way")
    done_before = ask(cluster, "SELECT count(*) FROM orders_order WHERE status = 'done'")
    assert done_before is not None and done_before[0][0] > 0, kitchens.logs()[-3000:]

    killed = time.monotonic()
    cluster.kill_postmaster(old)
    cluster.wait(lambda: promoted(new), 60, "the standby promoted")
    figures = recovery(cluster, rushes, killed, time.monotonic())

    print(f"\nfailover: {figures}")  # noqa: T201 - the figures docs/operations.md quotes
    assert figures["api_back_after_promotion_s"] <= BACK_WITHIN, figures
    assert figures["first_claim_after_promotion_s"] <= BACK_WITHIN, figures
    confirmed = {key: order for each in rushes for key, order in each.confirmed.items()}
    found = every_order_done_once(cluster, confirmed)
    assert cluster.leader() is new, cluster.members()
    assert all(proc.poll() is None for proc in kitchens.procs), kitchens.logs()[-3000:]
    print(f"failover: {len(confirmed)} confirmed, {len(found)} found, all done once")  # noqa: T201 - likewise


def test_a_primary_cut_off_mid_rush_confirms_nothing_and_its_standby_takes_over(
    shop: tuple[Cluster, list[Daphne], WorkerProcesses], tmp_path: Path
) -> None:
    cluster, daphnes, kitchens = shop
    old = cluster.leader()
    assert old is not None, cluster.members()
    # A client on the old primary's own machine, connected to it alone: it can reach
    # it through the cut, as a process left behind on that machine would.
    stale_log = tmp_path / "stale.txt"
    stale = subprocess.Popen(  # noqa: S603 - our own command
        old.command([sys.executable, "-m", "tests.stale_client", str(stale_log), "35"]),
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": cluster.node_url(old, DATABASE)},
        stdout=open(tmp_path / "stale.log", "wb"),  # noqa: SIM115 - lives with the process
        stderr=subprocess.STDOUT,
    )
    try:
        rushes = rush(cluster, daphnes, threading.Event())
        cluster.wait(lambda: under_way(rushes, 100) and len(stale_lines(stale_log)[0]) >= 20, 60, "both under way")

        cut = time.monotonic()
        cluster.cut(old)
        others = [node for node in cluster.nodes if node is not old]
        cluster.wait(lambda: any(promoted(node) for node in others), 60, "a standby promoted")
        figures = recovery(cluster, rushes, cut, time.monotonic())
        assert stale.wait(timeout=60) == 0, (tmp_path / "stale.log").read_text()
    finally:
        if stale.poll() is None:
            stale.kill()
            stale.wait()
    cluster.heal(old)
    cluster.wait(cluster.synchronous, 90, "the old primary back as a standby")

    print(f"\ncut link: {figures}")  # noqa: T201 - the figures docs/operations.md quotes
    assert figures["api_back_after_promotion_s"] <= BACK_WITHIN, figures
    assert figures["first_claim_after_promotion_s"] <= BACK_WITHIN, figures
    stale_confirmed, stale_errors = stale_lines(stale_log)
    # Cut off, the old primary has no synchronous standby to acknowledge a commit, and
    # Patroni demotes it once it cannot reach the DCS: its client kept trying and was told no.
    # (A second of grace: a commit acknowledged just before the cut is written down just after it.)
    assert [key for at, key in stale_confirmed if at > cut + 1.0] == [], "the cut-off primary confirmed an order"
    assert any(at > cut for at in stale_errors), "the stale client never tried the cut-off primary"
    confirmed = {key: order for each in rushes for key, order in each.confirmed.items()}
    found = every_order_done_once(cluster, confirmed)
    assert {key for _at, key in stale_confirmed} <= set(found), "an order the old primary confirmed is lost"
    assert all(proc.poll() is None for proc in kitchens.procs), kitchens.logs()[-3000:]
    print(  # noqa: T201 - likewise
        f"cut link: {len(confirmed)} + {len(stale_confirmed)} confirmed, {len(found)} found, all done once;"
        f" the cut-off primary refused {sum(at > cut for at in stale_errors)} after the cut"
    )


def stale_lines(path: Path) -> tuple[list[tuple[float, str]], list[float]]:
    """The stale client's confirmations (time, key) and the times of its failures."""
    confirmed: list[tuple[float, str]] = []
    errors: list[float] = []
    for line in path.read_text().splitlines() if path.exists() else []:
        at, _space, rest = line.partition(" ")
        if rest.startswith("error"):
            errors.append(float(at))
        else:
            confirmed.append((float(at), rest))
    return confirmed, errors
