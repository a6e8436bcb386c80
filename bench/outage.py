"""A database outage mid-service, at the default clocks: how soon the kitchens work again,
and what it cost the customers (nothing may be cancelled, failed or charged).

    python bench/outage.py [--shares 0.5,0.75,2] [--orders 12]

PostgreSQL only. Two kitchens (`manage.py worker`, the simulated kitchen, two slots
each, a margherita in two seconds) make delivery and takeaway orders, with takeaway
orders scheduled for tonight besides. Once both ovens are full, the benchmark's
database refuses connections and drops the ones it has, as a restart does
(`ALLOW_CONNECTIONS false`, `pg_terminate_backend`; that database only, so a shared
server is not disturbed), for each share of the heartbeat timeout in turn. It then
reports, by the database's clock, the seconds from the database's return to the
first claim or completion, and counts what a customer would have felt: orders
cancelled, failed or retried, attempts charged beyond the first, kitchens declared
dead or started again. Prints one JSON object, then a table.
"""

from __future__ import annotations

import argparse
import time
from datetime import timedelta
from typing import Any

import harness

KITCHENS = 2


def outage(db: harness.BenchDatabase, share: float, orders: int) -> dict[str, Any]:
    import psycopg
    from django.conf import settings
    from django.db import connections
    from psycopg import sql

    from workers import clock, queue
    from workers.models import Order, OrderEvent, Worker

    db.fresh()
    procs = harness.WorkerProcesses(db, KITCHENS, concurrency=2, prefetch=None, handler="orders.handlers.kitchen")
    procs.env["PIZZAQUEUE_KITCHEN_SPEED"] = "0.05"  # a medium margherita (40 s) in two seconds
    timeout = settings.PIZZAQUEUE_HEARTBEAT_TIMEOUT
    with procs:
        items = [{"pizza": "margherita", "size": "medium", "quantity": 1}]
        tonight = clock.now() + timedelta(hours=6)
        requests = [queue.OrderRequest(items=items, area=f"area-{n}", estimated_seconds=40) for n in range(orders)]
        for name in procs.names:
            requests += [
                queue.OrderRequest(items=items, kind="takeaway", pinned_to=name, estimated_seconds=40)
                for _ in range(orders // 2)
            ]
            requests.append(queue.OrderRequest(items=items, kind="takeaway", pinned_to=name, not_before=tonight))
        placed = [queue.place(request)[0].pk for request in requests]
        harness.wait_until(
            lambda: Order.objects.filter(status="preparing").count() >= 2 * KITCHENS, 60, what="both ovens full"
        )
        connections.close_all()
        with psycopg.connect(db.admin_url, autocommit=True) as admin:
            name = sql.Identifier(db.name)
            admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(name))
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", [db.name])
            time.sleep(share * timeout)
            admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(name))
            back = admin.execute("SELECT clock_timestamp()").fetchone()[0]
        due = [pk for pk, request in zip(placed, requests, strict=True) if request.not_before is None]
        harness.wait_until(
            lambda: Order.objects.filter(pk__in=due, status="done").count() == len(due), 120, what="every order made"
        )
        working = OrderEvent.objects.filter(kind__in=["claimed", "done"], created_at__gt=back).order_by("created_at")
        first = working.values_list("created_at", flat=True).first()
        return {
            "outage_seconds": round(share * timeout, 2),
            "heal_to_work_seconds": round((first - back).total_seconds(), 3) if first else None,
            "cancelled": OrderEvent.objects.filter(kind="cancelled").count(),
            "failed": OrderEvent.objects.filter(kind="failed").count(),
            "retried": OrderEvent.objects.filter(kind="retried").count(),
            "charged_beyond_first": Order.objects.filter(attempts__gt=1).count(),
            "handed_back_uncharged": OrderEvent.objects.filter(kind="released").count(),
            "kitchens_restarted_or_dead": Worker.objects.exclude(incarnation=1, status="alive").count(),
            "scheduled_still_waiting": Order.objects.filter(status="queued", eligible_at__gte=tonight).count(),
            "orders": len(placed),
        }


def main() -> None:
    parser = harness.parser(__doc__.split("\n\n")[0])
    parser.set_defaults(db="postgres")
    parser.add_argument("--shares", default="0.5,0.75,2", help="outage lengths, as shares of the heartbeat timeout")
    parser.add_argument("--orders", type=int, default=12, help="delivery orders; half as many takeaway per shop")
    args: argparse.Namespace = parser.parse_args()
    if args.db != "postgres":
        parser.error("an outage of a server needs PostgreSQL: --db postgres")
    shares = [float(share) for share in args.shares.split(",")]
    results: dict[str, Any] = {"machine": harness.machine(), "by_share": {}}
    with harness.BenchDatabase("postgres", args.pg_url) as db:
        from django.conf import settings

        for share in shares:
            results["by_share"][str(share)] = outage(db, share, args.orders)
        timeout = settings.PIZZAQUEUE_HEARTBEAT_TIMEOUT
    rows = [
        [
            f"{share} x {timeout:g} s",
            r["heal_to_work_seconds"],
            r["cancelled"],
            r["failed"],
            r["retried"],
            r["charged_beyond_first"],
            r["handed_back_uncharged"],
            r["kitchens_restarted_or_dead"],
        ]
        for share, r in results["by_share"].items()
    ]
    harness.report(
        "outage",
        args,
        results,
        {"shares": shares, "orders": args.orders, "heartbeat_timeout": timeout},
        rows,
        ["outage", "heal→work s", "cancelled", "failed", "retried", "charged", "handed back", "kitchens lost"],
    )


if __name__ == "__main__":
    main()
