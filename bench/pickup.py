"""Pickup latency: how long an order waits before an idle kitchen claims it.

Idle worker processes are started first; then orders are placed one at a
time, each in its own transaction and a fixed gap apart, so every order finds
the kitchens idle. The latency of an order is its `claimed_at` (written by
the claim) minus its `created_at` (written by `place`): NOTIFY wake-up on
PostgreSQL, polling every PIZZAQUEUE_POLL_INTERVAL on SQLite. The handler
(`bench.handlers.first_line`) writes down when its first line runs, which
gives the latency from the enqueue call to the handler, and the part of it
after the claim: the claim's own statement and commit, then the hand-over to
a baking thread.

    .venv/bin/python bench/pickup.py [--db postgres|sqlite|both] [--orders 200] [--gap-ms 20]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import harness
from handlers import MARKS_ENV, read_starts


def pickup(db: harness.BenchDatabase, workers: int, args: argparse.Namespace) -> dict[str, Any]:
    from workers import queue
    from workers.models import Order

    db.fresh()
    requests = harness.order_requests(args.orders)
    settings = {"poll_interval": args.poll_interval} if args.poll_interval is not None else {}
    marks = Path(tempfile.mkdtemp(prefix="pizzaqueue-bench-marks-"))
    procs = harness.WorkerProcesses(
        db,
        workers,
        concurrency=args.concurrency,
        prefetch=args.prefetch,
        handler="bench.handlers.first_line",
        **settings,
    )
    procs.env[MARKS_ENV] = str(marks)
    with procs:
        committed = {}
        started = time.perf_counter()
        for n, request in enumerate(requests):
            order, _ = queue.place(request)
            committed[order.id] = time.time()
            # Pace against the schedule, so a slow placement does not stretch the gaps.
            delay = started + (n + 1) * args.gap_ms / 1000 - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        harness.wait_until(lambda: not harness.unfinished(), 60, what="every order to be picked up")
    starts = read_starts(marks)
    shutil.rmtree(marks, ignore_errors=True)
    stamps = Order.objects.values_list("id", "created_at", "claimed_at")
    latencies = [(claimed - created).total_seconds() * 1000 for _, created, claimed in stamps]
    to_handler = [(starts[str(pk)] - created.timestamp()) * 1000 for pk, created, _ in stamps]
    after_claim = [(starts[str(pk)] - claimed.timestamp()) * 1000 for pk, _, claimed in stamps]
    # How long place() took (insert, event, NOTIFY, commit, return): the part of the
    # latency before the order exists for a worker; a worker often claims before place() returns.
    placing = [(committed[pk] - created.timestamp()) * 1000 for pk, created, _ in stamps]
    result = {
        "workers": workers,
        "orders": args.orders,
        "gap_ms": args.gap_ms,
        "poll_interval_ms": _poll_interval_ms(db, args),
        **{f"p{p}_ms": round(harness.percentile(latencies, p), 2) for p in (50, 95, 99)},
        "max_ms": round(max(latencies), 2),
        "mean_ms": round(sum(latencies) / len(latencies), 2),
        **{f"handler_p{p}_ms": round(harness.percentile(to_handler, p), 2) for p in (50, 95, 99)},
        "claim_to_handler_p50_ms": round(harness.percentile(after_claim, 50), 2),
        "claim_to_handler_p95_ms": round(harness.percentile(after_claim, 95), 2),
        "placing_p50_ms": round(harness.percentile(placing, 50), 2),
        "placing_p95_ms": round(harness.percentile(placing, 95), 2),
    }
    result.update(harness.check_exactly_once(args.orders))
    return result


def _poll_interval_ms(db: harness.BenchDatabase, args: argparse.Namespace) -> float:
    from django.conf import settings

    # The workers' value: the flag if given, else the project default (this process reads the same settings).
    interval = args.poll_interval if args.poll_interval is not None else settings.PIZZAQUEUE_POLL_INTERVAL
    return round(interval * 1000, 1)


def main() -> None:
    p = harness.parser(__doc__.splitlines()[0])
    p.add_argument("--orders", type=int, default=200, help="Orders per run (default: %(default)s).")
    p.add_argument("--gap-ms", type=float, default=20.0, help="Time between two orders (default: %(default)s).")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Idle worker counts (default: 1 2).")
    p.add_argument("--concurrency", type=int, default=None, help="Worker --concurrency (default: the project's).")
    p.add_argument("--prefetch", type=int, default=None, help="Worker --prefetch (default: the project's, adaptive).")
    p.add_argument(
        "--poll-interval",
        type=float,
        default=None,
        help="PIZZAQUEUE_POLL_INTERVAL for the workers, seconds (default: the project's).",
    )
    args = p.parse_args()
    host = harness.machine()

    def measure(db: harness.BenchDatabase) -> dict[str, Any]:
        return {"runs": [pickup(db, w, args) for w in args.workers]}

    results = harness.run_per_engine(args, measure)
    rows = [
        (
            engine,
            "NOTIFY" if engine == "postgres" else f"poll {r['poll_interval_ms']:.0f} ms",
            r["workers"],
            r["orders"],
            r["p50_ms"],
            r["p95_ms"],
            r["p99_ms"],
            r["max_ms"],
            r["handler_p50_ms"],
            r["handler_p95_ms"],
            r["claim_to_handler_p50_ms"],
            r["placing_p50_ms"],
            "yes" if r["exactly_once"] else "NO",
        )
        for engine, result in results.items()
        for r in result["runs"]
    ]
    headers = (
        "db",
        "wake-up",
        "workers",
        "orders",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "to handler p50 ms",
        "to handler p95 ms",
        "claimed_at to handler p50 ms",
        "place() call p50 ms",
        "exactly once",
    )
    config = {
        "orders": args.orders,
        "gap_ms": args.gap_ms,
        "concurrency": args.concurrency,
        "prefetch": args.prefetch,
        **host,
    }
    harness.report("pickup", args, results, config, rows, headers)


if __name__ == "__main__":
    main()
