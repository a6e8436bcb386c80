"""Promises against what happened: the fixed estimate and the quote from the live queue, in one dinner rush.

A seeded dinner rush goes through the real queue: orders placed through the
shop's intake and `queue.place` (as the form and the API place them) at a rate
that rises and falls, made by real `manage.py worker` processes: three
simulated shops and a staffed one (`orders.handlers.staffed`, its stand-in cook
taking every step), with one simulated shop SIGKILLed a third of the way in (its
delivery orders move when the monitor declares it dead; its takeaway orders wait
for it, and are cancelled once it has stayed down for PIZZAQUEUE_SHOP_CLOSED_AFTER).
Stand-ins (`manage.py standins`) hand every made order over: a driver takes a
delivery order off its shelf after 1.5 s and drives for its area's time (30,
60 or 90 s), the counter hands a takeaway order over. Every order that was made
is then judged twice from the database, against when its customer had it: a
delivery order at the door (its `delivered` event), a takeaway order ready to
collect (its `done` event, plus PIZZAQUEUE_COLLECTION_SECONDS):

- today's fixed estimate (`orders.deadlines.fixed_seconds`: the order's own
  kitchen time with 50 % slack, from when it was due, whatever waits ahead),
  plus the same hand-over time the quote adds;
- the quote (`orders.promises`): the promise made at placing, and every
  revision the keeper told the customer before the order was there.

For each: p50 and p90 of |promised − actual| (the quote's at placing, and the
last one the customer read), the share of orders there after their promise,
and the share *silently* late: there after a promise nobody revised before it
passed (the fixed estimate is never revised, so each of its late orders is).
Also the quote's cost: the statement at placing, and the keeper's round.

The clock is the defaults' on a ten-times-faster scale, so the rush takes a
minute, not ten: kitchen speed 0.1 (a margherita's 40 s take 4 s), heartbeat
0.5 s / timeout 1.5 s, monitor round 0.1 s, promise tolerance 6 s; the
threshold share, margin and slots are the defaults.

    .venv/bin/python bench/promises.py [--db postgres|sqlite|both] [--orders 150] [--seed 26]
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import harness

DEFAULT_PG_URL = "postgres://postgres@127.0.0.1:5432/pizzaqueue_bench_promises"
SCALE = 0.1
SETTINGS = {
    "kitchen_speed": 1.0 * SCALE,
    "heartbeat_interval": 5.0 * SCALE,
    "heartbeat_timeout": 15.0 * SCALE,
    "monitor_interval": 1.0 * SCALE,
    "poll_interval": 0.05,
    "retry_backoff": 2.0 * SCALE,
    "kitchen_check_interval": 0.1,
    "staffed_standby": 15.0 * SCALE,
    "promise_tolerance": 60.0 * SCALE,
    "shop_closed_after": 300.0 * SCALE,
    # A drive: ten minutes, five to the nearest areas, a quarter of an hour to the farthest.
    "delivery_seconds": 600.0 * SCALE,
    "area_delivery_seconds": ",".join(
        [f"area-{n}={300.0 * SCALE:g}" for n in range(4)] + [f"area-{n}={900.0 * SCALE:g}" for n in range(8, 12)]
    ),
}
# A made order waits this long for a person before a stand-in hands it over (`manage.py standins`).
STANDBY = 15.0 * SCALE
SIMULATED = ("shop-1", "shop-2", "shop-3")
STAFFED = "staffed-1"
DOOMED = "shop-2"
AREAS = 12
# The quote's targets: p90 error at most half the fixed estimate's, nobody silently late.
TARGET_P90_SHARE = 0.5


class Kitchens:
    """The shops' worker processes, each in its own session; always stopped on exit."""

    def __init__(self, db: harness.BenchDatabase) -> None:
        self.env = harness.child_env(db.url, **SETTINGS)
        self.logdir = Path(tempfile.mkdtemp(prefix="pizzaqueue-bench-promises-"))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def __enter__(self) -> Kitchens:
        for name in (*SIMULATED, STAFFED):
            args = ["--handler", "orders.handlers.staffed"] if name == STAFFED else []
            self.start(name, "worker", "--name", name, *args)
        harness.wait_until(self.ready, 60, interval=0.1, what="the kitchens to join")
        self.start("standins", "standins", "--standby", str(STANDBY), "--every", "0.1")
        return self

    def start(self, name: str, *command: str) -> None:
        """`manage.py COMMAND` in its own session, its output in the log folder."""
        log = open(self.logdir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        self.procs[name] = subprocess.Popen(  # noqa: S603 - our own command
            [sys.executable, "manage.py", *command],
            cwd=harness.ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def ready(self) -> bool:
        from workers.models import Bucket, Worker

        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited:\n{self.logs()}")
        live = set(Worker.objects.live().filter(name__in=list(self.procs)).values_list("pk", flat=True))
        return (
            len(live) == len([*SIMULATED, STAFFED]) and set(Bucket.objects.values_list("owner_id", flat=True)) == live
        )

    def kill(self, name: str) -> None:
        self.procs[name].send_signal(signal.SIGKILL)
        self.procs[name].wait()

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in self.logdir.glob("*.log"))

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def rush(seed: int, count: int) -> list[tuple[float, dict[str, Any]]]:
    """(seconds after the start, order data): a dinner rush whose rate rises to four
    orders a second and falls back; a fifth takeaway, a few scheduled for later, a few rushed."""
    from orders.menu import HOUSE_MENU

    rng = random.Random(seed)  # noqa: S311 - synthetic orders
    slugs = [slug for slug, *_ in HOUSE_MENU]
    plan: list[tuple[float, dict[str, Any]]] = []
    at = 0.0
    for n in range(count):
        rate = 1.0 + 3.0 * (1 - abs(2 * n / count - 1))  # 1/s, up to 4/s half-way, back to 1/s
        at += rng.expovariate(rate)
        data: dict[str, Any] = {
            "items": [
                {"pizza": rng.choice(slugs), "size": rng.choice(["small", "medium", "large"]), "quantity": 1}
                for _ in range(rng.choice([1, 1, 1, 2, 2, 3]))
            ],
            "customer_name": f"Rush customer {n + 1}",
        }
        if rng.random() < 0.2:
            data.update(kind="takeaway", shop=rng.choice([*SIMULATED, STAFFED]))
        else:
            data.update(area=f"area-{rng.randrange(AREAS)}", address=f"{n + 1} Rush Street", phone="+15550000000")
        if rng.random() < 0.1:
            data["priority"] = rng.choice([3, 6, 9])
        if rng.random() < 0.05:
            data["scheduled_in"] = rng.uniform(10, 30)
        plan.append((at, data))
    return plan


def place_rush(plan: list[tuple[float, dict[str, Any]]], kitchens: Kitchens, kill_at: float) -> dict[str, Any]:
    """Place the rush on schedule, SIGKILL the doomed shop at `kill_at` seconds; the
    placing times (ms) and the quote's and the keeper's cost measured at the peak."""
    from datetime import timedelta

    from orders import promises
    from orders.intake import clean_order_request
    from workers import clock, queue

    started = time.monotonic()
    placing: list[float] = []
    killed = False
    cost: dict[str, Any] = {}
    for n, (at, data) in enumerate(plan):
        if not killed and at >= kill_at:
            kitchens.kill(DOOMED)
            killed = True
        delay = started + at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        data = dict(data)
        scheduled_in = data.pop("scheduled_in", None)
        if scheduled_in is not None:
            data["not_before"] = (clock.now() + timedelta(seconds=scheduled_in)).isoformat()
        try:
            request = clean_order_request(data)
        except Exception as exc:  # noqa: BLE001 - a takeaway shop closed: the customer is told at the form
            if "shop" not in str(exc):
                raise
            continue
        begin = time.perf_counter()
        try:
            queue.place(request)
        except Exception as exc:  # noqa: BLE001 - the doomed shop is closed: the form says so
            if "shop" not in str(exc):
                raise
            continue
        placing.append((time.perf_counter() - begin) * 1000)
        if n == len(plan) // 2:
            cost = measure_cost(promises, clock)
    return {"place_ms": placing, **cost}


def measure_cost(promises: Any, clock: Any) -> dict[str, Any]:
    """The quote's statement for a new order, and a keeper's round (without its writes),
    against the queue as it stands at the rush's peak."""
    from django.conf import settings

    from orders.intake import clean_order_request
    from workers import ring
    from workers.models import Order

    request = clean_order_request(
        {
            "items": [{"pizza": "margherita", "size": "medium", "quantity": 1}],
            "address": "1 Rush Street",
            "phone": "+15550000000",
        }
    )
    quotes = []
    for n in range(20):
        now = clock.now()
        order = Order(
            kind=request.kind,
            area=f"area-{n % AREAS}",
            bucket=ring.bucket_for(f"area-{n % AREAS}", settings.PIZZAQUEUE_BUCKETS),
            rank=int(now.timestamp() * 1_000_000),
            eligible_at=now,
            estimated_seconds=request.estimated_seconds,
        )
        begin = time.perf_counter()
        promises.quote([order], now)
        quotes.append((time.perf_counter() - begin) * 1000)
    rounds = []
    walked = Order.objects.filter(status__in=["queued", "preparing"]).count()
    for _ in range(5):
        begin = time.perf_counter()
        promises.judge(clock.now())
        rounds.append((time.perf_counter() - begin) * 1000)
    return {
        "quote_ms_p50": round(harness.percentile(quotes, 50), 2),
        "keeper_round_ms_p50": round(harness.percentile(rounds, 50), 1),
        "unfinished_at_peak": walked,
    }


def judge_promises() -> dict[str, Any]:
    """Each made order's promises against when its customer had it: a delivery order's
    `delivered` event, a takeaway order's `done` plus the collection time."""
    from collections import defaultdict
    from datetime import datetime, timedelta

    from orders.deadlines import fixed_promise
    from orders.promises import handover_seconds
    from workers.models import Order, OrderEvent

    done_at = dict(OrderEvent.objects.filter(kind=OrderEvent.Kind.DONE).values_list("order_id", "created_at"))
    delivered_at = dict(OrderEvent.objects.filter(kind=OrderEvent.Kind.DELIVERED).values_list("order_id", "created_at"))
    revisions: dict[Any, list[tuple[datetime, datetime, datetime | None]]] = defaultdict(list)
    for order_id, created_at, data in (
        OrderEvent.objects.filter(kind=OrderEvent.Kind.PROMISED)
        .order_by("id")
        .values_list("order_id", "created_at", "data")
    ):
        by = datetime.fromisoformat(data["by"])
        was = datetime.fromisoformat(data["was"]) if data.get("was") else None
        revisions[order_id].append((created_at, by, was))
    moved = set(OrderEvent.objects.filter(kind=OrderEvent.Kind.REASSIGNED).values_list("order_id", flat=True))
    staffed = set(
        OrderEvent.objects.filter(kind=OrderEvent.Kind.DONE, worker__name=STAFFED).values_list("order_id", flat=True)
    )
    groups: dict[str, list[float]] = defaultdict(list)
    fixed_errors, first_errors, last_errors = [], [], []
    fixed_late = first_late = last_late = silent = revised = 0
    made = Order.objects.filter(status=Order.Status.DONE).values_list(
        "id", "kind", "area", "rank", "priority", "estimated_seconds", "promised_at"
    )
    for order_id, kind, area, rank, priority, estimated, promised in made:
        handover = timedelta(seconds=handover_seconds(kind, area))
        # When its customer had it: at the door, or ready to collect.
        ready = delivered_at[order_id] if kind == Order.Fulfilment.DELIVERY else done_at[order_id] + handover
        fixed = fixed_promise(rank, priority, estimated) + handover
        history = revisions.get(order_id, [])
        first = history[0][2] if history else promised
        fixed_errors.append(abs((fixed - ready).total_seconds()))
        first_errors.append(abs((first - ready).total_seconds()))
        group = "moved" if order_id in moved else STAFFED if order_id in staffed else "others"
        groups[group].append(abs((first - ready).total_seconds()))
        last_errors.append(abs((promised - ready).total_seconds()))
        fixed_late += fixed < ready
        first_late += first < ready
        last_late += promised < ready
        revised += bool(history)
        # Silently late: a promise in force passed (before the order was ready) with no revision before it.
        in_force, told_until = first, [*(at for at, _by, _was in history), ready]
        promises_in_force = [first, *(by for _at, by, _was in history)]
        for promise, replaced_at in zip(promises_in_force, told_until, strict=True):
            if promise < replaced_at:
                silent += 1
                break
        del in_force
    total = len(done_at)

    def share(n: int) -> float:
        return round(100 * n / total, 1) if total else 0.0

    def stats(errors: list[float]) -> dict[str, float]:
        return {"p50_s": round(harness.percentile(errors, 50), 2), "p90_s": round(harness.percentile(errors, 90), 2)}

    return {
        "orders_made": total,
        "orders_cancelled": Order.objects.filter(status=Order.Status.CANCELLED).count(),
        "fixed": {**stats(fixed_errors), "late_pct": share(fixed_late), "silently_late_pct": share(fixed_late)},
        "quote": {
            **stats(first_errors),
            "late_pct": share(first_late),
            "silently_late_pct": share(silent),
            "revised_pct": share(revised),
            "revisions": sum(len(h) for h in revisions.values()),
            "last_told": {**stats(last_errors), "late_pct": share(last_late)},
            # Where the quote at placing was off: orders moved from the killed shop, the staffed shop's, the rest.
            "by_group": {name: {"orders": len(errors), **stats(errors)} for name, errors in sorted(groups.items())},
        },
    }


def handed_over() -> bool:
    from workers.models import Order

    return not Order.objects.awaiting_handover().exists()


def measure(db: harness.BenchDatabase, orders: int, seed: int) -> dict[str, Any]:
    db.fresh()
    plan = rush(seed, orders)
    kill_at = plan[len(plan) // 3][0]
    with Kitchens(db) as kitchens:
        placed = place_rush(plan, kitchens, kill_at)
        harness.wait_until(lambda: not harness.unfinished(), 600, interval=0.2, what="the rush to be made")
        harness.wait_until(handed_over, 600, interval=0.2, what="every made order to be handed over")
    result = judge_promises()
    place_ms = placed.pop("place_ms")
    result["cost"] = {
        "place_ms_p50": round(harness.percentile(place_ms, 50), 2),
        "place_ms_p90": round(harness.percentile(place_ms, 90), 2),
        **placed,
    }
    result["rush_seconds"] = round(plan[-1][0], 1)
    result["killed"] = {"shop": DOOMED, "at_s": round(kill_at, 1)}
    fixed, quote = result["fixed"], result["quote"]
    result["target_met"] = bool(quote["p90_s"] <= TARGET_P90_SHARE * fixed["p90_s"] and quote["silently_late_pct"] == 0)
    return result


def main() -> None:
    p = harness.parser(__doc__.splitlines()[0])
    p.set_defaults(pg_url=DEFAULT_PG_URL)
    p.add_argument("--orders", type=int, default=150, help="Orders in the rush (default: %(default)s).")
    p.add_argument("--seed", type=int, default=26, help="The rush's random seed (default: %(default)s).")
    args = p.parse_args()
    # This process quotes the orders it places: the same settings as the kitchens.
    os.environ.update({f"PIZZAQUEUE_{k.upper()}": str(v) for k, v in SETTINGS.items()})
    results = harness.run_per_engine(args, lambda db: measure(db, args.orders, args.seed))
    rows = []
    for engine, r in results.items():
        for name, figures in (("fixed estimate", r["fixed"]), ("quote, at placing", r["quote"])):
            rows.append(
                (
                    engine,
                    name,
                    figures["p50_s"],
                    figures["p90_s"],
                    figures["late_pct"],
                    figures["silently_late_pct"],
                )
            )
        told = r["quote"]["last_told"]
        rows.append((engine, "quote, last told", told["p50_s"], told["p90_s"], told["late_pct"], "-"))
    config = {"orders": args.orders, "seed": args.seed, "settings": SETTINGS, "shops": [*SIMULATED, STAFFED]}
    harness.report(
        "promises",
        args,
        results,
        config,
        rows,
        ("engine", "promise", "p50 |err| s", "p90 |err| s", "late %", "silently late %"),
    )


if __name__ == "__main__":
    main()
