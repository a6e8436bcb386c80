"""Live-update delay: from an event's commit in a worker process to a WebSocket client.

A daphne process and a kitchen (worker) process share a fresh database. This
process connects to `/ws/board/` as staff, places orders at a steady rate
through `queue.place`, and times every event that arrives: the delay is the
client's receive time minus the event's `created_at` (same machine, same
clock). `created_at` is taken just before the transaction that writes the
event, so the figure also holds that transaction's commit: it is an upper
bound on commit-to-browser.

Events from the worker process (claimed, each kitchen stage, done) cross two
processes through the database: the worker commits, the relay in daphne reads
them (woken by NOTIFY on PostgreSQL, polling on SQLite) and fans them out.

    .venv/bin/python bench/live.py [--db postgres|sqlite|both] [--orders 200] [--rate 20]
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime
from typing import Any

import harness

DEFAULT_PG_URL = "postgres://postgres@127.0.0.1:5432/pizzaqueue_bench_live"
# p95 targets, in milliseconds.
TARGET_P95_MS = {"postgres": 100.0, "sqlite": 300.0}
# Kitchen seconds per recipe second: a margherita's four stages take ~0.2 s.
KITCHEN_SPEED = 0.005
WORKER_EVENTS = ("claimed", "stage", "done")


def staff_cookie() -> str:
    from django.contrib.auth import get_user_model
    from django.test import Client

    user, _created = get_user_model().objects.get_or_create(username="bench", defaults={"is_staff": True})
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}"


def place_orders(count: int, rate: float) -> None:
    """Place orders at a steady rate, each in its own transaction, as the API would."""
    from django.db import connections

    from workers import queue

    requests = harness.order_requests(count)
    started = time.monotonic()
    for n, request in enumerate(requests):
        delay = started + n / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)  # pacing the load, not synchronising
        queue.place(request)
    connections.close_all()


async def listen(port: int, cookie: str, orders: int, rate: float, timeout: float) -> list[tuple[str, float]]:
    """(kind, delay in ms) for every event the board stream delivers until every order is done."""
    from websockets.asyncio.client import connect

    samples: list[tuple[str, float]] = []
    done = 0
    url = f"ws://127.0.0.1:{port}/ws/board/"
    async with connect(url, origin=f"http://127.0.0.1:{port}", additional_headers={"Cookie": cookie}) as ws:
        placing = asyncio.create_task(asyncio.to_thread(place_orders, orders, rate))
        deadline = time.monotonic() + timeout
        while done < orders:
            raw = await asyncio.wait_for(ws.recv(), max(0.1, deadline - time.monotonic()))
            received = time.time()
            message = json.loads(raw)
            if message.get("type") != "event":
                continue
            created = datetime.fromisoformat(message["created_at"]).timestamp()
            samples.append((message["kind"], (received - created) * 1000))
            done += message["kind"] == "done"
        await placing
    return samples


def summary(delays: list[float]) -> dict[str, Any]:
    return {
        "events": len(delays),
        "p50_ms": round(harness.percentile(delays, 50), 1),
        "p95_ms": round(harness.percentile(delays, 95), 1),
        "p99_ms": round(harness.percentile(delays, 99), 1),
        "max_ms": round(max(delays), 1),
    }


def measure(db: harness.BenchDatabase, orders: int, rate: float) -> dict[str, Any]:
    db.fresh()
    with harness.Site(
        db, {"live-1": ["--concurrency", "8", "--handler", "orders.handlers.kitchen"]}, kitchen_speed=KITCHEN_SPEED
    ) as server:
        samples = asyncio.run(listen(server.port, staff_cookie(), orders, rate, timeout=orders / rate + 60))
    from_worker = [ms for kind, ms in samples if kind in WORKER_EVENTS]
    result = {
        "orders": orders,
        "rate_per_s": rate,
        "all_events": summary([ms for _kind, ms in samples]),
        "worker_events": summary(from_worker),
        "target_p95_ms": TARGET_P95_MS[db.engine],
    }
    result["within_target"] = result["worker_events"]["p95_ms"] <= result["target_p95_ms"]
    return result


def main() -> None:
    p = harness.parser(__doc__.splitlines()[0])
    p.set_defaults(pg_url=DEFAULT_PG_URL)
    p.add_argument("--orders", type=int, default=200, help="Orders to place (default: %(default)s).")
    p.add_argument("--rate", type=float, default=20.0, help="Orders per second (default: %(default)s).")
    args = p.parse_args()

    def one(db: harness.BenchDatabase) -> dict[str, Any]:
        return measure(db, args.orders, args.rate)

    results = harness.run_per_engine(args, one)
    rows = [
        (
            engine,
            source,
            r[key]["events"],
            r[key]["p50_ms"],
            r[key]["p95_ms"],
            r[key]["p99_ms"],
            r[key]["max_ms"],
            r["target_p95_ms"] if key == "worker_events" else "",
            ("yes" if r["within_target"] else "NO") if key == "worker_events" else "",
        )
        for engine, r in results.items()
        for key, source in (("worker_events", "worker process"), ("all_events", "all"))
    ]
    config = {"orders": args.orders, "rate_per_s": args.rate, "kitchen_speed": KITCHEN_SPEED, **harness.machine()}
    harness.report(
        "live",
        args,
        results,
        config,
        rows,
        ("engine", "events from", "events", "p50 ms", "p95 ms", "p99 ms", "max ms", "target p95", "met"),
    )


if __name__ == "__main__":
    main()
