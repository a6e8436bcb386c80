"""Drain rate: how fast 1 and 2 worker processes empty a queue of noop orders.

Each run starts from a fresh database. The workers are started first, on an
empty queue, and the clock starts once they are registered (the ring is
settled) and, on PostgreSQL, listening. Then the orders are placed in bulk in
one transaction and the clock stops when the database first shows none
queued or preparing. Every order must be done exactly once.

    .venv/bin/python bench/drain.py [--db postgres|sqlite|both] [--orders 5000] [--config default 4/100]
    .venv/bin/python bench/drain.py --explore     # sweep --concurrency/--prefetch

A configuration is `default` (`manage.py worker` with no flags: adaptive
claiming) or `C/P` (`--concurrency C --prefetch P`); the configurations'
runs alternate, so the machine's drift weighs on each alike.
"""

from __future__ import annotations

import argparse
import itertools
import time
from typing import Any

import harness

EXPLORE_CONCURRENCY = (4, 16, 32, 64)
EXPLORE_PREFETCH = (0, 100)


def drain(
    db: harness.BenchDatabase,
    workers: int,
    orders: int,
    concurrency: int | None,
    prefetch: int | None,
    timeout: float,
    analyze: bool = False,
) -> dict[str, Any]:
    from django.db import connection, transaction
    from django.db.models import Count, Max, Min

    from workers import queue
    from workers.models import Order

    db.fresh()
    requests = harness.order_requests(orders)
    with harness.WorkerProcesses(db, workers, concurrency=concurrency, prefetch=prefetch) as procs:
        started = time.time()
        with transaction.atomic():  # one transaction: every order becomes visible at once
            queue.place_many(requests)
            if analyze:
                # Statistics that know about the backlog, as autovacuum gives a live database;
                # taken inside the transaction, so the orders and their statistics commit together.
                with connection.cursor() as cursor:
                    cursor.execute(f"ANALYZE {Order._meta.db_table}")
        committed = time.time()
        ended = harness.wait_until(lambda: not harness.unfinished(), timeout, interval=0.01, what="the queue to drain")
        codes = procs.stop()
    seconds = ended - committed
    stamps = Order.objects.aggregate(first_claim=Min("claimed_at"), last_done=Max("finished_at"))
    per_worker = dict(
        Order.objects.values_list("worker__name").annotate(n=Count("id")).values_list("worker__name", "n")
    )
    result = {
        "workers": workers,
        "config": config_name(concurrency, prefetch),
        "concurrency": concurrency,
        "prefetch": prefetch,
        "orders": orders,
        "analyze": analyze,
        "place_seconds": round(committed - started, 3),
        "seconds": round(seconds, 3),
        "orders_per_s": harness.rate(orders, seconds),
        "first_claim_after_ms": round((stamps["first_claim"].timestamp() - committed) * 1000, 1),
        "last_done_before_seen_ms": round((ended - stamps["last_done"].timestamp()) * 1000, 1),
        "per_worker": per_worker,
        "exit_codes": codes,
    }
    result.update(harness.check_exactly_once(orders))
    result.update(batch_sizes())
    return result


def batch_sizes() -> dict[str, Any]:
    """How many orders each claim and each completion transaction carried.

    A transaction stamps all its events with one time, so events grouped by
    (worker, time) are the transactions.
    """
    from django.db.models import Count

    from workers.models import OrderEvent

    sizes: dict[str, Any] = {}
    for kind in (OrderEvent.Kind.CLAIMED, OrderEvent.Kind.DONE):
        batches = list(
            OrderEvent.objects.filter(kind=kind)
            .values("worker_id", "created_at")
            .annotate(n=Count("id"))
            .values_list("n", flat=True)
        )
        sizes[f"{kind}_transactions"] = len(batches)
        sizes[f"{kind}_batch_mean"] = round(sum(batches) / len(batches), 1) if batches else 0
    return sizes


def config_name(concurrency: int | None, prefetch: int | None) -> str:
    if concurrency is None and prefetch is None:
        return "default"
    return f"{concurrency if concurrency is not None else '-'}/{prefetch if prefetch is not None else 'adaptive'}"


def measure(args: argparse.Namespace) -> Any:
    def run(db: harness.BenchDatabase) -> dict[str, Any]:
        if args.explore:
            grid = [(c, p, w) for w, c, p in itertools.product(args.workers, EXPLORE_CONCURRENCY, EXPLORE_PREFETCH)]
        else:
            grid = [(c, p, w) for w in args.workers for c, p in args.config]
        tries: dict[tuple[Any, ...], list[dict[str, Any]]] = {key: [] for key in grid}
        for _ in range(args.repeat):  # round-robin over the grid: drift hits every configuration alike
            for c, p, w in grid:
                tries[(c, p, w)].append(drain(db, w, args.orders, c, p, args.timeout, args.analyze))
        runs = []
        for key in grid:
            median = sorted(tries[key], key=lambda r: r["orders_per_s"])[len(tries[key]) // 2]
            runs.append(
                {
                    **median,
                    "repeats": [r["orders_per_s"] for r in tries[key]],
                    "exactly_once": all(r["exactly_once"] for r in tries[key]),
                }
            )
        return {"runs": runs}

    return run


def worker_config(value: str) -> tuple[int | None, int | None]:
    if value == "default":
        return None, None
    try:
        concurrency, prefetch = (int(v) for v in value.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is neither 'default' nor CONCURRENCY/PREFETCH") from None
    return concurrency, prefetch


def worker_counts(value: str) -> list[int]:
    try:
        counts = [int(v) for v in value.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a comma-separated list of numbers") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("worker counts must be at least 1")
    return counts


def main() -> None:
    p = harness.parser(__doc__.splitlines()[0])
    p.add_argument("--orders", type=int, default=5000, help="Orders to drain per run (default: %(default)s).")
    p.add_argument("--workers", type=worker_counts, default=[1, 2], help="Worker process counts (default: 1,2).")
    p.add_argument(
        "--config",
        type=worker_config,
        nargs="+",
        default=[(None, None), (harness.CONCURRENCY, harness.PREFETCH)],
        help="Worker configurations: 'default' (no flags) or CONCURRENCY/PREFETCH (default: default 4/100).",
    )
    p.add_argument("--explore", action="store_true", help="Sweep concurrency x prefetch instead of one configuration.")
    p.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="Runs per configuration; the median is reported (default: 3, or 1 with --explore).",
    )
    p.add_argument(
        "--analyze",
        action="store_true",
        help="ANALYZE the orders table in the placing transaction (planner statistics as on a live database).",
    )
    p.add_argument("--timeout", type=float, default=120.0, help="Give up on a run after this many seconds.")
    args = p.parse_args()
    host = harness.machine()
    if args.repeat is None:
        args.repeat = 1 if args.explore else 3
    results = harness.run_per_engine(args, measure(args))
    rows = [
        (
            engine,
            r["workers"],
            r["config"],
            r["orders"],
            r["seconds"],
            r["orders_per_s"],
            " ".join(f"{x:.0f}" for x in r["repeats"]),
            r["claimed_batch_mean"],
            "yes" if r["exactly_once"] else "NO",
        )
        for engine, result in results.items()
        for r in result["runs"]
    ]
    config = {
        "orders": args.orders,
        "handler": harness.NOOP_HANDLER,
        "explore": args.explore,
        "repeat": args.repeat,
        "analyze": args.analyze,
        **host,
    }
    headers = (
        "db",
        "workers",
        "worker flags",
        "orders",
        "seconds",
        "orders/s (median)",
        "all runs",
        "orders/claim",
        "exactly once",
    )
    harness.report("drain", args, results, config, rows, headers)


if __name__ == "__main__":
    main()
