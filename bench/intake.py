"""Intake rate: orders confirmed per second by `queue.place` and `queue.place_many`.

One by one, each order is its own transaction (order row, `placed` event,
NOTIFY on PostgreSQL), as the API and the order form place them; in bulk,
`place_many` writes a batch of orders and their events in one transaction.
Requests are validated against the menu beforehand, so only the write path
is timed. Each mode starts from a fresh database with no workers running.

    .venv/bin/python bench/intake.py [--db postgres|sqlite|both] [--orders 2000] [--bulk-orders 20000] [--batch 500]
"""

from __future__ import annotations

import time
from typing import Any

import harness


def one_by_one(db: harness.BenchDatabase, orders: int) -> dict[str, Any]:
    from workers import queue

    db.fresh()
    requests = harness.order_requests(orders)
    latencies = []
    started = time.perf_counter()
    for request in requests:
        t = time.perf_counter()
        queue.place(request)
        latencies.append((time.perf_counter() - t) * 1000)
    seconds = time.perf_counter() - started
    return {
        "mode": "one by one",
        "orders": orders,
        "transactions": orders,
        "seconds": round(seconds, 3),
        "orders_per_s": harness.rate(orders, seconds),
        "p50_ms": round(harness.percentile(latencies, 50), 2),
        "p99_ms": round(harness.percentile(latencies, 99), 2),
        "stored": _stored(),
    }


def bulk(db: harness.BenchDatabase, orders: int, batch: int) -> dict[str, Any]:
    from workers import queue

    db.fresh()
    requests = harness.order_requests(orders)
    latencies = []
    started = time.perf_counter()
    for start in range(0, orders, batch):
        t = time.perf_counter()
        queue.place_many(requests[start : start + batch])
        latencies.append((time.perf_counter() - t) * 1000)
    seconds = time.perf_counter() - started
    return {
        "mode": f"bulk, {batch} per transaction",
        "orders": orders,
        "transactions": len(latencies),
        "seconds": round(seconds, 3),
        "orders_per_s": harness.rate(orders, seconds),
        "p50_ms": round(harness.percentile(latencies, 50), 2),
        "p99_ms": round(harness.percentile(latencies, 99), 2),
        "stored": _stored(),
    }


def _stored() -> int:
    from workers.models import Order, OrderEvent

    orders = Order.objects.filter(status=Order.Status.QUEUED).count()
    events = OrderEvent.objects.filter(kind=OrderEvent.Kind.PLACED).count()
    return orders if orders == events else -1


def main() -> None:
    p = harness.parser(__doc__.splitlines()[0])
    p.add_argument("--orders", type=int, default=2000, help="Orders placed one by one (default: %(default)s).")
    p.add_argument("--bulk-orders", type=int, default=20000, help="Orders placed in bulk (default: %(default)s).")
    p.add_argument("--batch", type=int, default=500, help="Orders per place_many transaction (default: %(default)s).")
    args = p.parse_args()
    host = harness.machine()

    def measure(db: harness.BenchDatabase) -> dict[str, Any]:
        return {"runs": [one_by_one(db, args.orders), bulk(db, args.bulk_orders, args.batch)]}

    results = harness.run_per_engine(args, measure)
    rows = [
        (engine, r["mode"], r["orders"], r["transactions"], r["seconds"], r["orders_per_s"], r["p50_ms"], r["p99_ms"])
        for engine, result in results.items()
        for r in result["runs"]
    ]
    headers = ("db", "mode", "orders", "transactions", "seconds", "orders/s", "p50 ms/txn", "p99 ms/txn")
    config = {"orders": args.orders, "bulk_orders": args.bulk_orders, "batch": args.batch, **host}
    harness.report("intake", args, results, config, rows, headers)


if __name__ == "__main__":
    main()
