"""Kitchens on machines of their own: wrong clocks, a killed monitor, a cut link (PostgreSQL, as root).

    python bench/clocks.py [--rounds 3] [--together 30]

Kitchens run as separate hosts, as in tests/processes/test_many_machines.py (tests/hosts.py:
a network namespace each, its own link to the database and its own wall clock
through libfaketime; needs `apt-get install -y faketime iproute2`), at a real
chain's heartbeat clocks: 1 s beats, a 3 s timeout, a 0.5 s monitor tick.

- together: kitchens 20 s behind, true and 60 s ahead share a trickle of
  orders; workers declared dead, orders per kitchen, each done once;
- recovery: the kitchen 60 s ahead, the elected monitor, is SIGKILLed with an
  order in its oven; seconds (by the database's clock) until the order is
  back with another kitchen, against timeout + one tick;
- cut: a kitchen's link is cut mid-order; the gap between its handler
  stopping and another kitchen's handler starting the order (positive: no
  overlap), and seconds until it rejoins once the link heals.

Prints one JSON object, then a table.
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import harness

# The chain's heartbeat clocks, as tests/hosts.py's CHAIN (that module needs Django set up first).
CHAIN = {
    "PIZZAQUEUE_HEARTBEAT_INTERVAL": "1",
    "PIZZAQUEUE_HEARTBEAT_TIMEOUT": "3",
    "PIZZAQUEUE_MONITOR_INTERVAL": "0.5",
}

TIMEOUT = float(CHAIN["PIZZAQUEUE_HEARTBEAT_TIMEOUT"])
TICK = float(CHAIN["PIZZAQUEUE_MONITOR_INTERVAL"])


def together(tmp: Path, seconds: float) -> dict[str, Any]:
    from django.db.models import Count

    from orders.intake import clean_order_request
    from tests.conftest import WorkerProcesses
    from tests.factory import order_data
    from tests.hosts import Hosts
    from workers import queue
    from workers.models import OrderEvent, Worker

    hosts, local = Hosts(tmp / "together"), WorkerProcesses(tmp)
    noop = ("--handler", "orders.handlers.noop", "--concurrency", "4")
    try:
        hosts.add("behind", clock="-20s").start_worker("--name", "shop-behind", *noop, **CHAIN)
        hosts.add("ahead", clock="+60s").start_worker("--name", "shop-ahead", *noop, **CHAIN)
        local.start("--name", "shop-true", *noop, **CHAIN)
        harness.wait_until(lambda: Worker.objects.filter(status="alive").count() == 3, 60, what="three kitchens")
        placed, end = 0, time.monotonic() + seconds
        while time.monotonic() < end:
            queue.place_many([clean_order_request(order_data(area=f"area-{placed + n}")) for n in range(3)])
            placed += 3
            time.sleep(0.5)
        harness.wait_until(lambda: not harness.unfinished(), 60, what="every order done")
        done = OrderEvent.objects.filter(kind=OrderEvent.Kind.DONE)
        return {
            "seconds": seconds,
            "orders": placed,
            "declared_dead": Worker.objects.filter(status=Worker.Status.DEAD).count(),
            "orders_per_kitchen": dict(done.values_list("worker__name").annotate(n=Count("id"))),
            **harness.check_exactly_once(placed),
        }
    finally:
        local.stop_all()
        hosts.teardown()


def recovery(tmp: Path, rounds: int) -> dict[str, Any]:
    from django.db import connection

    from tests.base import area_owned_by
    from tests.conftest import WorkerProcesses
    from tests.factory import make_order
    from tests.hosts import Hosts
    from workers.models import MonitorLease, OrderEvent, Worker

    seconds: list[float] = []
    for number in range(rounds):
        hosts, local = Hosts(tmp / f"recovery-{number}"), WorkerProcesses(tmp)
        try:
            ahead = hosts.add("ahead", clock="+60s").start_worker(
                "--name", f"shop-ahead-{number}", "--handler", "tests.handlers.slow", **CHAIN
            )
            harness.wait_until(
                lambda n=number: MonitorLease.objects.filter(holder__name=f"shop-ahead-{n}").exists(),
                60,
                what="monitor",
            )
            local.start("--name", f"shop-true-{number}", "--handler", "orders.handlers.noop", **CHAIN)
            harness.wait_until(lambda: Worker.objects.filter(status="alive").count() == 2, 60, what="two kitchens")
            baker = Worker.objects.get(name=f"shop-ahead-{number}", status="alive")
            order = make_order(area=area_owned_by(baker), note="60")
            harness.wait_until(lambda o=order: type(o).objects.filter(pk=o.pk, stage="oven").exists(), 30, what="oven")
            os.kill(ahead.pid, signal.SIGKILL)
            with connection.cursor() as cursor:
                cursor.execute("SELECT clock_timestamp()")
                killed_at = cursor.fetchone()[0]
            harness.wait_until(
                lambda o=order: OrderEvent.objects.filter(order=o, kind="reassigned").exists(), 60, what="moved"
            )
            moved = OrderEvent.objects.get(order=order, kind="reassigned")
            seconds.append((moved.created_at - killed_at).total_seconds())
        finally:
            local.stop_all()
            hosts.teardown()
    return {
        "rounds": rounds,
        "bound_s": TIMEOUT + TICK,
        "seconds": [round(s, 2) for s in seconds],
        "p50_s": round(harness.percentile(seconds, 50), 2),
        "max_s": round(max(seconds), 2),
    }


def cut(tmp: Path) -> dict[str, Any]:
    from tests.base import area_owned_by
    from tests.conftest import WorkerProcesses
    from tests.factory import make_order
    from tests.handlers import bakes
    from tests.hosts import Hosts
    from workers.models import Order, Worker

    log = str(tmp / "bakes.log")
    hosts, local = Hosts(tmp / "cut"), WorkerProcesses(tmp)
    logged = ("--handler", "tests.handlers.logged")
    try:
        island = hosts.add("island")
        island.start_worker("--name", "island", *logged, **CHAIN, PIZZAQUEUE_TEST_BAKE_LOG=log)
        local.start("--name", "mainland", *logged, **CHAIN, PIZZAQUEUE_TEST_BAKE_LOG=log)
        harness.wait_until(lambda: Worker.objects.filter(status="alive").count() == 2, 60, what="two kitchens")
        first = Worker.objects.get(name="island", status="alive")
        order = make_order(area=area_owned_by(first), note="8")
        harness.wait_until(lambda: Order.objects.filter(pk=order.pk, stage="oven").exists(), 30, what="oven")
        island.cut()
        harness.wait_until(lambda: len(bakes(log).get(str(order.id), [])) == 2, 60, what="baked elsewhere")
        (stopped, started) = sorted(bakes(log)[str(order.id)])
        island.heal()
        healed = time.time()
        rejoined = harness.wait_until(
            lambda: Worker.objects.filter(name="island", status="alive", incarnation__gt=first.incarnation).exists(),
            60,
            what="rejoined",
        )
        return {
            "gap_between_bakes_s": round(started[0] - stopped[1], 2),
            "rejoined_after_heal_s": round(rejoined - healed, 2),
        }
    finally:
        local.stop_all()
        hosts.teardown()


def measure(db: harness.BenchDatabase, rounds: int, seconds: float) -> dict[str, Any]:
    from tests.hosts import missing

    why = missing()
    if why:
        raise SystemExit(f"bench/clocks.py: {why}")
    tmp = Path(tempfile.mkdtemp(prefix="pizzaqueue-bench-clocks-"))
    for part in ("together", *(f"recovery-{n}" for n in range(rounds)), "cut"):
        (tmp / part).mkdir()
    db.fresh()
    result = {"together": together(tmp, seconds)}
    db.fresh()
    result["recovery"] = recovery(tmp, rounds)
    db.fresh()
    result["cut"] = cut(tmp)
    return result


def main() -> None:
    p = harness.parser(__doc__.splitlines()[0])
    p.set_defaults(db="postgres")
    p.add_argument("--rounds", type=int, default=3, help="Monitor kills (default: %(default)s).")
    p.add_argument("--together", type=float, default=30.0, help="Seconds the three clocks share orders.")
    args = p.parse_args()
    started = time.monotonic()
    results = harness.run_per_engine(args, lambda db: measure(db, args.rounds, args.together))
    config = {"chain": CHAIN, **harness.machine(), "seconds": round(time.monotonic() - started, 1)}
    headers = ["db", "declared dead", "orders per kitchen", "recovery p50 / max s (bound)", "cut: gap s", "rejoin s"]
    rows = [
        [
            engine,
            r["together"]["declared_dead"],
            " / ".join(f"{k} {n}" for k, n in sorted(r["together"]["orders_per_kitchen"].items())),
            f"{r['recovery']['p50_s']} / {r['recovery']['max_s']} ({r['recovery']['bound_s']})",
            r["cut"]["gap_between_bakes_s"],
            r["cut"]["rejoined_after_heal_s"],
        ]
        for engine, r in results.items()
    ]
    harness.report("clocks", args, results, config, rows, headers)


if __name__ == "__main__":
    main()
