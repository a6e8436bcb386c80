"""Fast paths against the plain Django/DRF way: is each hand-written shortcut worth it?

Each pair runs the project's code ("fast") and the stock way of doing the same
thing ("plain", written here or switched on by patching module constants in
this process only), interleaved A, B, A, B, ... so drift on a shared machine
hits both alike. Reported per operation: median and p95 of each, plain/fast
(above 1: the fast path is quicker), the time saved, and how often the fast
one won its pair (about 50 %: noise).

1. place(): a delivery order's one statement (its quote inside it) committed
   synchronously, vs the same statement committed without waiting and a
   flush-waiting second transaction after it (PIZZAQUEUE_INTAKE_SHARED_FLUSH);
   also pickup, from before place() to a real worker's claim.
2. `connections[DEFAULT_DB_ALIAS]` vs the `connection` proxy: the
   get_db_prep_save loop of `_place_in_one_statement`, and `rows.load`.
3. The token lookup (`orders.authentication`) vs DRF's TokenAuthentication.
4. The claim building Orders with `rows.load` vs `Order.objects.raw` (same
   SQL); also 100 rows read and loaded both ways, with no write.
5. The menu lookup (`intake._on_the_menu`) vs an ORM `values_list`.
6. `KeysetPagination.merged` vs `order_by(...)[:n + 1]`, first and deep page
   of a `--rows` table.
7. `Relay.publish` skipping unwatched order groups vs group_send to every group.

Items 1, 4 (the claim) and 6 are PostgreSQL only (null on SQLite).

    .venv/bin/python bench/fastpaths.py [--db postgres|sqlite|both] [--rows 300000] [--json-only]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import statistics
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

import harness

DEFAULT_PG_URL = "postgres://postgres@127.0.0.1:5432/pizzaqueue_fastpaths"
PAGE_SIZE = 50

Samples = dict[str, list[float]]  # "fast" / "plain": seconds per operation, paired by index


# --- Timing and statistics ------------------------------------------------------------------


def interleaved(
    fast: Callable[[], object],
    plain: Callable[[], object],
    rounds: int,
    *,
    per_round: int = 1,
    warmup: int = 3,
    before: Callable[[], object] | None = None,
) -> Samples:
    """A, B, A, B, ...: each sample is the mean of `per_round` calls; `before` runs untimed before each."""
    samples: Samples = {"fast": [], "plain": []}
    gc.collect()
    for n in range(warmup + rounds):
        for name, function in (("fast", fast), ("plain", plain)):
            if before is not None:
                before()
            started = time.perf_counter()
            for _ in range(per_round):
                function()
            elapsed = (time.perf_counter() - started) / per_round
            if n >= warmup:
                samples[name].append(elapsed)
    return samples


async def interleaved_async(
    fast: Callable[[], Awaitable[object]],
    plain: Callable[[], Awaitable[object]],
    rounds: int,
    *,
    warmup: int = 3,
    before: Callable[[], Awaitable[object]] | None = None,
) -> Samples:
    samples: Samples = {"fast": [], "plain": []}
    gc.collect()
    for n in range(warmup + rounds):
        for name, function in (("fast", fast), ("plain", plain)):
            if before is not None:
                await before()
            started = time.perf_counter()
            await function()
            elapsed = time.perf_counter() - started
            if n >= warmup:
                samples[name].append(elapsed)
    return samples


def summary(item: int, what: str, samples: Samples, unit: str, **extra: Any) -> dict[str, Any]:
    scale = {"us": 1e6, "ms": 1e3}[unit]
    fast, plain = samples["fast"], samples["plain"]

    def value(x: float) -> float:
        x *= scale
        return round(x, 3 if abs(x) < 10 else 2 if abs(x) < 1000 else 1)

    fast_median, plain_median = statistics.median(fast), statistics.median(plain)
    return {
        "item": item,
        "what": what,
        "unit": unit,
        "pairs": len(fast),
        "fast": {"median": value(fast_median), "p95": value(harness.percentile(fast, 95))},
        "plain": {"median": value(plain_median), "p95": value(harness.percentile(plain, 95))},
        "plain_over_fast": round(plain_median / fast_median, 3),
        "saved": value(plain_median - fast_median),
        "fast_wins_pct": round(100 * sum(f < p for f, p in zip(fast, plain, strict=True)) / len(fast), 1),
        **extra,
    }


@contextlib.contextmanager
def patched(module: Any, **values: Any) -> Iterator[None]:
    saved = {name: getattr(module, name) for name in values}
    for name, value in values.items():
        setattr(module, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(module, name, value)


@contextlib.contextmanager
def captured_sql() -> Iterator[list[tuple[str, Any]]]:
    """The (sql, params) of every statement run meanwhile on the default connection."""
    from django.db import connection

    seen: list[tuple[str, Any]] = []

    def wrapper(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        seen.append((sql, params))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(wrapper):
        yield seen


def truncate_orders() -> None:
    from django.db import connection

    from workers.models import Order, OrderEvent

    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {OrderEvent._meta.db_table}, {Order._meta.db_table}")


# --- 7. The relay's publish -------------------------------------------------------------------


def relay_publish(args: argparse.Namespace) -> dict[str, Any]:
    from django.utils import timezone

    from orders.timeline import event_message
    from workers import relay as relay_module
    from workers.models import OrderEvent

    events = [
        OrderEvent(
            id=n + 1,
            order_id=uuid.uuid4(),
            kind=OrderEvent.Kind.STAGE,
            created_at=timezone.now(),
            worker_id=None,
            stage="oven",
            message="",
            data={},
        )
        for n in range(args.relay_events)
    ]
    watched = [str(e.order_id) for e in events[:: max(1, len(events) // args.relay_watched)][: args.relay_watched]]

    async def publish_to_every_group(relay: Any, batch: Sequence[Any], after: int) -> None:
        """Relay.publish without the peek at the layer's groups: a group_send per order."""
        messages = [event_message(e) for e in batch]
        by_order: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for message in messages:
            by_order[message["order"]].append(message)
        for order_id, order_messages in by_order.items():
            await relay.channel_layer.group_send(
                relay_module.order_group(order_id), {"type": "order.events", "events": order_messages}
            )
        await relay.channel_layer.group_send(
            relay_module.BOARD_GROUP,
            {"type": "board.events", "after": after, "upto": relay.watermark, "events": messages},
        )

    async def run() -> Samples:
        relay = relay_module.Relay(asyncio.get_running_loop(), event_message)
        layer = relay.channel_layer
        await layer.flush()
        members = []
        for order_id in watched:
            channel = await layer.new_channel()
            await layer.group_add(relay_module.order_group(order_id), channel)
            members.append(channel)
        for _ in range(args.relay_board_watchers):
            channel = await layer.new_channel()
            await layer.group_add(relay_module.BOARD_GROUP, channel)
            members.append(channel)
        relay.watermark = len(events)

        async def drain() -> None:  # untimed: the watchers read what they were sent
            for channel in members:
                while channel in layer.channels:
                    await layer.receive(channel)

        delivered = {}
        for name, publish in (("fast", relay.publish), ("plain", lambda *a: publish_to_every_group(relay, *a))):
            await drain()
            await publish(events, 0)
            delivered[name] = sum(layer.channels[c].qsize() for c in members if c in layer.channels)
        if delivered["fast"] != delivered["plain"]:
            raise RuntimeError(f"the two publishes delivered differently: {delivered}")
        try:
            return await interleaved_async(
                lambda: relay.publish(events, 0),
                lambda: publish_to_every_group(relay, events, 0),
                args.relay_rounds,
                before=drain,
            )
        finally:
            await layer.flush()
            relay._executor.shutdown(wait=False)

    samples = asyncio.run(run())
    return summary(
        7,
        f"Relay.publish, {len(events)} events / {len(events)} orders, {len(watched)} watched",
        samples,
        "us",
        board_watchers=args.relay_board_watchers,
    )


# --- 5. The menu lookup -------------------------------------------------------------------------


def menu_lookup(args: argparse.Namespace) -> list[dict[str, Any]]:
    from orders import intake
    from orders.models import Pizza

    def plain(slugs: set[str]) -> dict[str, int]:
        return dict(Pizza.objects.filter(available=True, slug__in=slugs).values_list("slug", "bake_seconds"))

    results = []
    for slugs in ({"margherita"}, {"margherita", "diavola", "funghi"}):
        if intake._on_the_menu(slugs) != plain(slugs) or len(plain(slugs)) != len(slugs):
            raise RuntimeError("menu lookups disagree")
        samples = interleaved(lambda s=slugs: intake._on_the_menu(s), lambda s=slugs: plain(s), args.db_rounds)
        results.append(summary(5, f"menu lookup, {len(slugs)} slug{'s' * (len(slugs) > 1)}", samples, "us"))
    return results


# --- 3. The token lookup --------------------------------------------------------------------------


def token_lookup(args: argparse.Namespace) -> dict[str, Any]:
    from django.contrib.auth.models import User
    from rest_framework import authentication as drf
    from rest_framework.authtoken.models import Token

    from orders import authentication

    key = Token.objects.create(user=User.objects.create_user("bench-token")).key
    fast, plain = authentication.TokenAuthentication(), drf.TokenAuthentication()
    (fast_user, fast_token), (plain_user, plain_token) = (
        fast.authenticate_credentials(key),
        plain.authenticate_credentials(key),
    )
    if (fast_user.pk, fast_token.pk, fast_user.username) != (plain_user.pk, plain_token.pk, plain_user.username):
        raise RuntimeError("token lookups disagree")
    samples = interleaved(
        lambda: fast.authenticate_credentials(key), lambda: plain.authenticate_credentials(key), args.db_rounds
    )
    return summary(3, "token lookup (authenticate_credentials)", samples, "us")


# --- 2. connections[DEFAULT_DB_ALIAS] vs the `connection` proxy --------------------------------------


def proxy_bypass(args: argparse.Namespace) -> list[dict[str, Any]]:
    from django.db import connection

    from workers import sql as rows
    from workers.models import Order

    fields = Order._meta.concrete_fields

    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM orders_order LIMIT 1")
        row = cursor.fetchone()
        names = tuple(d[0] for d in cursor.description)

    def load_plain(model: type[Order], row: Sequence[Any]) -> Order:  # rows.load, through the proxy
        positions, attnames, converters = rows._loading(model, connection.vendor, names)
        values = [row[p] for p in positions]
        for n, convert, col in converters:
            values[n] = convert(values[n], col, connection)
        return model.from_db(connection.alias, attnames, values)

    a, b = rows.load(Order, row, names), load_plain(Order, row)
    if [getattr(a, f.attname) for f in fields] != [getattr(b, f.attname) for f in fields]:
        raise RuntimeError("loaded orders disagree")
    n = args.micro_per_round
    return [
        summary(
            2,
            "rows.load of one Order row",
            interleaved(
                lambda: rows.load(Order, row, names), lambda: load_plain(Order, row), args.micro_rounds, per_round=n
            ),
            "us",
        ),
    ]


# --- 4. Orders from rows: the claim, and a read --------------------------------------------------------


def rows_select(args: argparse.Namespace, count: int = 100) -> dict[str, Any]:
    """The same 100 order rows read by fixed SQL and loaded with rows.load, or by a RawQuerySet (no write)."""
    from django.db import connection

    from workers import sql as rows
    from workers.models import Order

    sql = "SELECT * FROM orders_order ORDER BY rank, created_at LIMIT %s"

    def fast() -> list[Order]:
        with connection.cursor() as cursor:
            cursor.execute(sql, [count])
            return rows.rows(Order, cursor)

    def plain() -> list[Order]:
        return list(Order.objects.raw(sql, [count]))

    if [o.pk for o in fast()] != [o.pk for o in plain()] or len(fast()) != count:
        raise RuntimeError("row loads disagree")
    samples = interleaved(fast, plain, args.db_rounds // 4)
    return summary(4, f"SELECT {count} orders -> Orders (no write)", samples, "us")


def claims(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The claim on PostgreSQL, refilled before every timed claim so each finds exactly `limit` queued orders."""
    from django.db import connection
    from django.utils import timezone

    from workers import membership, queue
    from workers.models import Order
    from workers.queue import leases

    truncate_orders()
    worker = membership.register("bench-claim", "bench", os.getpid(), 4)
    wid = worker.pk

    # The plain variant runs the very SQL the fast one sends (captured from it), through Order.objects.raw.
    queue.place_many(harness.order_requests(1))
    with captured_sql() as seen:
        leases.claim_in_one_statement(wid, 1, timezone.now())
    (claim_sql,) = [sql for sql, _ in seen if "SKIP LOCKED" in sql]

    def plain_claim(limit: int) -> list[queue.Claim]:
        token, now = uuid.uuid4(), timezone.now()
        params = {
            "now": now,
            "worker": wid,
            "limit": limit,
            "token": token,
            "lease": queue.lease_duration(),
            "steal_after": None,
        }
        claimed = list(Order.objects.raw(claim_sql, params))
        claimed.sort(key=lambda o: (o.rank, o.created_at))
        return [queue.Claim(o, token) for o in claimed]

    def fast_claim(limit: int) -> list[queue.Claim]:
        return leases.claim_in_one_statement(wid, limit, timezone.now())

    results = []
    try:
        for limit, rounds in ((1, args.claim_rounds), (100, max(10, args.claim_rounds // 5))):
            requests = harness.order_requests(limit)
            got: dict[str, list[int]] = {"fast": [], "plain": []}

            def run(name: str, claim: Callable[[int], list[queue.Claim]], limit: int = limit, got: Any = got) -> None:
                got[name].append(len(claim(limit)))

            # Check once, untimed, that both hand back the same kind of orders.
            queue.place_many(requests)
            one = fast_claim(limit)[0].order
            queue.place_many(requests)
            other = plain_claim(limit)[0].order
            if [type(getattr(one, f.attname)) for f in Order._meta.concrete_fields] != [
                type(getattr(other, f.attname)) for f in Order._meta.concrete_fields
            ]:
                raise RuntimeError("claimed orders differ in kind")
            samples = interleaved(
                lambda r=run: r("fast", fast_claim),
                lambda r=run: r("plain", plain_claim),
                rounds,
                before=lambda r=requests: queue.place_many(r),
            )
            if set(got["fast"]) != {limit} or set(got["plain"]) != {limit}:
                raise RuntimeError(f"a claim of {limit} got {set(got['fast'])} / {set(got['plain'])} orders")
            results.append(summary(4, f"claim of {limit} order{'s' * (limit > 1)}", samples, "us"))
    finally:
        truncate_orders()
        membership.stop(wid)
        connection.close()
    return results


# --- 1. place(): one synchronous statement, or a shared flush after it --------------------------------


def shared_flush_place(request: Any, now: Any = None) -> Any:
    """place() with PIZZAQUEUE_INTAKE_SHARED_FLUSH: the statement commits without waiting,
    a second transaction in the same round trip waits for the flush."""
    from django.test import override_settings

    from workers import queue

    with override_settings(PIZZAQUEUE_INTAKE_SHARED_FLUSH=True):
        return queue.place(request, now=now)


def check_place_variants() -> None:
    from workers import queue

    request = harness.order_requests(1)[0]
    with captured_sql() as fast:
        queue.place(request)
    with captured_sql() as plain:
        shared_flush_place(request)
    if "pg_logical_emit_message" in fast[-1][0] or fast[-1][1]["synchronous_commit"] is not None:
        raise RuntimeError("the default place() waits for its flush in a second transaction: update the benchmark")
    if not ("pg_logical_emit_message" in plain[-1][0] and plain[-1][1]["synchronous_commit"] == "off"):
        raise RuntimeError("the shared-flush place() no longer commits asynchronously: update the benchmark")


def place_latency(args: argparse.Namespace) -> dict[str, Any]:
    from workers import queue

    check_place_variants()
    request = harness.order_requests(1)[0]
    samples = interleaved(lambda: queue.place(request), lambda: shared_flush_place(request), args.place_rounds)
    truncate_orders()
    return summary(1, "place() call, delivery order, autocommit", samples, "ms")


def pickup(db: harness.BenchDatabase, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Orders placed one at a time, a gap apart, alternating fast/plain, each found by idle real workers."""
    from django.utils import timezone

    from workers import queue
    from workers.models import Order

    truncate_orders()
    requests = harness.order_requests(args.pickup_orders)
    variants = (("fast", queue.place), ("plain", shared_flush_place))
    placed: dict[uuid.UUID, tuple[str, float, float]] = {}
    with harness.WorkerProcesses(db, args.pickup_workers, concurrency=harness.CONCURRENCY, prefetch=harness.PREFETCH):
        started = time.perf_counter()
        for n, request in enumerate(requests):
            name, place = variants[n % 2]
            before = timezone.now()
            t = time.perf_counter()
            order, _ = place(request, now=before)
            placed[order.id] = (name, before.timestamp(), time.perf_counter() - t)
            delay = started + (n + 1) * args.pickup_gap_ms / 1000 - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        harness.wait_until(lambda: not harness.unfinished(), 60, what="every order to be picked up")
    pickups: Samples = {"fast": [], "plain": []}
    calls: Samples = {"fast": [], "plain": []}
    warmup = 10  # the first orders wake a cold worker
    for n, (pk, claimed) in enumerate(
        sorted(Order.objects.values_list("id", "claimed_at"), key=lambda r: placed[r[0]][1])
    ):
        name, before, call = placed[pk]
        if n >= warmup:
            pickups[name].append(claimed.timestamp() - before)
            calls[name].append(call)
    pairs = min(len(pickups["fast"]), len(pickups["plain"]))
    pickups = {k: v[:pairs] for k, v in pickups.items()}
    calls = {k: v[:pairs] for k, v in calls.items()}
    check = harness.check_exactly_once(args.pickup_orders)
    truncate_orders()
    extra = {"workers": args.pickup_workers, "gap_ms": args.pickup_gap_ms, "exactly_once": check["exactly_once"]}
    return [
        summary(1, "pickup: before place() -> worker's claim", pickups, "ms", **extra),
        summary(1, "place() call while workers listen", calls, "ms", **extra),
    ]


# --- 6. The order list's first page: merged per-status ranges vs one ORDER BY ----------------------------


def pagination(args: argparse.Namespace) -> list[dict[str, Any]]:
    import api  # bench/api.py: its INSERT ... SELECT generate_series of orders over statuses

    from orders.pagination import OrderPagination
    from workers.models import Order

    truncate_orders()
    insert_seconds = api.bulk_insert(args.rows)
    paginator = OrderPagination()
    base = Order.objects.select_related("worker").order_by(*paginator.ordering)
    partition = ("status", Order.Status.values)
    deep_index = int(args.rows * args.deep)
    position = list(Order.objects.order_by(*paginator.ordering).values_list(*paginator.fields)[deep_index])

    results = []
    for label, queryset in (
        ("first page", base),
        (f"deep page (cursor at row {deep_index:,})", base.filter(paginator.after(position))),
    ):

        def fast(qs: Any = queryset) -> list[Order]:
            return paginator.merged(qs, partition, PAGE_SIZE + 1)

        def plain(qs: Any = queryset) -> list[Order]:
            return list(qs[: PAGE_SIZE + 1])

        same = [o.pk for o in fast()] == [o.pk for o in plain()] and len(fast()) == PAGE_SIZE + 1
        if not same:
            raise RuntimeError(f"{label}: the two pages differ")
        samples = interleaved(fast, plain, args.page_rounds, warmup=2)
        results.append(
            summary(
                6,
                f"order list {label}, {PAGE_SIZE} of {args.rows:,}",
                samples,
                "ms",
                same_rows=same,
                bulk_insert_seconds=round(insert_seconds, 1),
            )
        )
    truncate_orders()
    return results


# --- The run ----------------------------------------------------------------------------------


def measure(db: harness.BenchDatabase, args: argparse.Namespace) -> dict[str, Any]:
    from django.db import connection

    from workers import queue

    db.fresh()
    postgres = db.engine == "postgres"
    results: list[dict[str, Any]] = []
    pg_only: list[tuple[int, str]] = [(1, "place() / pickup"), (4, "claim"), (6, "order list pages")]

    results.append(relay_publish(args))
    queue.place_many(harness.order_requests(100))  # rows to load (2, 4)
    results += menu_lookup(args)
    results.append(token_lookup(args))
    results += proxy_bypass(args)
    results.append(rows_select(args))
    if postgres:
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_setting('fsync'), current_setting('synchronous_commit')")
            fsync, synchronous_commit = cursor.fetchone()
        results.append(place_latency(args))
        results += claims(args)
        results += pickup(db, args)
        results += pagination(args)
        server = {"fsync": fsync, "synchronous_commit": synchronous_commit}
    else:
        results += [{"item": item, "what": what, "result": None} for item, what in pg_only]
        server = None
    results.sort(key=lambda r: r["item"])
    return {"pairs": results, "server": server}


def main() -> None:
    p = harness.parser(__doc__.splitlines()[0])
    p.set_defaults(pg_url=DEFAULT_PG_URL)
    p.add_argument(
        "--rows", type=int, default=300_000, help="Orders in the table for the list pages (default: %(default)s)."
    )
    p.add_argument(
        "--deep", type=float, default=0.5, help="Where the deep page's cursor is, as a fraction of the rows."
    )
    p.add_argument("--page-rounds", type=int, default=15, help="Pairs per list page (default: %(default)s).")
    p.add_argument("--place-rounds", type=int, default=500, help="Pairs of place() calls (default: %(default)s).")
    p.add_argument(
        "--claim-rounds",
        type=int,
        default=300,
        help="Pairs of 1-order claims; a fifth as many of 100 (default: %(default)s).",
    )
    p.add_argument(
        "--pickup-orders", type=int, default=400, help="Orders for pickup, alternating (default: %(default)s)."
    )
    p.add_argument("--pickup-gap-ms", type=float, default=20.0, help="Time between two orders (default: %(default)s).")
    p.add_argument("--pickup-workers", type=int, default=1, help="Idle worker processes (default: %(default)s).")
    p.add_argument("--db-rounds", type=int, default=2000, help="Pairs of one-query calls (default: %(default)s).")
    p.add_argument("--micro-rounds", type=int, default=200, help="Pairs of blocks for item 2 (default: %(default)s).")
    p.add_argument(
        "--micro-per-round", type=int, default=200, help="Calls per block for item 2 (default: %(default)s)."
    )
    p.add_argument("--relay-rounds", type=int, default=300, help="Pairs of publishes (default: %(default)s).")
    p.add_argument(
        "--relay-events", type=int, default=500, help="Events per batch, one order each (default: %(default)s)."
    )
    p.add_argument("--relay-watched", type=int, default=5, help="Order groups with a member (default: %(default)s).")
    p.add_argument(
        "--relay-board-watchers", type=int, default=0, help="Members of the board group (default: %(default)s)."
    )
    args = p.parse_args()
    host = harness.machine()

    results = harness.run_per_engine(args, lambda db: measure(db, args))
    rows, skipped = [], []
    for engine, result in results.items():
        for r in result["pairs"]:
            if r.get("result", True) is None:
                skipped.append(f"{engine}: {r['item']}. {r['what']}")
                continue
            rows.append(
                (
                    engine,
                    r["item"],
                    r["what"],
                    r["unit"],
                    r["fast"]["median"],
                    r["fast"]["p95"],
                    r["plain"]["median"],
                    r["plain"]["p95"],
                    r["plain_over_fast"],
                    r["saved"],
                    r["fast_wins_pct"],
                )
            )
    headers = (
        "db",
        "item",
        "operation",
        "unit",
        "fast p50",
        "fast p95",
        "plain p50",
        "plain p95",
        "plain/fast",
        "saved p50",
        "fast wins %",
    )
    config = {k: v for k, v in vars(args).items() if k not in ("db", "json_only")} | host
    harness.report("fastpaths", args, results, config, rows, headers)
    if skipped and not args.json_only:
        print("\nnull (PostgreSQL only): " + "; ".join(skipped))


if __name__ == "__main__":
    main()
