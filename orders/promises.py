"""Promises quoted from the live queue, and kept: when a customer may expect the order.

A promise is the time the order is in its customer's hands, counted from when
it is due (when it was placed, or the `not_before` it was scheduled for):

    the wait until its shop starts it   the work ahead of it at the shop that will
                                        make it (the orders that shop holds and the
                                        queued ones it claims first), at the shop's
                                        measured pace, shared by its slots
  + its own make time                   the menu's kitchen seconds at that pace
  + the hand-over                       collection, or the area's delivery time
  + a margin                            a share of the lead, and at least three monitor
                                        rounds, so a slip is told before it shows

`quote` makes it at placing (PIZZAQUEUE_QUOTE, which `queue.place` calls): one
statement per order (`quote` in `orders/queries.sql`), or for a delivery order
on PostgreSQL the same quote in SQL inside the order's own statement
(`LiveQueueQuote.in_statement`). A scheduled order is quoted its own make time
and hand-over from when it is due; the queue it meets then is the keeper's to judge.

`keep` is the monitor's duty (PIZZAQUEUE_MONITOR_DUTY), every round:

1. measure each shop's pace from the orders finished since the last round
   (`ShopPace`; before any, a simulated kitchen's speed, or for a staffed one
   the menu's own seconds and its stand-in cook's steps);
2. predict when every unfinished order will leave its shop, walking each shop's queue
   in claim order over its slots; a shop whose heartbeat went quiet is counted
   as down, its orders moving to the shops the ring gives its buckets once the
   monitor declares it dead;
3. add the made delivery orders still on their way: on a shelf (leaving now at the
   soonest) or out with a driver (on the road for the area's delivery time);
4. revise every promise the prediction says will be missed within the next
   rounds, or is off by more than PIZZAQUEUE_PROMISE_THRESHOLD of the time left
   (at least PIZZAQUEUE_PROMISE_TOLERANCE seconds): `queue.revise_promises`
   writes each with the `promised` event the customer reads live ("Running
   late: now by 19:40").
"""

from __future__ import annotations

import heapq
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Max

from orders import sql
from orders.handlers import STAFFED_HANDLER, TAPS
from orders.models import ShopPace
from workers import queue, ring
from workers.models import CLAIM_ORDER, Bucket, Order, OrderEvent, Worker
from workers.sql import prepared_cursor

logger = logging.getLogger(__name__)

# How much less each finished order weighs in its shop's pace than the next one: about the last ten count.
PACE_DECAY = 0.9
# Finished orders (by weight) before a shop's line replaces its prior.
PACE_TRUSTED_AFTER = 3.0
# The promise's margin: this share of the time until the order is expected, and at least
# this many monitor rounds (the keeper's reaction time, and a kitchen's own overheads).
MARGIN_SHARE = 0.1
MARGIN_ROUNDS = 3
# Orders the keeper walks each round at most, in claim order (beyond them, promises are far off).
WALK_LIMIT = 5000
# Promises revised in one round at most, the most urgent first (`most_urgent`).
REVISIONS_PER_ROUND = 500
# Events a keeper new to the duty reads back for the orders just moved.
LOOKBACK_EVENTS = 1000
# Why a promise was revised, in its event's `why`.
MOVED = "moved"
SHOP_DOWN = "shop-down"
QUEUE = "queue"
DUE = "due"
ON_THE_WAY = "on-the-way"


@dataclass(frozen=True)
class Shop:
    """A kitchen as the quote sees it: its slots, and the time it takes over an order."""

    id: int
    name: str
    slots: int
    # Seconds per order, and per second of the menu's estimate.
    base: float
    factor: float
    # The least an order takes there (a staffed kitchen's stand-in cook steps through every tap).
    floor: float = 0.0

    def make(self, estimated_seconds: int) -> float:
        return max(self.base + self.factor * estimated_seconds, self.floor)

    def work(self, orders: int, estimated_seconds: int) -> float:
        """Kitchen seconds of `orders` orders of `estimated_seconds` menu seconds in all."""
        return self.base * orders + self.factor * estimated_seconds


def prior(handler: str) -> tuple[float, float]:
    """A shop's (base, factor) before it has finished enough: a simulated kitchen runs at
    PIZZAQUEUE_KITCHEN_SPEED; people work in the menu's own seconds, never faster than
    the simulation, unless a stand-in cook takes every step after a while (`floor_for`)."""
    speed = settings.PIZZAQUEUE_KITCHEN_SPEED
    if handler != STAFFED_HANDLER:
        return 0.0, speed
    if settings.PIZZAQUEUE_STAFFED_STANDBY:
        return floor_for(handler), 0.0
    return 0.0, max(1.0, speed)


def floor_for(handler: str) -> float:
    """A staffed kitchen's stand-in cook (PIZZAQUEUE_STAFFED_STANDBY) takes each tap after
    that long, and the kitchen sees it at its next look: the least an order takes there."""
    standby = settings.PIZZAQUEUE_STAFFED_STANDBY
    if handler != STAFFED_HANDLER or not standby:
        return 0.0
    return len(TAPS) * (standby + settings.PIZZAQUEUE_KITCHEN_CHECK_INTERVAL)


def shop_of(
    worker_id: int, name: str, slots: int, handler: str, base: float | None = None, factor: float | None = None
) -> Shop:
    """The shop, at its measured pace if it has one (`base` and `factor`), else its prior."""
    if factor is None or base is None:
        base, factor = prior(handler)
    return Shop(worker_id, name, max(1, slots), base, factor, floor_for(handler))


def handover_seconds(kind: str, area: str) -> float:
    """From ready to the customer's hands: at the counter, or on the road to the area."""
    if kind == Order.Fulfilment.TAKEAWAY:
        return settings.PIZZAQUEUE_COLLECTION_SECONDS
    return settings.PIZZAQUEUE_AREA_DELIVERY_SECONDS.get(area, settings.PIZZAQUEUE_DELIVERY_SECONDS)


def longest_drive() -> float:
    """The longest delivery time of any area."""
    return max([settings.PIZZAQUEUE_DELIVERY_SECONDS, *settings.PIZZAQUEUE_AREA_DELIVERY_SECONDS.values()])


def margin(lead: float) -> float:
    """Slack over a prediction `lead` seconds ahead: a share of it, and at least a few
    monitor rounds, so the keeper sees a slip and tells the customer before the promise passes."""
    return max(MARGIN_SHARE * max(lead, 0.0), MARGIN_ROUNDS * settings.PIZZAQUEUE_MONITOR_INTERVAL)


def promise_for(ready: datetime, kind: str, area: str, now: datetime) -> datetime:
    """The promise for an order predicted ready (out of the kitchen) at `ready`."""
    delivered = ready + timedelta(seconds=handover_seconds(kind, area))
    return delivered + timedelta(seconds=margin((delivered - now).total_seconds()))


# --- The quote at placing -----------------------------------------------------------------


def queue_wait(shop: Shop, queued: int, queued_estimate: int, preparing: int, preparing_estimate: int) -> float:
    """Seconds until `shop` starts a new order behind `queued` orders of `queued_estimate`
    menu seconds and `preparing` orders in its kitchen (half made, on average): none
    while a slot is free, then the work ahead shared by the slots."""
    if queued + preparing < shop.slots:
        return 0.0
    return (shop.work(queued, queued_estimate) + 0.5 * shop.work(preparing, preparing_estimate)) / shop.slots


class LiveQueueQuote:
    """PIZZAQUEUE_QUOTE: seconds from each new (unsaved) order's `eligible_at` to its promise.

    Called with a batch: one statement for an order due now (`quote`: its shop,
    pace and the work ahead of it there). A batch (`place_many`) reads its
    buckets' owners once and each shop once, and adds each order's work to the
    next one's at its shop. A scheduled order is quoted its make time and
    hand-over from when it is due, with no statement.

    `in_statement` gives the same quote of one order due now as SQL, which `place`
    runs inside the order's own statement on PostgreSQL.
    """

    def __call__(self, orders: Sequence[Order], now: datetime) -> list[float]:
        due = [order for order in orders if order.eligible_at <= now]
        work = _work_at_shops(due, now) if len(due) > 1 else None
        added: dict[int, tuple[int, int]] = defaultdict(lambda: (0, 0))  # orders, menu seconds this batch put ahead
        seconds: list[float] = []
        for order in orders:
            if order.eligible_at > now:
                seconds.append(_unquoted(order))
                continue
            key = ("shop", order.pinned_shop) if order.pinned_shop else (work or {}).get(("bucket", order.bucket))
            found = work.get(key) if work is not None else _shop_and_work(order, now)
            shop, queued, queued_estimate, preparing, preparing_estimate = found or (shop_of(0, "", 1, ""), 0, 0, 0, 0)
            count, seconds_ahead = added[shop.id]
            wait = queue_wait(shop, queued + count, queued_estimate + seconds_ahead, preparing, preparing_estimate)
            added[shop.id] = (count + 1, seconds_ahead + order.estimated_seconds)
            seconds.append(_lead(order, wait + shop.make(order.estimated_seconds)))
        return seconds

    def in_statement(self, order: Order, now: datetime) -> tuple[str, dict[str, Any]]:
        """The quote of `order`, due at `now`, as one SELECT of one row and column (its
        seconds): `quote` spliced into `quote_seconds`, the arithmetic of `queue_wait`,
        `Shop` and `promise_for` in SQL. Optimization: the order's statement computes its
        promise itself, so placing it is one round trip, not two (docs/performance.md, "Intake")."""
        staffed_base, staffed_factor = prior(STAFFED_HANDLER)
        params = {
            **_quote_parameters(order, now),
            "estimated_seconds": order.estimated_seconds,
            "unquoted": _unquoted(order),
            "handover": handover_seconds(order.kind, order.area),
            "margin_share": MARGIN_SHARE,
            "margin_floor": margin(0.0),
            "speed": settings.PIZZAQUEUE_KITCHEN_SPEED,
            "staffed": STAFFED_HANDLER,
            "staffed_base": staffed_base,
            "staffed_factor": staffed_factor,
            "staffed_floor": floor_for(STAFFED_HANDLER),
        }
        return _QUOTE_IN_STATEMENT, params


quote = LiveQueueQuote()

_QUOTE_IN_STATEMENT = (
    "WITH shop (id, name, concurrency, handler, base, factor, queued_estimate, queued, preparing, preparing_estimate)"
    + " AS ("
    + sql.queries["quote"]
    + ") "
    + sql.queries["quote_seconds"]
)


def _lead(order: Order, ready_in: float) -> float:
    """Seconds from when `order` is due to its promise, for an order ready `ready_in` seconds after that."""
    due = order.eligible_at
    promised = promise_for(due + timedelta(seconds=ready_in), order.kind, order.area, due)
    return max(0.0, (promised - due).total_seconds())


def _unquoted(order: Order) -> float:
    """The quote with no shop to read: the simulated kitchen's make time with nothing ahead
    (a scheduled order; an order due now when no shop is open)."""
    return _lead(order, shop_of(0, "", 1, "").make(order.estimated_seconds))


Work = tuple[Shop, int, int, int, int]  # the shop; queued orders and their menu seconds; the same in its kitchen


def _work_at_shops(orders: Sequence[Order], now: datetime) -> dict[Any, Any]:
    """A batch's shops and the work ahead at each: the buckets' owners in one read
    (as ("bucket", number) -> shop id), then one `quote` statement per shop (by id)."""
    buckets = {order.bucket for order in orders if not order.pinned_shop}
    found: dict[Any, Any] = {
        ("bucket", number): owner
        for number, owner in Bucket.objects.filter(number__in=buckets).values_list("number", "owner_id")
    }
    latest: dict[Any, Order] = {}  # by ("shop", name) for a takeaway shop, else its bucket owner's id
    for order in orders:
        key = ("shop", order.pinned_shop) if order.pinned_shop else found.get(("bucket", order.bucket))
        if key is not None and (key not in latest or order.rank > latest[key].rank):
            latest[key] = order
    for key, order in latest.items():
        found[key] = _shop_and_work(order, now, None if isinstance(key, tuple) else key)
    return found


def _shop_and_work(order: Order, now: datetime, worker_id: int | None = None) -> Work | None:
    """The shop that will make `order` (its takeaway shop, the process `worker_id`, or its
    bucket's owner) and the work ahead of it there, in one statement; None when no shop is open."""
    params = _quote_parameters(order, now, worker_id)
    # Optimization: prepared on PostgreSQL, where planning its subqueries took four times
    # as long as running them (0.44 ms against 0.09 ms).
    with prepared_cursor() as cursor:
        cursor.execute(sql.queries["quote"], params)
        row = cursor.fetchone()
    if row is None:
        return None
    worker_id, name, slots, handler, base, factor, *counts = row
    queued_estimate, queued, preparing, preparing_estimate = map(int, counts)
    return (
        shop_of(worker_id, name, slots, handler, base, factor),
        queued,
        queued_estimate,
        preparing,
        preparing_estimate,
    )


def _quote_parameters(order: Order, now: datetime, worker_id: int | None = None) -> dict[str, Any]:
    """The `quote` statement's parameters for `order` (see `_shop_and_work`)."""
    return {
        "shop": order.pinned_shop or None,
        "worker": worker_id,
        "bucket": order.bucket,
        "rank": order.rank,
        "as_of": connection.ops.adapt_datetimefield_value(now),
    }


# --- Keeping promises: the monitor's duty ----------------------------------------------


@dataclass
class Keeper:
    """What the duty remembers between rounds in this process: the last event it read."""

    last_event_id: int | None = None
    # Seconds the last round took, and what it did: for logs and the benchmark.
    last: dict[str, float] = field(default_factory=dict)


KEEPER = Keeper()


def keep(now: datetime) -> list[uuid.UUID]:
    """PIZZAQUEUE_MONITOR_DUTY: measure the paces, predict every unfinished order, revise
    the promises that will not hold (see the module's docstring). Returns the orders revised."""
    started = time.perf_counter()
    moved = measure_paces(now)
    revisions = most_urgent(judge(now, moved))
    revised = queue.revise_promises(revisions, now) if revisions else []
    KEEPER.last = {"ms": (time.perf_counter() - started) * 1000, "revised": len(revised)}
    if revised:
        logger.info("promises revised=%d in %.1f ms", len(revised), KEEPER.last["ms"])
    return revised


def most_urgent(revisions: list[queue.Revision], limit: int = REVISIONS_PER_ROUND) -> list[queue.Revision]:
    """At most `limit` revisions, those running late first, the nearest promise first: a
    round's revisions hold their orders' rows until they are written, and kitchens skip
    what is held, so a round never holds thousands (the rest are told in the next rounds)."""
    if len(revisions) <= limit:
        return revisions

    def urgency(revision: queue.Revision) -> tuple[bool, datetime]:
        later = revision.was is None or revision.by > revision.was
        return (not later, revision.was or revision.by)

    return sorted(revisions, key=urgency)[:limit]


def measure_paces(now: datetime) -> set[uuid.UUID]:
    """Fold the orders finished since the last round into their shops' paces; returns
    the orders moved to another shop meanwhile (their `reassigned` events)."""
    if KEEPER.last_event_id is None:
        # A monitor new to the duty (the last one died, or stepped down) reads on from here: its
        # paces are in the table, and the moves just before, which it may have to explain, are recent.
        KEEPER.last_event_id = OrderEvent.objects.aggregate(last=Max("id"))["last"] or 0
        return set(
            OrderEvent.objects.filter(
                id__gt=KEEPER.last_event_id - LOOKBACK_EVENTS, kind=OrderEvent.Kind.REASSIGNED
            ).values_list("order_id", flat=True)
        )
    rows = list(
        OrderEvent.objects.filter(
            id__gt=KEEPER.last_event_id, kind__in=[OrderEvent.Kind.DONE, OrderEvent.Kind.REASSIGNED]
        )
        .order_by("id")
        .values_list(
            "id", "kind", "order_id", "created_at", "worker__name", "order__claimed_at", "order__estimated_seconds"
        )[:WALK_LIMIT]
    )
    last = OrderEvent.objects.filter(id__gt=KEEPER.last_event_id).aggregate(last=Max("id"))["last"]
    KEEPER.last_event_id = max(KEEPER.last_event_id, last or 0, rows[-1][0] if rows else 0)
    moved = {order_id for _id, kind, order_id, *_ in rows if kind == OrderEvent.Kind.REASSIGNED}
    samples: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for _id, kind, _order, done_at, shop, claimed_at, estimated in rows:
        if kind == OrderEvent.Kind.DONE and shop and claimed_at:
            samples[shop].append((estimated, (done_at - claimed_at).total_seconds()))
    if samples:
        update_paces(samples, now)
    return moved


def update_paces(samples: dict[str, list[tuple[int, float]]], now: datetime) -> None:
    """Fold (menu seconds, kitchen seconds) of each shop's finished orders into its
    line (`ShopPace`), older orders weighing less; the prior stands until enough weigh in."""
    known = {p.shop: p for p in ShopPace.objects.filter(shop__in=list(samples))}
    handlers = dict(
        Worker.objects.filter(name__in=list(samples)).order_by("incarnation").values_list("name", "handler")
    )
    for shop, values in samples.items():
        handler = handlers.get(shop, "")
        pace = known.get(shop)
        if pace is None:
            base, factor = prior(handler)
            pace = ShopPace(shop=shop, base=base, factor=factor)
        for x, y in values:
            pace.samples += 1
            pace.weight = PACE_DECAY * pace.weight + 1
            pace.sum_x = PACE_DECAY * pace.sum_x + x
            pace.sum_y = PACE_DECAY * pace.sum_y + y
            pace.sum_xx = PACE_DECAY * pace.sum_xx + x * x
            pace.sum_xy = PACE_DECAY * pace.sum_xy + x * y
        if pace.weight >= PACE_TRUSTED_AFTER:
            pace.base, pace.factor = fit(pace)
        pace.updated_at = now
        pace.save()


def fit(pace: ShopPace) -> tuple[float, float]:
    """The least-squares line (base, factor) through the weighted orders: kitchen seconds
    against menu seconds. Orders all of one size say nothing of the slope: then through
    the origin, as a simulated kitchen's is."""
    n, sx, sy, sxx, sxy = pace.weight, pace.sum_x, pace.sum_y, pace.sum_xx, pace.sum_xy
    spread = n * sxx - sx * sx
    if spread <= 1e-9 * max(1.0, n * sxx):
        return 0.0, (sy / sx if sx > 0 else 0.0)
    factor = (n * sxy - sx * sy) / spread
    base = (sy - factor * sx) / n
    if base < 0:  # a line below the origin at no work: through the origin instead
        return 0.0, sxy / sxx
    if factor < 0:  # bigger orders never take less: the mean time per order
        return sy / n, 0.0
    return base, factor


@dataclass
class Unfinished:
    """An unfinished order as the walk reads it."""

    id: uuid.UUID
    status: str
    kind: str
    area: str
    bucket: int
    pinned: str  # its takeaway shop's name, "" for a delivery order
    worker: int | None
    eligible_at: datetime
    estimated: int
    promised_at: datetime | None
    claimed_at: datetime | None
    created_at: datetime
    rank: int
    priority: int
    handover: str = ""  # a made delivery order's step: on the shelf or out with a driver
    out_at: datetime | None = None


FIELDS = (
    "id",
    "status",
    "kind",
    "area",
    "bucket",
    "pinned_shop",
    "worker_id",
    "eligible_at",
    "estimated_seconds",
    "promised_at",
    "claimed_at",
    "created_at",
    "rank",
    "priority",
)
ON_THE_WAY_FIELDS = (*FIELDS, "handover", "out_at")


def predict(now: datetime) -> dict[uuid.UUID, tuple[datetime, Unfinished, bool]]:
    """When each unfinished order will leave its shop: (then, order, whether its shop is
    down). A made delivery order on a shelf leaves now at the soonest; one out with a
    driver left when it was taken. Orders a down shop will cancel (its takeaway orders) are left out."""
    live = list(Worker.objects.live().values_list("id", "name", "concurrency", "handler", "status", "last_heartbeat"))
    paces = {shop: (base, factor) for shop, base, factor in ShopPace.objects.values_list("shop", "base", "factor")}
    quiet = now - timedelta(seconds=2 * settings.PIZZAQUEUE_HEARTBEAT_INTERVAL)
    down_at = {  # a quiet shop is declared dead a timeout after its last beat, and a round later its orders move
        pk: beat + timedelta(seconds=settings.PIZZAQUEUE_HEARTBEAT_TIMEOUT + settings.PIZZAQUEUE_MONITOR_INTERVAL)
        for pk, _name, _slots, _handler, _status, beat in live
        if beat < quiet
    }
    shops = {
        pk: shop_of(pk, name, slots, handler, *paces.get(name, (None, None))) for pk, name, slots, handler, *_ in live
    }
    # Each shop's newest live process, which its takeaway orders are predicted at.
    process_of = {name: pk for pk, name, *_ in sorted(live)}
    owners = dict(Bucket.objects.values_list("number", "owner_id"))
    successors = _successors(owners, [pk for pk, *_, status, _beat in live if status == Worker.Status.ALIVE], down_at)
    held = [Unfinished(*row) for row in Order.objects.filter(status=Order.Status.PREPARING).values_list(*FIELDS)]
    waiting = [
        Unfinished(*row)
        for row in Order.objects.filter(status=Order.Status.QUEUED)
        .order_by(*CLAIM_ORDER)
        .values_list(*FIELDS)[:WALK_LIMIT]
    ]
    slots: dict[int, list[float]] = {pk: [0.0] * shop.slots for pk, shop in shops.items()}
    start = now.timestamp()
    ready: dict[uuid.UUID, tuple[datetime, Unfinished, bool]] = on_the_way(now)
    moving: list[tuple[Unfinished, float]] = []  # orders a down shop holds: made again elsewhere

    def schedule(order: Unfinished, shop_id: int, not_before: float, down: bool) -> None:
        free = slots[shop_id]
        begin = max(heapq.heappop(free), not_before, start)
        done = begin + shops[shop_id].make(order.estimated)
        heapq.heappush(free, done)
        ready[order.id] = (datetime.fromtimestamp(done, tz=now.tzinfo), order, down)

    for order in sorted(held, key=lambda o: o.claimed_at or now):
        if order.worker in down_at:
            if not order.pinned:
                moving.append((order, down_at[order.worker].timestamp()))
            continue
        if order.worker not in shops:
            continue
        shop = shops[order.worker]
        free = slots[order.worker]
        claimed = (order.claimed_at or now).timestamp()
        expected = max(claimed, heapq.heappop(free)) + shop.make(order.estimated)
        if expected <= start:  # running over its time: the kitchen is slower than measured, a quarter longer yet
            expected = start + max(0.25 * shop.make(order.estimated), 2 * settings.PIZZAQUEUE_MONITOR_INTERVAL)
        heapq.heappush(free, expected)
        ready[order.id] = (datetime.fromtimestamp(expected, tz=now.tzinfo), order, False)
    for order, at in moving:
        target = successors.get(order.bucket)
        if target is not None:
            schedule(order, target, at, True)
    for order in waiting:
        if order.pinned:
            process = process_of.get(order.pinned)
            if process in shops and process not in down_at:
                schedule(order, process, order.eligible_at.timestamp(), False)
            continue
        owner = owners.get(order.bucket)
        if owner in down_at:
            target = successors.get(order.bucket)
            if target is not None:
                schedule(order, target, max(order.eligible_at, down_at[owner]).timestamp(), True)
        elif owner in shops:
            schedule(order, owner, order.eligible_at.timestamp(), False)
    return ready


def on_the_way(now: datetime) -> dict[uuid.UUID, tuple[datetime, Unfinished, bool]]:
    """Made delivery orders whose promise may slip (on a shelf, or out with a driver), and
    when each leaves, or left, its shop: those on a shelf now at the soonest, so a shelf
    nobody empties slips its promise round by round and its customer is told; those out
    when they were taken, or, once their drive has run over, as if taken a quarter of a
    drive ago (the driver is slower than the area's time).

    Only those whose promise falls within the longest drive and two rounds from now: no
    other can be at the door later than promised, and a made order is told only that it
    runs late, so the rest are not read every round."""
    found: dict[uuid.UUID, tuple[datetime, Unfinished, bool]] = {}
    reach = longest_drive() + 2 * settings.PIZZAQUEUE_MONITOR_INTERVAL
    waiting = Order.objects.filter(
        queue.PROMISE_KEPT, status=Order.Status.DONE, promised_at__lt=now + timedelta(seconds=reach)
    ).values_list(*ON_THE_WAY_FIELDS)
    for row in waiting[:WALK_LIMIT]:
        order = Unfinished(*row)
        left = now
        if order.handover == Order.Handover.OUT and order.out_at is not None:
            left, drive = order.out_at, handover_seconds(order.kind, order.area)
            if (now - left).total_seconds() >= drive:
                more = max(0.25 * drive, 2 * settings.PIZZAQUEUE_MONITOR_INTERVAL)
                left = now - timedelta(seconds=drive - more)
        found[order.id] = (left, order, False)
    return found


def _successors(owners: Mapping[int, int | None], members: list[int], down: dict[int, datetime]) -> dict[int, int]:
    """Who owns each bucket once the down shops are declared dead: the ring without them."""
    alive = [pk for pk in members if pk not in down]
    if not down or not alive:
        return {n: o for n, o in owners.items() if o is not None and o not in down}
    current = {n: (str(o) if o is not None and o not in down else None) for n, o in owners.items()}
    assigned = ring.assign(len(owners), [str(pk) for pk in alive], current, settings.PIZZAQUEUE_RING_EPSILON)
    return {n: int(o) for n, o in assigned.items()}


def scheduled(order: Unfinished, now: datetime) -> bool:
    """Whether the order was placed for later and is due now (`deadlines.due_at`: its rank
    keeps when it became due, through retries and moves)."""
    due = datetime.fromtimestamp((order.rank + queue.rank_offset(order.priority)) / 1_000_000, tz=now.tzinfo)
    return order.created_at + timedelta(seconds=1) < due <= now


def judge(now: datetime, moved: Iterable[uuid.UUID] = ()) -> list[queue.Revision]:
    """The promises to revise now, and to what (see `keep`)."""
    from orders.deadlines import fixed_promise  # the promise of orders placed before quotes

    moved = set(moved)
    tick = settings.PIZZAQUEUE_MONITOR_INTERVAL
    revisions = []
    for ready, order, down in predict(now).values():
        current = order.promised_at or fixed_promise(order.rank, order.priority, order.estimated)
        expected = ready + timedelta(seconds=handover_seconds(order.kind, order.area))
        left = (current - now).total_seconds()
        slip = (expected - current).total_seconds()
        tolerance = max(settings.PIZZAQUEUE_PROMISE_TOLERANCE, settings.PIZZAQUEUE_PROMISE_THRESHOLD * max(left, 0))
        # Will not make it with a round to spare: told now if the promise is near, or the slip is large.
        missing = slip > -tick and (left <= 3 * tick or slip > tolerance)
        # Far sooner than promised: the queue ahead shrank (a shop joined, orders were cancelled).
        # A made order is not told (`on_the_way` reads only those that may run late), nor one
        # its kitchen makes within a few rounds: it will be early anyway, and a fast kitchen
        # draining its queue would otherwise have every promise in it rewritten each round.
        sooner = (
            order.status != Order.Status.DONE
            and (ready - now).total_seconds() > MARGIN_ROUNDS * tick
            and -slip > tolerance + margin((expected - now).total_seconds())
        )
        if not (missing or sooner):
            continue
        by = promise_for(ready, order.kind, order.area, now)
        if order.status == Order.Status.DONE:
            why = ON_THE_WAY
        elif order.id in moved:
            why = MOVED
        elif down:
            why = SHOP_DOWN
        elif scheduled(order, now):
            why = DUE
        else:
            why = QUEUE
        revisions.append(queue.Revision(order.id, order.promised_at, by, why))
    return revisions
