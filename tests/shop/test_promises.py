"""Promises quoted from the live queue (`orders.promises`): the work ahead at the shop
that will make the order, that shop's measured pace, the order's own make time and
its hand-over; revised, and told, when the queue says they will not hold."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from orders import promises
from orders.deadlines import late_orders, promised_at
from orders.handlers import STAFFED_HANDLER
from orders.intake import clean_order_request
from orders.models import ShopPace
from orders.timeline import customer_message
from tests.base import T0, at, fresh, make_worker
from tests.factory import order_data, placed_at
from workers import membership, queue
from workers.models import Order, OrderEvent, Worker
from workers.queue import intake

pytestmark = pytest.mark.django_db

MARGHERITA = 40  # the menu's kitchen seconds for a medium one


@pytest.fixture(autouse=True)
def _speed(settings: Any, menu: None) -> None:
    settings.PIZZAQUEUE_KITCHEN_SPEED = 1.0
    settings.PIZZAQUEUE_MONITOR_INTERVAL = 1.0
    settings.PIZZAQUEUE_PROMISE_TOLERANCE = 10.0
    settings.PIZZAQUEUE_PROMISE_THRESHOLD = 0.25
    # The kitchen's part of the promise; the hand-over's tests set their own (and test_promises_to_the_door).
    settings.PIZZAQUEUE_DELIVERY_SECONDS = 0.0
    promises.KEEPER.last_event_id = None


def lead(order: Order) -> float:
    """Seconds from when the order became due to its promise."""
    assert order.promised_at is not None
    return (order.promised_at - order.eligible_at).total_seconds()


def shop(name: str = "shop-1", concurrency: int = 1, handler: str = "") -> Worker:
    worker = make_worker(name, concurrency=concurrency, now=T0)
    if handler:
        Worker.objects.filter(pk=worker.pk).update(handler=handler)
    return fresh(worker)


def test_an_order_is_quoted_the_work_queued_ahead_of_it_at_its_shop() -> None:
    shop("shop-1", concurrency=1)
    first, second, third = (placed_at(at(n / 1000)) for n in range(3))

    # Its own 40 s, then 40 s for each order ahead; a tenth of that as margin (at least three rounds).
    assert lead(first) == pytest.approx(40 + 4)
    assert lead(second) == pytest.approx(80 + 8)
    assert lead(third) == pytest.approx(120 + 12)
    assert promised_at(third) == third.promised_at


def test_a_batch_is_quoted_as_if_placed_one_by_one_with_a_statement_per_shop() -> None:
    shop("shop-1", concurrency=1)
    shop("shop-2", concurrency=1)
    requests = [clean_order_request(order_data(kind="takeaway", shop=f"shop-{1 + n % 2}"), now=T0) for n in range(6)]

    with CaptureQueriesContext(connection) as queries:
        orders = queue.place_many(requests, now=T0)

    assert [lead(o) for o in orders] == pytest.approx([44, 44, 88, 88, 132, 132])
    # One quote per shop, not per order (a prepared one, on PostgreSQL, logs no text).
    quotes = [q for q in queries.captured_queries if q["sql"] is None or "orders_shoppace" in q["sql"]]
    assert len(quotes) == 2


def test_a_shop_with_more_slots_shares_the_work_ahead_among_them() -> None:
    shop("shop-1", concurrency=2)
    quotes = [lead(placed_at(T0)) for _ in range(4)]

    # Two start at once; the third waits for (40 + 40) / 2 s of work; the fourth for 120 / 2.
    assert quotes == pytest.approx([44, 44, 88, 110])


def test_orders_queued_at_another_shop_are_not_ahead() -> None:
    one = shop("shop-1")
    two = shop("shop-2")
    for _ in range(5):
        placed_at(T0, kind="takeaway", shop="shop-1")

    at_two = placed_at(T0, kind="takeaway", shop="shop-2")

    assert at_two.pinned_shop == two.name != one.name
    assert lead(at_two) == pytest.approx(44)


def test_an_order_in_the_kitchen_counts_as_half_made() -> None:
    worker = shop("shop-1", concurrency=1)
    placed_at(T0)
    queue.claim(worker.pk, 1, now=T0)

    waiting = placed_at(T0)

    assert lead(waiting) == pytest.approx(20 + 40 + 6)


def test_the_quote_reads_the_shops_measured_pace() -> None:
    shop("shop-1")
    ShopPace.objects.create(shop="shop-1", factor=0.5, samples=20, updated_at=T0)
    placed_at(T0)

    second = placed_at(T0)

    assert lead(second) == pytest.approx(20 + 20 + 4)


def test_a_staffed_shop_is_quoted_at_peoples_pace_until_it_has_a_measured_one(settings: Any) -> None:
    settings.PIZZAQUEUE_KITCHEN_SPEED = 0.1
    shop("staffed-1", handler=STAFFED_HANDLER)
    shop("shop-2")

    staffed = placed_at(T0, kind="takeaway", shop="staffed-1")
    simulated = placed_at(T0, kind="takeaway", shop="shop-2")

    # People work in the menu's own seconds, not a simulation's tenth of them.
    assert lead(staffed) == pytest.approx(40 + 4)
    assert lead(simulated) == pytest.approx(4 + 3)


def test_a_staffed_shops_stand_in_cook_takes_each_tap_after_its_standby(settings: Any) -> None:
    settings.PIZZAQUEUE_KITCHEN_SPEED = 0.1
    settings.PIZZAQUEUE_STAFFED_STANDBY = 20.0
    settings.PIZZAQUEUE_KITCHEN_CHECK_INTERVAL = 0.5
    shop("staffed-1", handler=STAFFED_HANDLER)
    ShopPace.objects.create(shop="staffed-1", factor=0.1, samples=20, updated_at=T0)

    order = placed_at(T0, kind="takeaway", shop="staffed-1")

    assert lead(order) == pytest.approx(4 * 20.5 + 8.2)


def test_the_hand_over_is_part_of_the_promise(settings: Any) -> None:
    settings.PIZZAQUEUE_COLLECTION_SECONDS = 60.0
    settings.PIZZAQUEUE_DELIVERY_SECONDS = 600.0
    settings.PIZZAQUEUE_AREA_DELIVERY_SECONDS = {"harbour": 300.0}
    shop("shop-1", concurrency=4)

    collected = placed_at(T0, kind="takeaway", shop="shop-1")
    far = placed_at(T0, area="hills")
    near = placed_at(T0, area="harbour")

    assert lead(collected) == pytest.approx(40 + 60 + 10)
    assert lead(far) == pytest.approx(40 + 600 + 64)
    assert lead(near) == pytest.approx(40 + 300 + 34)


def quoted_both_ways(request_data: dict[str, Any]) -> tuple[float, float]:
    """An unsaved order's quote in Python (`promises.quote`) and in SQL (`quote.in_statement`, run alone)."""
    order = intake._new_order(clean_order_request(request_data, now=T0), T0)
    (in_python,) = promises.quote([order], T0)
    text, params = promises.quote.in_statement(order, T0)
    with connection.cursor() as cursor:
        cursor.execute(text, params)
        (in_sql,) = cursor.fetchone()
    return in_python, in_sql


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the quote in SQL runs only in PostgreSQL's place statement"
)
@pytest.mark.parametrize(
    "kitchen",
    ["none open", "simulated", "two slots, one busy", "measured pace", "staffed", "staffed, stand-in cook"],
)
def test_the_quote_the_place_statement_computes_is_the_python_quote(settings: Any, kitchen: str) -> None:
    settings.PIZZAQUEUE_KITCHEN_SPEED = 0.3
    settings.PIZZAQUEUE_DELIVERY_SECONDS = 600.0
    settings.PIZZAQUEUE_AREA_DELIVERY_SECONDS = {"harbour": 90.0}
    settings.PIZZAQUEUE_KITCHEN_CHECK_INTERVAL = 0.5
    if kitchen == "staffed, stand-in cook":
        settings.PIZZAQUEUE_STAFFED_STANDBY = 20.0
    if kitchen != "none open":
        worker = shop("shop-1", concurrency=2 if kitchen == "two slots, one busy" else 1)
        if kitchen.startswith("staffed"):
            Worker.objects.filter(pk=worker.pk).update(handler=STAFFED_HANDLER)
        if kitchen == "measured pace":
            ShopPace.objects.create(shop="shop-1", base=3.5, factor=0.7, samples=20, updated_at=T0)
        for size in ("small", "large", "medium"):
            placed_at(T0, items=[{"pizza": "capricciosa", "size": size, "quantity": 2}])
        if kitchen == "two slots, one busy":
            queue.claim(worker.pk, 1, now=T0)

    for request_data in (
        order_data(),
        order_data(area="harbour", items=[{"pizza": "margherita", "size": "large", "quantity": 3}]),
        order_data(kind="takeaway", shop="shop-1") if kitchen != "none open" else order_data(area="hills"),
    ):
        in_python, in_sql = quoted_both_ways(request_data)
        assert in_sql == pytest.approx(in_python, abs=1e-6), request_data

    # The statement quotes what the Python quote would have, one round trip fewer.
    expected, _ = quoted_both_ways(order_data(area="harbour"))
    request = clean_order_request(order_data(area="harbour"), now=T0)
    with CaptureQueriesContext(connection) as queries:
        placed, _ = queue.place(request, now=T0)
    assert lead(placed) == pytest.approx(expected, abs=1e-3)
    # The test's transaction wraps it in a savepoint; the order and its quote are one statement.
    statements = [q for q in queries.captured_queries if "SAVEPOINT" not in (q["sql"] or "")]
    assert len(statements) == 1


def test_the_place_statement_with_its_quote_stays_within_psycopgs_parse_cache() -> None:
    """Longer, or with more parameters, psycopg parses the statement afresh on every
    order: 0.2 ms, as long as its execution."""
    from psycopg._queries import MAX_CACHED_STATEMENT_LENGTH, MAX_CACHED_STATEMENT_PARAMS  # noqa: PLC2701

    text, _ = promises.quote.in_statement(placed_at(T0), T0)
    statement = intake.place_statement(intake._quote_placeholders(text))
    assert len(statement) <= MAX_CACHED_STATEMENT_LENGTH
    # `place` passes exactly the statement's parameters.
    assert len(set(re.findall(r"%\((\w+)\)s", statement))) <= MAX_CACHED_STATEMENT_PARAMS


def test_a_scheduled_order_is_promised_from_when_it_is_due() -> None:
    worker = shop("shop-1")
    for _ in range(10):
        placed_at(T0)
    queue.claim(worker.pk, 1, now=T0)

    later = placed_at(T0, not_before=at(3600).isoformat())

    # Whatever waits now is long made by then: its own make time from when it is due.
    assert later.eligible_at == at(3600)
    assert lead(later) == pytest.approx(44)


def test_no_open_shop_quotes_the_simulated_kitchen_with_nothing_ahead() -> None:
    order = placed_at(T0)
    assert lead(order) == pytest.approx(44)


def test_the_keeper_measures_a_shops_pace_from_the_orders_it_finished() -> None:
    worker = shop("shop-1", concurrency=4)
    promises.keep(T0)  # the keeper starts reading events from here
    for _ in range(4):
        placed_at(T0)
    for claim in queue.claim(worker.pk, 4, now=T0):
        # Twice the menu's 40 s.
        queue.complete(claim.order.pk, claim.token, worker.pk, now=at(80))

    promises.keep(at(80))

    pace = ShopPace.objects.get(shop="shop-1")
    assert pace.samples == 4
    assert (pace.base, pace.factor) == pytest.approx((0.0, 2.0))
    assert lead(placed_at(at(80))) == pytest.approx(80 + 8)


def test_a_kitchen_that_takes_the_same_time_over_any_pizza_is_measured_per_order() -> None:
    worker = shop("shop-1", concurrency=8)
    promises.keep(T0)
    sizes = ["small", "medium", "large"] * 2
    for size in sizes:
        placed_at(T0, items=[{"pizza": "capricciosa", "size": size, "quantity": 1}])
    for claim in queue.claim(worker.pk, len(sizes), now=T0):
        queue.complete(claim.order.pk, claim.token, worker.pk, now=at(20))

    promises.keep(at(20))

    pace = ShopPace.objects.get(shop="shop-1")
    assert (pace.base, pace.factor) == pytest.approx((20.0, 0.0), abs=1e-6)


def test_a_shop_keeps_its_prior_until_enough_orders_are_finished() -> None:
    worker = shop("shop-1", concurrency=2)
    promises.keep(T0)
    placed_at(T0)
    placed_at(T0)
    for claim in queue.claim(worker.pk, 2, now=T0):
        queue.complete(claim.order.pk, claim.token, worker.pk, now=at(400))

    promises.keep(at(400))

    pace = ShopPace.objects.get(shop="shop-1")
    assert (pace.samples, pace.base, pace.factor) == (2, 0.0, 1.0)


def test_a_promise_the_queue_will_miss_is_revised_and_the_customer_told() -> None:
    worker = shop("shop-1")
    orders = [placed_at(at(n / 1000)) for n in range(3)]
    # The shop turns out four times slower than quoted.
    ShopPace.objects.create(shop="shop-1", factor=4.0, samples=20, updated_at=T0)
    queue.claim(worker.pk, 1, now=T0)

    revised = promises.keep(at(1))

    assert set(revised) == {o.pk for o in orders}
    last = fresh(orders[2])
    assert last.promised_at is not None and last.promised_at > orders[2].promised_at
    # Its two predecessors take 160 s each, then its own 160 s; a tenth of the 479 s left as margin.
    assert (last.promised_at - T0).total_seconds() == pytest.approx(480 + 47.9)
    event = OrderEvent.objects.get(order=last, kind=OrderEvent.Kind.PROMISED)
    assert event.data["why"] == promises.QUEUE
    assert event.data["was"] == orders[2].promised_at.isoformat()
    message = customer_message(event)
    assert message is not None and message["public"] is True
    assert message["text"] == f"Running late: now by {last.promised_at:%H:%M:%S}."
    assert message["promised_at"] == last.promised_at.isoformat()
    assert message["status"] is None  # nothing else about the order changed


def test_a_promise_that_holds_is_left_alone() -> None:
    worker = shop("shop-1", concurrency=2)
    placed_at(T0)
    placed_at(T0)
    queue.claim(worker.pk, 2, now=T0)

    assert promises.keep(at(1)) == []
    membership.heartbeat(worker.pk, now=at(30))
    assert promises.keep(at(30)) == []
    assert not OrderEvent.objects.filter(kind=OrderEvent.Kind.PROMISED).exists()


def test_a_promise_about_to_pass_is_revised_before_it_does() -> None:
    worker = shop("shop-1")
    order = placed_at(T0)
    queue.claim(worker.pk, 1, now=T0)
    assert order.promised_at == at(44)

    # Still in the oven two seconds before its promise, running over its 40 s: told now.
    membership.heartbeat(worker.pk, now=at(42))
    assert promises.keep(at(42)) == [order.pk]

    assert fresh(order).promised_at > at(44)
    assert late_orders(at(44)) == []


def test_a_sooner_order_is_told_the_good_news() -> None:
    worker = shop("shop-1")
    orders = [placed_at(at(n / 1000)) for n in range(6)]
    # A second kitchen with four slots joins and takes half the buckets: the queue is far shorter.
    membership.register("shop-2", "test-host", 1, 4, now=T0)
    ShopPace.objects.create(shop="shop-1", factor=0.25, samples=20, updated_at=T0)
    del worker

    revised = promises.keep(at(1))

    assert orders[-1].pk in revised
    event = OrderEvent.objects.get(order=orders[-1], kind=OrderEvent.Kind.PROMISED)
    assert customer_message(event)["text"].startswith("Good news: now by ")  # type: ignore[index]


def test_orders_of_a_shop_gone_quiet_are_revised_as_moving_to_the_next(settings: Any) -> None:
    settings.PIZZAQUEUE_HEARTBEAT_INTERVAL = 5.0
    settings.PIZZAQUEUE_HEARTBEAT_TIMEOUT = 15.0
    quiet = shop("shop-1", concurrency=1)
    other = shop("shop-2", concurrency=1)
    mine = [placed_at(at(n / 1000), area=f"a{n}") for n in range(12)]
    membership.heartbeat(other.pk, now=at(20))

    revised = set(promises.keep(at(20)))

    # shop-1's orders are made once it is declared dead, 16 s after its last beat, behind shop-2's own:
    # its first ones, promised within the minute, will not make it.
    at_quiet = [o for o in mine if o.bucket in quiet_buckets(quiet)]
    first = min(at_quiet, key=lambda o: o.promised_at or T0)
    assert first.pk in revised
    whys = set(
        OrderEvent.objects.filter(order__in=at_quiet, kind=OrderEvent.Kind.PROMISED).values_list("data__why", flat=True)
    )
    assert whys == {promises.SHOP_DOWN}
    assert all(fresh(o).promised_at >= at(16 + 40) for o in at_quiet if o.pk in revised)


def quiet_buckets(worker: Worker) -> set[int]:
    return set(worker.buckets.values_list("number", flat=True))


def test_a_takeaway_order_of_a_shop_gone_quiet_keeps_its_promise_until_it_is_cancelled(settings: Any) -> None:
    settings.PIZZAQUEUE_HEARTBEAT_INTERVAL = 5.0
    shop("shop-1")
    other = shop("shop-2")
    takeaway = placed_at(T0, kind="takeaway", shop="shop-1")
    membership.heartbeat(other.pk, now=at(20))

    assert takeaway.pk not in promises.keep(at(20))


def test_finished_and_cancelled_orders_are_not_revised_and_show_no_promise(client: Client) -> None:
    worker = shop("shop-1")
    # The second a moment later, so the claim takes the first (equal keys leave the order to the plan).
    done, cancelled = placed_at(T0, kind="takeaway", shop="shop-1"), placed_at(at(0.001))
    (claim,) = queue.claim(worker.pk, 1, now=at(0.001))
    queue.complete(claim.order.pk, claim.token, worker.pk, now=at(5))
    queue.cancel(cancelled.pk, reason="cancelled by customer", now=at(5))
    ShopPace.objects.create(shop="shop-1", factor=10.0, samples=20, updated_at=T0)

    assert promises.keep(at(6)) == []
    for order in (done, cancelled):
        page = client.get(f"/orders/{order.pk}/").content.decode()
        assert 'id="promise-line"' not in page


def test_the_tracking_page_shows_the_revised_promise_and_its_line() -> None:
    worker = shop("shop-1")
    orders = [placed_at(at(n / 1000)) for n in range(3)]
    ShopPace.objects.create(shop="shop-1", factor=4.0, samples=20, updated_at=T0)
    queue.claim(worker.pk, 1, now=T0)
    promises.keep(at(1))
    last = fresh(orders[2])
    assert last.promised_at is not None

    page = Client().get(f"/orders/{last.pk}/").content.decode()

    assert f'datetime="{last.promised_at.isoformat()}"' in page
    assert f"Running late: now by {last.promised_at:%H:%M:%S}." in page


def test_a_revision_is_fenced_by_the_promise_it_replaces() -> None:
    shop("shop-1")
    order = placed_at(T0)
    stale = queue.Revision(order.pk, at(1), at(100), promises.QUEUE)
    current = queue.Revision(order.pk, order.promised_at, at(90), promises.QUEUE)

    assert queue.revise_promises([stale], at(2)) == []
    assert queue.revise_promises([current, current], at(2)) == [order.pk]
    assert fresh(order).promised_at == at(90)


def test_a_round_writes_its_revisions_in_a_few_statements_whatever_their_number() -> None:
    shop("shop-1")
    orders = [placed_at(at(n / 1000)) for n in range(40)]
    revisions = [queue.Revision(o.pk, o.promised_at, at(500), promises.QUEUE) for o in orders]

    with CaptureQueriesContext(connection) as queries:
        revised = queue.revise_promises(revisions, at(2))

    assert sorted(revised) == sorted(o.pk for o in orders)
    assert OrderEvent.objects.filter(kind=OrderEvent.Kind.PROMISED).count() == 40
    # Read and lock, one UPDATE, the events, their NOTIFY, and the savepoint around them.
    assert len(queries.captured_queries) <= 7


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite has one writer and no row locks to skip")
@pytest.mark.django_db(transaction=True)
def test_the_keeper_skips_an_order_a_kitchen_holds_instead_of_waiting_for_it() -> None:
    import psycopg

    shop("shop-1")
    held, free = placed_at(T0), placed_at(at(0.001))
    revisions = [queue.Revision(o.pk, o.promised_at, at(500), promises.QUEUE) for o in (held, free)]
    settings_dict = connection.settings_dict
    kitchen = psycopg.connect(
        dbname=settings_dict["NAME"], user=settings_dict["USER"], host=settings_dict["HOST"], port=settings_dict["PORT"]
    )
    try:
        # A kitchen's transaction holds the order's row (as its claim or completion does).
        kitchen.execute("SELECT 1 FROM orders_order WHERE id = %s FOR UPDATE", [held.pk])
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '2s'")  # a keeper that waited would fail here, not hang

        assert queue.revise_promises(revisions, at(2)) == [free.pk]
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET lock_timeout")
        kitchen.rollback()
        kitchen.close()
    assert fresh(held).promised_at == held.promised_at
    assert fresh(free).promised_at == at(500)


def test_the_most_urgent_revisions_go_first_and_a_round_writes_a_bounded_number() -> None:
    def revision(was: float, by: float) -> queue.Revision:
        return queue.Revision(uuid.uuid4(), at(was), at(by), promises.QUEUE)

    sooner_far, sooner_near = revision(900, 300), revision(200, 100)
    late_far, late_near = revision(800, 1000), revision(100, 150)

    chosen = promises.most_urgent([sooner_far, late_far, sooner_near, late_near], limit=3)

    assert chosen == [late_near, late_far, sooner_near]


def test_an_order_about_to_be_made_is_not_told_it_will_be_sooner() -> None:
    worker = shop("shop-1", concurrency=4)
    orders = [placed_at(at(n / 1000)) for n in range(3)]
    # The kitchen turns out to make an order in a tenth of a second: all three are made within a round.
    ShopPace.objects.create(shop=worker.name, base=0.1, factor=0.0, samples=50, updated_at=T0)

    assert promises.keep(at(0.5)) == []
    assert [fresh(o).promised_at for o in orders] == [o.promised_at for o in orders]
