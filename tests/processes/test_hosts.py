"""The test kit of tests/hosts.py, proven on its own: kitchens as separate hosts.

A host has its own clock and reaches the database only over its own link,
which a test can cut and heal. The guarantees of a chain on many machines,
built on this kit, are in tests/processes/test_many_machines.py.
"""

from __future__ import annotations

import sys
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.db.models import Count
from django.utils import timezone

from orders.intake import clean_order_request
from tests.base import area_owned_by, wait_until
from tests.conftest import WorkerProcesses
from tests.factory import make_order, order_data
from tests.hosts import Host, Hosts
from workers import queue
from workers.models import Order, OrderEvent, Worker

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.processes]

PROBE = """
import sys, time
import psycopg
print(time.time(), time.monotonic(), flush=True)
try:
    with psycopg.connect(sys.argv[1], connect_timeout=2) as db:
        print(db.execute("SELECT 42").fetchone()[0])
except psycopg.OperationalError:
    print("unreachable")
"""

# Heartbeat clocks slack enough that these tests prove the kit itself (links that
# cut and heal, clocks that are wrong), with no verdict or lease expiry in the way:
# the engine's timing across hosts is tests/processes/test_many_machines.py's.
SLACK = {
    "PIZZAQUEUE_HEARTBEAT_INTERVAL": "0.5",
    "PIZZAQUEUE_HEARTBEAT_TIMEOUT": "120",
    "PIZZAQUEUE_MONITOR_INTERVAL": "0.5",
}


def probe(host: Host, url: str) -> tuple[float, float, str]:
    """The host's wall and monotonic clocks, and what the database answers it at `url`."""
    result = host.run([sys.executable, "-c", PROBE, url])
    assert result.returncode == 0, result.stderr
    clocks, answer = result.stdout.splitlines()
    wall, monotonic = (float(x) for x in clocks.split())
    return wall, monotonic, answer


def test_a_host_has_its_own_wall_clock_the_true_monotonic_clock_and_reaches_the_database_only_over_its_link(
    hosts: Hosts,
) -> None:
    ahead = hosts.add("ahead", clock="+60s")
    behind = hosts.add("behind", clock="-20s")

    for host, offset in ((ahead, 60), (behind, -20)):
        before = time.time(), time.monotonic()
        wall, monotonic, answer = probe(host, host.database_url())
        after = time.time(), time.monotonic()
        assert before[0] + offset - 0.5 <= wall <= after[0] + offset + 0.5
        assert before[1] <= monotonic <= after[1]
        assert answer == "42"

    # The database's own address is this namespace's loopback: not there on a host.
    local = connection.settings_dict
    assert probe(ahead, f"postgres://{local['USER']}@127.0.0.1:{local['PORT'] or 5432}/{local['NAME']}")[2] == (
        "unreachable"
    )
    ahead.cut()
    assert probe(ahead, ahead.database_url())[2] == "unreachable"
    assert probe(behind, behind.database_url())[2] == "42"
    ahead.heal()
    # A connection attempt made during the cut can still be in flight (its SYN waited
    # for the link), so the first one after the heal may fail: as on a real network.
    wait_until(lambda: probe(ahead, ahead.database_url())[2] == "42", timeout=15, what="the healed link")


def test_kitchens_on_hosts_with_wrong_clocks_do_orders_exactly_once_alongside_a_local_one(
    hosts: Hosts, worker_processes: WorkerProcesses
) -> None:
    noop = ("--handler", "orders.handlers.noop", "--concurrency", "4")
    hosts.add("ahead", clock="+60s").start_worker("--name", "shop-ahead", *noop, **SLACK)
    hosts.add("behind", clock="-20s").start_worker("--name", "shop-behind", *noop, **SLACK)
    worker_processes.start("--name", "shop-here", *noop, **SLACK)
    wait_until(lambda: Worker.objects.live().count() == 3, what="three live kitchens")
    wait_until(
        lambda: Worker.objects.live().filter(buckets__isnull=False).distinct().count() == 3,
        what="every kitchen owns buckets",
    )

    # Placed now, by this process: eligibility is the database's clock, whichever kitchen looks.
    queue.place_many([clean_order_request(order_data(area=f"area-{n}")) for n in range(90)])

    wait_until(lambda: Order.objects.filter(status=Order.Status.DONE).count() == 90, what="90 done orders")
    done = OrderEvent.objects.filter(kind=OrderEvent.Kind.DONE)
    assert done.count() == 90
    assert not done.values("order").annotate(n=Count("id")).filter(n__gt=1).exists()
    by_kitchen = dict(done.values_list("worker__name").annotate(n=Count("id")))
    assert set(by_kitchen) == {"shop-ahead", "shop-behind", "shop-here"}, by_kitchen
    assert not Worker.objects.filter(status=Worker.Status.DEAD).exists()


def test_a_kitchen_whose_link_is_cut_stops_heartbeating_and_works_again_once_it_heals(
    hosts: Hosts,
) -> None:
    host = hosts.add("island")
    host.start_worker("--name", "island", "--handler", "tests.handlers.slow", **SLACK)
    worker = wait_until(lambda: Worker.objects.live().filter(name="island").first(), what="the kitchen to join")
    assert isinstance(worker, Worker)
    baking = make_order(area=area_owned_by(worker), note="2")
    wait_until(lambda: Order.objects.filter(pk=baking.pk, stage="oven").exists(), what="the order in the oven")

    host.cut()
    frozen = Worker.objects.get(pk=worker.pk).last_heartbeat
    # Six intervals with no heartbeat: the kitchen is cut off, not merely slow.
    deadline = timezone.now() + timedelta(seconds=6 * float(SLACK["PIZZAQUEUE_HEARTBEAT_INTERVAL"]))
    while timezone.now() < deadline:
        assert Worker.objects.get(pk=worker.pk).last_heartbeat == frozen, "a heartbeat crossed a cut link"
        time.sleep(0.05)
    assert not Order.objects.filter(pk=baking.pk, status=Order.Status.DONE).exists()

    host.heal()
    wait_until(
        lambda: Worker.objects.live().filter(name="island", last_heartbeat__gt=frozen).exists(),
        timeout=60,
        what="a heartbeat after the link healed",
    )
    rejoined = Worker.objects.live().get(name="island")
    after = make_order(area=area_owned_by(rejoined), note="0")
    wait_until(
        lambda: Order.objects.filter(pk__in=[baking.pk, after.pk], status=Order.Status.DONE).count() == 2,
        timeout=30,
        what="both orders done",
    )
    for order in (baking, after):
        (done,) = OrderEvent.objects.filter(order=order, kind=OrderEvent.Kind.DONE).select_related("worker")
        assert done.worker is not None and done.worker.name == "island"
