"""Intake rate: orders confirmed per second by `queue.place` and `queue.place_many`.

One by one, each order is its own transaction (order row, `placed` event,
NOTIFY on PostgreSQL), as the API and the order form place them; in bulk,
`place_many` writes a batch of orders and their events in one transaction.
Requests are validated against the menu beforehand, so only the write path
is timed. Each mode starts from a fresh database with no workers running.

`--producers 1 8` also places orders one by one from that many processes at
once (each its own connection, as several web processes would), and, on
PostgreSQL, times a bare `INSERT ...; COMMIT` loop on one connection: the
physical limit of one synchronous producer on this machine, measured in the
same run.

    .venv/bin/python bench/intake.py [--db postgres|sqlite|both] [--orders 2000] [--bulk-orders 20000] [--batch 500]
                                     [--producers 1 8]
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


def _place_from(requests: list[Any], start: Any, ready: Any, out: Any) -> None:
    """One producer process: place its orders one by one, from the common start."""
    from django.db import connections

    from workers import queue

    connections.close_all()  # the parent's connection is not this process's to use
    queue.place(requests[0])  # connect and warm up outside the timed part
    ready.release()
    start.wait()
    t = time.perf_counter()
    for request in requests[1:]:
        queue.place(request)
    out.put(time.perf_counter() - t)


def producers(db: harness.BenchDatabase, count: int, orders: int) -> dict[str, Any]:
    """`count` processes placing `orders` orders between them, one by one, all at once."""
    from django.db import connections

    db.fresh()
    each = orders // count
    requests = harness.order_requests(each + 1)
    connections.close_all()  # the children inherit the loaded Django, not its connection
    wall, busiest = harness.forked_producers(count, _place_from, (requests,))
    placed = each * count
    return {
        "mode": f"one by one, {count} producer{'s' if count > 1 else ''}",
        "orders": placed,
        "transactions": placed,
        "seconds": round(wall, 3),
        "orders_per_s": harness.rate(placed, wall),
        "slowest_producer_s": round(busiest, 3),
        "stored": _stored() - count,  # less each producer's warm-up order
    }


def against_bare_loop(db: harness.BenchDatabase, orders: int, block: int = 50) -> list[dict[str, Any]]:
    """`queue.place` one by one against a bare `INSERT ...; COMMIT` loop on one connection
    (one small row, one synchronous commit each: the physical limit of one synchronous
    producer), in alternating blocks of `block`, so that the machine's drift (the disk's
    flush time above all) weighs on both alike."""
    import psycopg

    from workers import queue

    db.fresh()
    requests = harness.order_requests(orders)
    timings: dict[str, list[float]] = {"place": [], "bare": []}
    with psycopg.connect(db.url, autocommit=True) as conn:
        conn.execute("CREATE TABLE bare_intake (id uuid PRIMARY KEY, at timestamptz NOT NULL)")
        queue.place(requests[0])  # both connections warm
        conn.execute("INSERT INTO bare_intake VALUES (gen_random_uuid(), now())")
        for start in range(0, orders, block):
            for request in requests[start : start + block]:
                t = time.perf_counter()
                queue.place(request)
                timings["place"].append(time.perf_counter() - t)
            for _ in range(min(block, orders - start)):
                t = time.perf_counter()
                conn.execute("INSERT INTO bare_intake VALUES (gen_random_uuid(), now())")  # autocommit: COMMIT
                timings["bare"].append(time.perf_counter() - t)
    runs = []
    for mode, label in (("bare", "bare INSERT; COMMIT loop, interleaved"), ("place", "one by one, interleaved")):
        seconds = sum(timings[mode])
        runs.append(
            {
                "mode": label,
                "orders": len(timings[mode]),
                "transactions": len(timings[mode]),
                "seconds": round(seconds, 3),
                "orders_per_s": harness.rate(len(timings[mode]), seconds),
                "p50_ms": round(harness.percentile(timings[mode], 50) * 1000, 2),
                "p99_ms": round(harness.percentile(timings[mode], 99) * 1000, 2),
            }
        )
    runs[1]["of_bare_loop"] = round(runs[1]["orders_per_s"] / runs[0]["orders_per_s"], 2)
    return runs


def producers_rounds(db: harness.BenchDatabase, counts: list[int], orders: int, rounds: int) -> list[dict[str, Any]]:
    """Each producer count in turn, `rounds` times over (the median reported), so drift weighs on each alike."""
    tries: dict[int, list[dict[str, Any]]] = {n: [] for n in counts}
    for _ in range(rounds):
        for n in counts:
            tries[n].append(producers(db, n, orders))
    runs = []
    for n in counts:
        median = sorted(tries[n], key=lambda r: r["orders_per_s"])[len(tries[n]) // 2]
        runs.append({**median, "repeats": [r["orders_per_s"] for r in tries[n]]})
    one = next((r for r in runs if r["mode"].endswith(" 1 producer")), None)
    if one is not None:
        for r in runs:
            r["of_one_producer"] = round(r["orders_per_s"] / one["orders_per_s"], 2)
    return runs


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
    p.add_argument("--rounds", type=int, default=3, help="Rounds of the producer counts (default: %(default)s).")
    p.add_argument(
        "--producers",
        type=int,
        nargs="*",
        default=[],
        help="Also place --orders one by one from each of these numbers of processes at once (e.g. 1 8).",
    )
    args = p.parse_args()
    host = harness.machine()

    def measure(db: harness.BenchDatabase) -> dict[str, Any]:
        runs = [one_by_one(db, args.orders)]
        if args.producers and db.engine == "postgres":
            runs += against_bare_loop(db, args.orders)
        if args.producers:
            runs += producers_rounds(db, args.producers, args.orders, args.rounds)
        runs.append(bulk(db, args.bulk_orders, args.batch))
        return {"runs": runs}

    results = harness.run_per_engine(args, measure)
    rows = [
        (
            engine,
            r["mode"],
            r["orders"],
            r["transactions"],
            r["seconds"],
            r["orders_per_s"],
            r.get("p50_ms", "-"),
            r.get("p99_ms", "-"),
            r.get("of_bare_loop", r.get("of_one_producer", "-")),
        )
        for engine, result in results.items()
        for r in result["runs"]
    ]
    headers = (
        "db",
        "mode",
        "orders",
        "transactions",
        "seconds",
        "orders/s",
        "p50 ms/txn",
        "p99 ms/txn",
        "of bare loop / of 1 producer",
    )
    config = {
        "orders": args.orders,
        "bulk_orders": args.bulk_orders,
        "batch": args.batch,
        "producers": args.producers,
        **host,
    }
    harness.report("intake", args, results, config, rows, headers)


if __name__ == "__main__":
    main()
