"""Staffed kitchens and cancels, end to end: how fast a tap reaches the customer and a cancel stops a kitchen.

A daphne process, a staffed kitchen (`staffed-1`, `orders.handlers.staffed`) and
a simulated one (`sim-1`, kitchen speed 1: an oven takes half a minute) share a
fresh database. Three figures:

- tap -> customer: a staff member's tap (the display's form, POSTed with the
  session and CSRF token, as the browser sends it) until the stage event
  arrives on that order's customer stream (`/ws/orders/<id>/`, what the
  tracking page listens to); every order is tapped through its four stages;
- cancel -> simulated kitchen stops: `queue.cancel` of an order in `sim-1`'s
  oven until the kitchen's `lease-lost` event (it looked at its lease and
  dropped the order), by that event's commit time;
- cancel -> ticket gone: Chromium shows `staffed-1`'s display; an order in
  that kitchen is cancelled and the time until its ticket leaves the page is
  taken.

    .venv/bin/python bench/kitchen.py [--db postgres|sqlite|both] [--orders 25] [--cancels 10]
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import time
from datetime import datetime
from typing import Any

import harness

DEFAULT_PG_URL = "postgres://postgres@127.0.0.1:5432/pizzaqueue_bench_kitchen"
# Targets, in milliseconds.
TAP_TARGET_P95_MS = {"postgres": 100.0, "sqlite": 300.0}
STOP_TARGET_MS = 1000.0
TICKET_TARGET_MS = 300.0
TAPS = (("", "dough"), ("dough", "oven"), ("oven", "boxing"), ("boxing", "ready"))
CHROMIUM = "/usr/bin/chromium"


def staff_session() -> str:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.test import Client

    from orders import roles

    user, _created = get_user_model().objects.get_or_create(username="bench", defaults={"is_staff": True})
    user.groups.add(Group.objects.get(name=roles.OPERATORS))  # any kitchen's display
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


def takeaway(shop: str) -> Any:
    from orders.intake import clean_order_request
    from workers import queue

    order, _created = queue.place(
        clean_order_request(
            {
                "items": [{"pizza": "margherita", "size": "medium", "quantity": 1}],
                "kind": "takeaway",
                "shop": shop,
                "customer_name": "Bench",
            }
        )
    )
    return order


def held(order_ids: list[Any]) -> dict[Any, Any]:
    """Wait until every order is in its kitchen; their lease tokens by id."""
    from workers.models import Order

    def all_claimed() -> dict[Any, Any] | None:
        tokens = dict(Order.objects.filter(pk__in=order_ids, status="preparing").values_list("id", "lease_token"))
        return tokens if len(tokens) == len(order_ids) else None

    harness.wait_until(all_claimed, 60, what="the kitchen to claim the orders")
    return all_claimed() or {}


class Display:
    """What a tablet sends: the staff session and its CSRF token, read from the display page."""

    def __init__(self, port: int, session: str) -> None:
        self.port = port
        self.session = session
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/kitchen/staffed-1/", headers={"Cookie": f"sessionid={session}"})
        response = conn.getresponse()
        page = response.read().decode()
        cookies = response.headers.get_all("Set-Cookie") or []
        self.csrf_cookie = next(c.split(";")[0].split("=", 1)[1] for c in cookies if c.startswith("csrftoken="))
        self.csrf_form = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
        conn.close()

    def tap(self, order_id: Any, token: Any, stage: str) -> int:
        from urllib.parse import urlencode

        body = urlencode({"csrfmiddlewaretoken": self.csrf_form, "order": order_id, "lease": token, "stage": stage})
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn.request(
            "POST",
            "/kitchen/staffed-1/tap/",
            body=body,
            headers={
                "Cookie": f"sessionid={self.session}; csrftoken={self.csrf_cookie}",
                "Content-Type": "application/x-www-form-urlencoded",
                "Origin": f"http://127.0.0.1:{self.port}",
            },
        )
        status = conn.getresponse().status
        conn.close()
        return status


async def tap_to_customer(port: int, session: str, orders: int) -> list[float]:
    """ms from sending each tap to its stage event on the order's customer stream."""
    from websockets.asyncio.client import connect

    placed = [takeaway("staffed-1") for _ in range(orders)]
    tokens = held([o.pk for o in placed])
    display = await asyncio.to_thread(Display, port, session)
    samples: list[float] = []
    for order in placed:
        url = f"ws://127.0.0.1:{port}/ws/orders/{order.pk}/"
        async with connect(url, origin=f"http://127.0.0.1:{port}") as ws:
            for shown, stage in TAPS:
                await asyncio.sleep(0.05)  # a person's pace, not a synchronisation
                sent = time.perf_counter()
                status = await asyncio.to_thread(display.tap, order.pk, tokens[order.pk], shown)
                if status != 302:
                    raise RuntimeError(f"tap answered {status}")
                while True:
                    message = json.loads(await asyncio.wait_for(ws.recv(), 10))
                    if message.get("kind") == "stage" and message.get("stage") == stage:
                        samples.append((time.perf_counter() - sent) * 1000)
                        break
    return samples


def cancel_stops_kitchen(cancels: int) -> list[float]:
    """ms from a cancel's commit to the simulated kitchen's `lease-lost` (it stopped the oven)."""
    from workers import queue
    from workers.models import Order, OrderEvent

    samples = []
    for _ in range(cancels):
        order = takeaway("sim-1")
        in_dough = Order.objects.filter(pk=order.pk, stage="dough")
        harness.wait_until(in_dough.exists, 30, what="the dough")
        time.sleep(0.3)  # into the stage's sleep, not at its start
        queue.cancel(order.pk, "cancelled by an operator", if_held=lambda _order: True)
        cancelled = time.time()

        stopped = OrderEvent.objects.filter(order=order, kind="lease-lost").values_list("created_at", flat=True)
        harness.wait_until(stopped.exists, 10, interval=0.005, what="the kitchen to stop")
        at: datetime = stopped.get()
        samples.append(max(0.0, (at.timestamp() - cancelled) * 1000))
    return samples


def cancel_clears_ticket(port: int, session: str, cancels: int) -> list[float]:
    """ms from a cancel's commit to its ticket leaving the staffed display in Chromium."""
    from playwright.sync_api import sync_playwright

    from workers import queue

    samples = []
    base = f"http://127.0.0.1:{port}"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        context = browser.new_context(viewport={"width": 1024, "height": 768})
        context.add_cookies([{"name": "sessionid", "value": session, "url": base}])
        page = context.new_page()
        page.goto(f"{base}/kitchen/staffed-1/")
        page.wait_for_selector("#live-state.is-live")
        for _ in range(cancels):
            order = takeaway("staffed-1")
            selector = f'[data-ticket="{order.pk}"] button.tap'
            page.wait_for_selector(selector, timeout=10_000)
            queue.cancel(order.pk, "cancelled by an operator", if_held=lambda _order: True)
            cancelled = time.perf_counter()
            page.wait_for_selector(f'[data-ticket="{order.pk}"]', state="detached", timeout=10_000)
            samples.append((time.perf_counter() - cancelled) * 1000)
        browser.close()
    return samples


def summary(samples: list[float], target: float, pct: float = 95) -> dict[str, Any]:
    return {
        "samples": len(samples),
        "p50_ms": round(harness.percentile(samples, 50), 1),
        "p95_ms": round(harness.percentile(samples, 95), 1),
        "max_ms": round(max(samples), 1),
        "target_ms": target,
        "target_at": f"p{pct:.0f}" if pct < 100 else "max",
        "within_target": (harness.percentile(samples, pct) if pct < 100 else max(samples)) <= target,
    }


def measure(db: harness.BenchDatabase, orders: int, cancels: int) -> dict[str, Any]:
    db.fresh()
    with harness.Site(
        db,
        {
            "staffed-1": ["--concurrency", "64", "--handler", "orders.handlers.staffed"],
            "sim-1": ["--concurrency", "16"],
        },
        collectstatic=True,
        kitchen_speed=1,
        relay_poll_interval=0.05,
    ) as server:
        # The servers are started: this process's ORM calls from the asyncio client and from
        # Playwright's sync API (which looks like an event loop to Django) are plain blocking calls.
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
        session = staff_session()
        taps = asyncio.run(tap_to_customer(server.port, session, orders))
        stops = cancel_stops_kitchen(cancels)
        tickets = cancel_clears_ticket(server.port, session, cancels)
    return {
        "tap_to_customer": summary(taps, TAP_TARGET_P95_MS[db.engine]),
        "cancel_to_simulated_stop": summary(stops, STOP_TARGET_MS, pct=100),
        "cancel_to_ticket_gone": summary(tickets, TICKET_TARGET_MS, pct=100),
    }


def main() -> None:
    p = harness.parser(__doc__.splitlines()[0])
    p.set_defaults(pg_url=DEFAULT_PG_URL)
    p.add_argument("--orders", type=int, default=25, help="Orders tapped through four stages (default: %(default)s).")
    p.add_argument("--cancels", type=int, default=10, help="Cancels of each kind (default: %(default)s).")
    args = p.parse_args()
    results = harness.run_per_engine(args, lambda db: measure(db, args.orders, args.cancels))
    rows = [
        (
            engine,
            what,
            r[what]["samples"],
            r[what]["p50_ms"],
            r[what]["p95_ms"],
            r[what]["max_ms"],
            f"{r[what]['target_at']} <= {r[what]['target_ms']:.0f}",
            "yes" if r[what]["within_target"] else "NO",
        )
        for engine, r in results.items()
        for what in ("tap_to_customer", "cancel_to_simulated_stop", "cancel_to_ticket_gone")
    ]
    config = {"orders": args.orders, "cancels": args.cancels, "check_interval_s": 0.2, **harness.machine()}
    harness.report(
        "kitchen", args, results, config, rows, ("engine", "what", "n", "p50 ms", "p95 ms", "max ms", "target", "met")
    )


if __name__ == "__main__":
    main()
