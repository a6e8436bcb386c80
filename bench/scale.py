"""A million finished orders: does the queue slow down as done orders pile up, and can they be purged live?

PostgreSQL only. Three states of one `orders_order` table, each measured the
same way (drain rate: one worker, noop orders placed in one transaction, the
median of several runs; pickup latency: one idle worker, orders placed one at
a time a fixed gap apart):

1. empty (a fresh database for every run);
2. with N finished orders (default 1,000,000) and their three events each
   already in it, written by one `INSERT ... SELECT ... FROM generate_series`
   per table and followed by `VACUUM ANALYZE`, the state autovacuum leaves;
3. after `manage.py purge --before` has deleted those N orders, before any
   VACUUM (the dead rows still in the table and its indexes).

The purge runs while orders keep arriving one at a time and an idle worker
claims them: its rate (orders deleted per second, their events with them) and
the pickup latency during the purge say whether claims keep flowing. Table
sizes and dead-row counts are recorded at each step, and a final VACUUM is
timed.

    .venv/bin/python bench/scale.py [--rows 1000000] [--orders 5000] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import harness

from bench.peers.watch import Watcher

DEFAULT_PG_URL = "postgres://postgres@127.0.0.1:5432/pizzaqueue_scale"
TABLES = ("orders_order", "orders_orderevent")
# Finished orders are placed from FILL_AGE_DAYS ago, one a second (a million
# seconds is under 12 days), so a cutoff PURGE_CUTOFF_DAYS ago takes them all
# and none of the orders the measurements place.
FILL_AGE_DAYS = 60
PURGE_CUTOFF_DAYS = 30


# --- Filling the table ----------------------------------------------------------------------


FILL_ORDERS = """
INSERT INTO orders_order (
    id, status, kind, items, note, customer_name, area, bucket, priority, rank, eligible_at,
    attempts, max_attempts, lease_token, lease_expires_at, stage, estimated_seconds, last_error,
    cancel_reason, idempotency_key, request_hash, created_at, claimed_at, finished_at,
    pinned_shop, worker_id
)
SELECT gen_random_uuid(), 'done', 'delivery', %(items)s::jsonb, '', 'Bench', '', n %% %(buckets)s, 0,
       (EXTRACT(EPOCH FROM t) * 1000000)::bigint, t,
       1, 3, NULL, NULL, '', %(seconds)s, '',
       '', NULL, '', t, t + interval '2 seconds', t + interval '5 minutes',
       '', %(worker)s
  FROM generate_series(1, %(rows)s) AS n,
       LATERAL (SELECT now() - make_interval(days => %(age)s) + n * interval '1 second' AS t) AS stamp
"""

# Each order's timeline as the queue writes it: placed, claimed, done.
FILL_EVENTS = """
INSERT INTO orders_orderevent (kind, created_at, stage, message, data, order_id, worker_id)
SELECT e.kind, o.created_at + e.after, '', e.message, e.data::jsonb, o.id,
       CASE WHEN e.kind = 'placed' THEN NULL ELSE o.worker_id END
  FROM orders_order o
 CROSS JOIN (VALUES ('placed', interval '0', 'Order confirmed.', '{}'),
                    ('claimed', interval '2 seconds', '', '{"attempt": 1}'),
                    ('done', interval '5 minutes', 'Ready!', '{}')) AS e(kind, after, message, data)
 WHERE o.finished_at < now() - make_interval(days => %(cutoff)s)
"""


def fill(rows: int, events: bool) -> dict[str, Any]:
    """N finished orders (and their events) in a few statements, then VACUUM ANALYZE."""
    from django.conf import settings
    from django.db import connection, transaction
    from django.utils import timezone

    from workers.models import Worker

    request = harness.order_requests(1)[0]
    then = timezone.now() - timedelta(days=FILL_AGE_DAYS)
    retired = Worker.objects.create(
        name="retired-kitchen",
        host="bench",
        status=Worker.Status.STOPPED,
        started_at=then,
        last_heartbeat=then,
        stopped_at=then,
    )
    started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            FILL_ORDERS,
            {
                "items": json.dumps(request.items),
                "buckets": settings.PIZZAQUEUE_BUCKETS,
                "seconds": 300,
                "worker": retired.pk,
                "rows": rows,
                "age": FILL_AGE_DAYS,
            },
        )
        if events:
            cursor.execute(FILL_EVENTS, {"cutoff": PURGE_CUTOFF_DAYS})
    inserted = time.perf_counter() - started
    vacuumed = vacuum()
    return {
        "rows": rows,
        "events": 3 * rows if events else 0,
        "insert_seconds": round(inserted, 1),
        "vacuum_analyze_seconds": vacuumed,
    }


def vacuum(analyze: bool = True) -> float:
    from django.db import connection

    started = time.perf_counter()
    with connection.cursor() as cursor:
        for table in TABLES:
            cursor.execute(f"VACUUM {'(ANALYZE) ' if analyze else ''}{table}")
    return round(time.perf_counter() - started, 1)


def sizes() -> dict[str, Any]:
    """Table and index sizes, with exact live and dead row counts (pgstattuple reads every page)."""
    from django.db import connection

    out: dict[str, Any] = {}
    with connection.cursor() as cursor:
        cursor.execute("CREATE EXTENSION IF NOT EXISTS pgstattuple")
        for table in TABLES:
            cursor.execute(
                "SELECT pg_relation_size(%s::regclass), pg_indexes_size(%s::regclass), s.tuple_count,"
                " s.dead_tuple_count, s.free_percent FROM pgstattuple(%s::regclass) s",
                [table, table, table],
            )
            heap, indexes, live, dead, free = cursor.fetchone()
            out[table] = {
                "heap_mb": round(heap / 2**20, 1),
                "indexes_mb": round(indexes / 2**20, 1),
                "live_rows": live,
                "dead_rows": dead,
                "free_percent": round(free, 1),
            }
    return out


def use(db: harness.BenchDatabase) -> None:
    """Point this process's connection at another benchmark database (same server)."""
    from django.db import connections

    connections.close_all()
    connections["default"].settings_dict["NAME"] = db.name


# --- Measurements ---------------------------------------------------------------------------------


def drain(db: harness.BenchDatabase, orders: int, timeout: float) -> dict[str, Any]:
    """One worker drains `orders` noop orders placed in one transaction."""
    from django.db import transaction

    from workers import queue

    requests = harness.order_requests(orders)
    with harness.WorkerProcesses(db, 1, concurrency=harness.CONCURRENCY, prefetch=harness.PREFETCH):
        with transaction.atomic():
            queue.place_many(requests)
        committed = time.time()
        ended = harness.wait_until(lambda: not harness.unfinished(), timeout, interval=0.01, what="the queue to drain")
    return {"seconds": round(ended - committed, 3), "orders_per_s": harness.rate(orders, ended - committed)}


def placing(db: harness.BenchDatabase, gap_ms: float, until: Any, limit: int, on_ready: Any = None) -> list[float]:
    """Place orders one at a time, `gap_ms` apart, until `until()` or `limit`, while one idle
    worker claims them; returns their pickup latencies (claimed_at - created_at) in ms.
    `on_ready()` runs once the worker is listening, just before the first order."""
    from django.utils import timezone

    from workers import queue
    from workers.models import Order

    request = harness.order_requests(1)[0]
    since = timezone.now()
    with harness.WorkerProcesses(db, 1, concurrency=harness.CONCURRENCY, prefetch=harness.PREFETCH):
        if on_ready is not None:
            on_ready()
        started = time.perf_counter()
        n = 0
        while n < limit and not until():
            queue.place(request)
            n += 1
            delay = started + n * gap_ms / 1000 - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        harness.wait_until(lambda: not harness.unfinished(), 60, what="every order to be picked up")
    stamps = Order.objects.filter(created_at__gte=since).values_list("created_at", "claimed_at")
    return [(claimed - created).total_seconds() * 1000 for created, claimed in stamps]


def latency_summary(latencies: list[float]) -> dict[str, Any]:
    return {
        "orders": len(latencies),
        **{f"p{p}_ms": round(harness.percentile(latencies, p), 2) for p in (50, 95, 99)},
        "max_ms": round(max(latencies), 2),
    }


def pickup(db: harness.BenchDatabase, args: argparse.Namespace) -> dict[str, Any]:
    return latency_summary(placing(db, args.gap_ms, lambda: False, args.pickup_orders))


def compare(empty: harness.BenchDatabase, full: harness.BenchDatabase, args: argparse.Namespace) -> dict[str, Any]:
    """Drain runs alternating between a fresh empty database and the full one, so that
    whatever else the machine does weighs on both alike; then pickup on each."""
    rates: dict[str, list[float]] = {"empty": [], "full": []}
    for _ in range(args.repeat):
        use(empty)
        empty.fresh()
        vacuum()  # the same treatment as the full table's
        rates["empty"].append(drain(empty, args.orders, args.timeout)["orders_per_s"])
        use(full)
        # The previous run's orders are done now: VACUUM ANALYZE as autovacuum would on a live database.
        vacuum()
        rates["full"].append(drain(full, args.orders, args.timeout)["orders_per_s"])
    out: dict[str, Any] = {}
    for name, db in (("empty", empty), ("full", full)):
        use(db)
        if name == "empty":
            db.fresh()
        vacuum()
        out[name] = {
            "drain_orders_per_s": median(rates[name]),
            "drain_repeats": rates[name],
            "pickup": pickup(db, args),
            "sizes": sizes(),
        }
    return out


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def purge(db: harness.BenchDatabase, args: argparse.Namespace) -> dict[str, Any]:
    """`manage.py purge` on the finished orders, with orders arriving and claimed meanwhile."""
    from django.utils import timezone

    from workers.models import Order

    cutoff = (timezone.now() - timedelta(days=PURGE_CUTOFF_DAYS)).isoformat()
    before = Order.objects.filter(finished_at__lt=cutoff).count()
    procs: list[subprocess.Popen[bytes]] = []
    clock: list[float] = []
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed below

    def start() -> None:
        clock.append(time.perf_counter())
        procs.append(
            subprocess.Popen(
                [sys.executable, "manage.py", "purge", "--before", cutoff],
                cwd=harness.ROOT,
                env=harness.child_env(db.url),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )

    def over() -> bool:
        """The purge has exited (its end time noted, within one gap) or run past the cap."""
        if procs[0].poll() is not None:
            clock.append(time.perf_counter())
            return True
        return time.perf_counter() > clock[0] + args.purge_cap

    try:
        latencies = placing(db, args.gap_ms, over, 10**9, on_ready=start)
        if procs[0].poll() is None:
            procs[0].send_signal(signal.SIGTERM)  # past the cap: each batch is its own transaction
        procs[0].wait(30)
        seconds = (clock[1] if len(clock) > 1 else time.perf_counter()) - clock[0]
        log.seek(0)
        output = log.read().decode(errors="replace").strip()[-500:]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        log.close()
    after = Order.objects.filter(finished_at__lt=cutoff).count()
    deleted = before - after
    return {
        "finished_orders": before,
        "deleted": deleted,
        "finished_in_cap": after == 0,
        "cap_s": args.purge_cap,
        "seconds": round(seconds, 1),
        "orders_per_s": harness.rate(deleted, seconds),
        "events_per_s": None,
        "output": output,
        "pickup_during_purge": latency_summary(latencies) if latencies else None,
    }


def run(full: harness.BenchDatabase, empty: harness.BenchDatabase, args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {}
    use(full)
    full.fresh()
    result["fill"] = fill(args.rows, args.events)
    result["fill"]["sizes"] = sizes()
    result.update(compare(empty, full, args))

    use(full)
    result["purge"] = purge(full, args)
    if args.events:
        result["purge"]["events_per_s"] = harness.rate(3 * result["purge"]["deleted"], result["purge"]["seconds"])
    result["purge"]["sizes"] = sizes()
    # The purged table before any VACUUM: its dead rows still in the heap and the indexes.
    rate = drain(full, args.orders, args.timeout)["orders_per_s"]
    result["purged"] = {
        "drain_orders_per_s": rate,
        "drain_repeats": [rate],
        "pickup": pickup(full, args),
        "sizes": sizes(),
    }
    result["vacuum_after_purge_seconds"] = vacuum(analyze=True)
    result["vacuumed_sizes"] = sizes()

    base = result["empty"]["drain_orders_per_s"]
    result["full_vs_empty"] = round(result["full"]["drain_orders_per_s"] / base, 3)
    result["purged_vs_empty"] = round(rate / base, 3)
    result["goal_95_percent_met"] = result["full_vs_empty"] >= 0.95
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--pg-url",
        default=DEFAULT_PG_URL,
        help="PostgreSQL database to drop and re-create, and its sibling NAME_empty (default: %(default)s).",
    )
    p.add_argument(
        "--rows", type=int, default=1_000_000, help="Finished orders in the full table (default: %(default)s)."
    )
    p.add_argument("--no-events", dest="events", action="store_false", help="Finished orders without their events.")
    p.add_argument("--orders", type=int, default=5000, help="Orders per drain (default: %(default)s).")
    p.add_argument(
        "--repeat", type=int, default=5, help="Drains per state; the median is reported (default: %(default)s)."
    )
    p.add_argument("--pickup-orders", type=int, default=200, help="Orders for pickup latency (default: %(default)s).")
    p.add_argument("--gap-ms", type=float, default=20.0, help="Gap between two orders placed one at a time.")
    p.add_argument("--purge-cap", type=float, default=300.0, help="Stop the purge after this many seconds.")
    p.add_argument("--timeout", type=float, default=120.0, help="Give up on a drain after this many seconds.")
    p.add_argument("--quick", action="store_true", help="100,000 rows, 2,000 orders, 3 drains: a smoke run.")
    p.add_argument("--json-only", action="store_true", help="Print the JSON only, no table.")
    args = p.parse_args()
    if args.quick:
        args.rows, args.orders, args.repeat, args.pickup_orders = min(args.rows, 100_000), 2000, 3, 100
    host = harness.machine()
    started = time.monotonic()
    empty_url = f"{args.pg_url.rstrip('/')}_empty"
    watcher = Watcher()
    watcher.start()
    try:
        with (
            harness.BenchDatabase("postgres", args.pg_url) as full,
            harness.BenchDatabase("postgres", empty_url) as empty,
        ):
            result = run(full, empty, args)
    finally:
        watcher.stop()
    host["loadavg_1min_at_end"] = Path("/proc/loadavg").read_text().split()[0]
    host["loadavg_1min_max_seen"] = watcher.max_load
    host["other_processes_seen"] = sorted(watcher.others)
    config = {k: v for k, v in vars(args).items() if k not in ("pg_url", "json_only")}
    config.update(
        host, concurrency=harness.CONCURRENCY, prefetch=harness.PREFETCH, wall_s=round(time.monotonic() - started, 1)
    )
    print(json.dumps({"benchmark": "scale", "config": config, "results": result}))
    if args.json_only:
        return
    rows_label = f"{args.rows:,} finished"
    base = result["empty"]["drain_orders_per_s"]
    rows = [
        (
            label,
            state["drain_orders_per_s"],
            f"{state['drain_orders_per_s'] / base:.0%}",
            state["pickup"]["p50_ms"],
            state["pickup"]["p95_ms"],
            state["pickup"]["max_ms"],
        )
        for label, state in (
            ("empty", result["empty"]),
            (rows_label, result["full"]),
            ("after purge, before VACUUM", result["purged"]),
        )
    ]
    print()
    print(harness.table(("table", "drain orders/s (1 worker)", "of empty", "pickup p50 ms", "p95 ms", "max ms"), rows))
    pg = result["purge"]
    during = pg["pickup_during_purge"] or {}
    print()
    print(
        harness.table(
            (
                "purge",
                "orders deleted",
                "seconds",
                "orders/s",
                "events/s",
                "orders placed meanwhile",
                "their pickup p50 ms",
                "p95 ms",
                "max ms",
            ),
            [
                (
                    "manage.py purge",
                    pg["deleted"],
                    pg["seconds"],
                    pg["orders_per_s"],
                    pg["events_per_s"] or "-",
                    during.get("orders", 0),
                    during.get("p50_ms", "-"),
                    during.get("p95_ms", "-"),
                    during.get("max_ms", "-"),
                )
            ],
        )
    )
    print()
    size_rows = []
    for label, key in (
        ("filled + VACUUM ANALYZE", ("fill", "sizes")),
        ("after the drains", ("full", "sizes")),
        ("after purge", ("purge", "sizes")),
        ("after purge + drain", ("purged", "sizes")),
        ("after VACUUM", ("vacuumed_sizes",)),
    ):
        data = result
        for k in key:
            data = data[k]
        for table, s in data.items():
            size_rows.append(
                (label, table, s["heap_mb"], s["indexes_mb"], s["live_rows"], s["dead_rows"], s["free_percent"])
            )
    print(harness.table(("when", "table", "heap MB", "indexes MB", "live rows", "dead rows", "free %"), size_rows))
    print(
        f"\nfull / empty: {result['full_vs_empty']:.1%} (goal >= 95%: {'met' if result['goal_95_percent_met'] else 'MISSED'})"
    )
    if host["other_processes_seen"]:
        print(
            f"note: other processes ran meanwhile (max load {watcher.max_load}):",
            *host["other_processes_seen"],
            sep="\n  ",
        )


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
