"""Browser reconnect time through HAProxy after a daphne is SIGKILLed, and events missed.

    python bench/reconnect.py [--pages 6] [--rounds 6] [--db postgres]

Runs the web tier the tests run (tests/webtier.py: deploy/haproxy.cfg in front
of two daphne processes) and one kitchen. Each round places one order per
page, opens its tracking page in Chromium through HAProxy, SIGKILLs one daphne
(the two in turn) while the orders are in the kitchen, and restarts it. For
every WebSocket the kill closed, the reconnect time is from its `close` event
to the `open` of the page's next socket (the page's own clock). When the
orders are done, each page's timeline is compared with the order's events in
the database: an event missing is a missed event, one shown twice a duplicate.
Prints one JSON object, then a table.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import harness


def measure(db: harness.BenchDatabase, pages: int, rounds: int, speed: float) -> dict[str, Any]:
    db.fresh()
    # Playwright's sync API marks this thread's event loop as running, which Django takes
    # for an async context; this process's ORM calls are plain sync code (as in the tests).
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    from playwright.sync_api import sync_playwright

    from orders.timeline import event_message
    from tests.conftest import CHROMIUM, CHROMIUM_ARGS, WorkerProcesses
    from tests.factory import make_order
    from tests.processes.test_web_tier import RECORD_SOCKETS
    from tests.webtier import WebTier
    from workers.models import Order, OrderEvent

    tmp = Path(tempfile.mkdtemp(prefix="pizzaqueue-bench-reconnect-"))
    # DEBUG on: WhiteNoise then serves the pages' JavaScript without a collectstatic.
    env = {"SECRET_KEY": harness.SECRET_KEY, "PIZZAQUEUE_KITCHEN_SPEED": str(speed), "DEBUG": "true"}
    tier = WebTier(tmp)
    kitchens = WorkerProcesses(tmp)
    reconnects: list[float] = []
    missed = duplicated = shown = 0
    try:
        tier.start(**env)
        kitchens.start("--name", "bench-1", "--concurrency", str(pages), **env)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            for round_number in range(rounds):
                context = browser.new_context()
                context.add_init_script(RECORD_SOCKETS)
                orders = [make_order(area=f"area-{round_number}-{n}") for n in range(pages)]
                opened = []
                for order in orders:
                    page = context.new_page()
                    page.goto(tier.url(f"/orders/{order.id}/"))
                    page.wait_for_function("window.sockets.length > 0 && window.sockets[0].opened !== null")
                    opened.append(page)
                harness.wait_until(
                    lambda o=orders: (
                        Order.objects.filter(pk__in=[x.pk for x in o], status="preparing").count() == pages
                    ),
                    timeout=60,
                    what="every order in the kitchen",
                )
                before = [len(p.evaluate("window.sockets")) for p in opened]
                victim = tier.daphnes[round_number % len(tier.daphnes)]
                tier.kill(victim)
                harness.wait_until(lambda v=victim: tier.server_states().get(v.name) != "UP", timeout=15)
                for page, count in zip(opened, before, strict=True):
                    sockets = page.evaluate("window.sockets")
                    if sockets[count - 1]["closed"] is None:
                        continue  # served by the other daphne: not cut this round
                    page.wait_for_function(
                        f"window.sockets.length > {count} && window.sockets[window.sockets.length-1].opened !== null",
                        timeout=30_000,
                    )
                    sockets = page.evaluate("window.sockets")
                    reconnects.append((sockets[-1]["opened"] - sockets[count - 1]["closed"]) / 1000)
                tier.restart(victim, **env)
                harness.wait_until(
                    lambda o=orders: Order.objects.filter(pk__in=[x.pk for x in o], status="done").count() == pages,
                    timeout=120,
                    what="every order done",
                )
                for order, page in zip(orders, opened, strict=True):
                    page.wait_for_function("document.querySelector('#status').textContent === 'Ready'")
                    expected = [
                        m["id"] for m in map(event_message, OrderEvent.objects.filter(order=order)) if m["public"]
                    ]
                    ids = [
                        int(i) for i in page.eval_on_selector_all("#timeline li", "els => els.map(e => e.dataset.id)")
                    ]
                    shown += len(ids)
                    missed += len(set(expected) - set(ids))
                    duplicated += len(ids) - len(set(ids))
                context.close()
            browser.close()
    finally:
        kitchens.stop_all()
        tier.stop()
    return {
        "pages": pages,
        "rounds": rounds,
        "reconnects": len(reconnects),
        "reconnect_p50_s": round(harness.percentile(reconnects, 50), 3) if reconnects else None,
        "reconnect_p95_s": round(harness.percentile(reconnects, 95), 3) if reconnects else None,
        "reconnect_max_s": round(max(reconnects), 3) if reconnects else None,
        "events_shown": shown,
        "events_missed": missed,
        "events_duplicated": duplicated,
    }


def main() -> None:
    p = harness.parser(__doc__.splitlines()[0])
    p.set_defaults(db="postgres")
    p.add_argument("--pages", type=int, default=6, help="Tracking pages open at once (default: %(default)s).")
    p.add_argument("--rounds", type=int, default=6, help="Daphne kills, alternating servers (default: %(default)s).")
    p.add_argument("--speed", type=float, default=0.25, help="Kitchen speed: 0.25 is a 10 s margherita.")
    args = p.parse_args()
    started = time.monotonic()
    results = harness.run_per_engine(args, lambda db: measure(db, args.pages, args.rounds, args.speed))
    config = {"pages": args.pages, "rounds": args.rounds, "speed": args.speed, **harness.machine()}
    config["seconds"] = round(time.monotonic() - started, 1)
    headers = ["db", "reconnects", "p50 s", "p95 s", "max s", "events shown", "missed", "duplicated"]
    rows = [
        [
            engine,
            r["reconnects"],
            r["reconnect_p50_s"],
            r["reconnect_p95_s"],
            r["reconnect_max_s"],
            r["events_shown"],
            r["events_missed"],
            r["events_duplicated"],
        ]
        for engine, r in results.items()
    ]
    harness.report("reconnect", args, results, config, rows, headers)


if __name__ == "__main__":
    main()
