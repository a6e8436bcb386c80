"""Checking order requests: every bad field is named, and a bad request writes nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection
from django.utils import timezone

from orders.intake import clean_order_request
from orders.models import Pizza
from tests.base import make_worker
from tests.factory import make_order, order_data
from workers import membership, monitor, queue, ring
from workers.models import CLOSED, Order, OrderEvent
from workers.queue import OrderRequest

pytestmark = pytest.mark.django_db

MARGHERITA = {"pizza": "margherita", "size": "medium", "quantity": 1}


def place_raw(data: Any, idempotency_key: str | None = None, now: datetime | None = None) -> tuple[Order, bool]:
    """The path every caller takes: check the raw request, then place it (with the contact
    details its kind needs, unless the request names them)."""
    if isinstance(data, dict) and all(isinstance(key, str) for key in data):
        data = {**order_data(kind=data.get("kind")), "items": None, **data}
        data = {key: value for key, value in data.items() if value is not None or key not in ("items", "kind")}
    return queue.place(clean_order_request(data), idempotency_key=idempotency_key, now=now)


def assert_nothing_written() -> None:
    assert Order.objects.count() == 0
    assert OrderEvent.objects.count() == 0


BAD_REQUESTS = [
    pytest.param(
        {"items": [{"pizza": "hawaii", "size": "medium", "quantity": 1}]},
        "items[0].pizza",
        "Not on the menu: 'hawaii'.",
        id="unknown-pizza",
    ),
    pytest.param(
        {"items": [{"size": "medium", "quantity": 1}]},
        "items[0].pizza",
        "Not on the menu: None.",
        id="pizza-missing",
    ),
    pytest.param(
        {"items": [{"pizza": ["margherita"], "size": "medium", "quantity": 1}]},
        "items[0].pizza",
        "Not on the menu: ['margherita'].",
        id="pizza-not-a-string",
    ),
    pytest.param(
        {"items": [{"pizza": "margherita", "size": "family", "quantity": 1}]},
        "items[0].size",
        "Must be one of small, medium, large.",
        id="size-not-in-menu",
    ),
    pytest.param(
        {"items": [{"pizza": "margherita", "size": ["large"], "quantity": 1}]},
        "items[0].size",
        "Must be one of small, medium, large.",
        id="size-not-a-string",
    ),
    pytest.param(
        {"items": [{"pizza": "margherita", "size": "medium", "quantity": 0}]},
        "items[0].quantity",
        "Must be between 1 and 20.",
        id="quantity-zero",
    ),
    pytest.param(
        {"items": [{"pizza": "margherita", "size": "medium", "quantity": -2}]},
        "items[0].quantity",
        "Must be between 1 and 20.",
        id="quantity-negative",
    ),
    pytest.param(
        {"items": [{"pizza": "margherita", "size": "medium", "quantity": "-2"}]},
        "items[0].quantity",
        "Must be between 1 and 20.",
        id="quantity-negative-string",
    ),
    pytest.param(
        {"items": [{"pizza": "margherita", "size": "medium", "quantity": 21}]},
        "items[0].quantity",
        "Must be between 1 and 20.",
        id="quantity-over-limit",
    ),
    pytest.param(
        {"items": [{"pizza": "margherita", "size": "medium", "quantity": 10**100}]},
        "items[0].quantity",
        "Must be between 1 and 20.",
        id="quantity-huge",
    ),
    pytest.param(
        {"items": [{"pizza": "margherita", "size": "medium", "quantity": True}]},
        "items[0].quantity",
        "Must be a whole number.",
        id="quantity-bool",
    ),
    pytest.param(
        {"items": [{"pizza": "margherita", "size": "medium", "quantity": "two"}]},
        "items[0].quantity",
        "Must be a whole number.",
        id="quantity-garbage-string",
    ),
    pytest.param(
        {"items": [{"pizza": "margherita", "size": "medium", "quantity": ""}]},
        "items[0].quantity",
        "Must be a whole number.",
        id="quantity-empty-string",
    ),
    pytest.param(
        {"items": [{"pizza": "margherita", "size": "medium", "quantity": 2.5}]},
        "items[0].quantity",
        "Must be a whole number.",
        id="quantity-float",
    ),
    pytest.param(
        {"items": [{"pizza": "margherita", "size": "medium", "quantity": None}]},
        "items[0].quantity",
        "Must be a whole number.",
        id="quantity-null",
    ),
    pytest.param(
        {"items": [MARGHERITA] * 21},
        "items",
        "At most 20 items per order.",
        id="too-many-items",
    ),
    pytest.param(
        {"items": MARGHERITA},
        "items",
        "Must be a non-empty list of {pizza, size, quantity}.",
        id="items-an-object",
    ),
    pytest.param(
        {"items": "margherita"},
        "items",
        "Must be a non-empty list of {pizza, size, quantity}.",
        id="items-a-string",
    ),
    pytest.param(
        {"items": []},
        "items",
        "Must be a non-empty list of {pizza, size, quantity}.",
        id="items-empty",
    ),
    pytest.param(
        {"kind": "delivery"},
        "items",
        "Must be a non-empty list of {pizza, size, quantity}.",
        id="items-missing",
    ),
    pytest.param(
        {"items": ["margherita"]},
        "items[0]",
        "Must be an object with pizza, size and quantity.",
        id="item-a-string",
    ),
    pytest.param(
        {"items": [MARGHERITA, 7]},
        "items[1]",
        "Must be an object with pizza, size and quantity.",
        id="item-a-number",
    ),
    pytest.param(
        {"items": [{**MARGHERITA, "extra_cheese": True}]},
        "items[0]",
        "Unknown fields: extra_cheese.",
        id="item-unknown-field",
    ),
    pytest.param(
        {"items": [MARGHERITA], "tip": 5, "coupon": "FREE"},
        "non_field_errors",
        "Unknown fields: coupon, tip.",
        id="unknown-fields",
    ),
    pytest.param(
        {"items": [MARGHERITA], "priority": 10},
        "priority",
        "Must be between 0 and 9.",
        id="priority-too-high",
    ),
    pytest.param(
        {"items": [MARGHERITA], "priority": -1},
        "priority",
        "Must be between 0 and 9.",
        id="priority-negative",
    ),
    pytest.param(
        {"items": [MARGHERITA], "priority": "urgent"},
        "priority",
        "Must be a whole number.",
        id="priority-garbage-string",
    ),
    pytest.param(
        {"items": [MARGHERITA], "priority": False},
        "priority",
        "Must be a whole number.",
        id="priority-bool",
    ),
    pytest.param(
        {"items": [MARGHERITA], "priority": 1.5},
        "priority",
        "Must be a whole number.",
        id="priority-float",
    ),
    pytest.param(
        {"items": [MARGHERITA], "max_attempts": 0},
        "max_attempts",
        "Must be between 1 and 20.",
        id="max-attempts-zero",
    ),
    pytest.param(
        {"items": [MARGHERITA], "kind": "drive-through"},
        "kind",
        "Must be one of delivery, takeaway.",
        id="kind-unknown",
    ),
    pytest.param(
        {"items": [MARGHERITA], "kind": ["takeaway"]},
        "kind",
        "Must be one of delivery, takeaway.",
        id="kind-not-a-string",
    ),
    pytest.param(
        {"items": [MARGHERITA], "kind": "takeaway"},
        "shop",
        "A takeaway order names the shop it is collected from.",
        id="takeaway-without-shop",
    ),
    pytest.param(
        {"items": [MARGHERITA], "kind": "takeaway", "shop": "   "},
        "shop",
        "A takeaway order names the shop it is collected from.",
        id="takeaway-blank-shop",
    ),
    pytest.param(
        {"items": [MARGHERITA], "kind": "delivery", "shop": "shop-1"},
        "shop",
        "Only takeaway orders are pinned to a shop.",
        id="delivery-with-shop",
    ),
    pytest.param(
        {"items": [MARGHERITA], "shop": "shop-1"},
        "shop",
        "Only takeaway orders are pinned to a shop.",
        id="default-kind-with-shop",
    ),
    pytest.param(
        {"items": [MARGHERITA], "kind": "takeaway", "shop": 42},
        "shop",
        "Must be a string.",
        id="shop-not-a-string",
    ),
    pytest.param(
        {"items": [MARGHERITA], "note": "x" * 501},
        "note",
        "At most 500 characters.",
        id="note-too-long",
    ),
    pytest.param(
        {"items": [MARGHERITA], "note": "extra\x00basil"},
        "note",
        "Must not contain NUL characters.",
        id="note-nul",
    ),
    pytest.param(
        {"items": [MARGHERITA], "note": ["no onions"]},
        "note",
        "Must be a string.",
        id="note-not-a-string",
    ),
    pytest.param(
        {"items": [MARGHERITA], "customer_name": "Ada\x00"},
        "customer_name",
        "Must not contain NUL characters.",
        id="customer-name-nul",
    ),
    pytest.param(
        {"items": [MARGHERITA], "customer_name": "A" * 101},
        "customer_name",
        "At most 100 characters.",
        id="customer-name-too-long",
    ),
    pytest.param(
        {"items": [MARGHERITA], "area": "north\x00"},
        "area",
        "Must not contain NUL characters.",
        id="area-nul",
    ),
    pytest.param(
        {"items": [MARGHERITA], "area": "a" * 65},
        "area",
        "At most 64 characters.",
        id="area-too-long",
    ),
    pytest.param(
        {"items": [MARGHERITA], "not_before": "tomorrow at six"},
        "not_before",
        "Must be an ISO 8601 date and time.",
        id="not-before-garbage",
    ),
    pytest.param(
        {"items": [MARGHERITA], "not_before": "2030-02-30T18:00:00Z"},
        "not_before",
        "Must be an ISO 8601 date and time.",
        id="not-before-impossible-date",
    ),
    pytest.param(
        {"items": [MARGHERITA], "not_before": 1_900_000_000},
        "not_before",
        "Must be an ISO 8601 date and time.",
        id="not-before-a-number",
    ),
    pytest.param(
        {"items": [MARGHERITA], "not_before": ["2030-01-01T18:00:00Z"]},
        "not_before",
        "Must be an ISO 8601 date and time.",
        id="not-before-a-list",
    ),
]


@pytest.mark.parametrize(("data", "field", "message"), BAD_REQUESTS)
def test_a_bad_request_names_the_field_and_writes_nothing(menu: None, data: Any, field: str, message: str) -> None:
    with pytest.raises(ValidationError) as excinfo:
        place_raw(data)

    assert excinfo.value.message_dict == {field: [message]}
    assert_nothing_written()


@pytest.mark.parametrize(
    "garbage",
    [
        pytest.param("--1", id="double-minus"),
        pytest.param("\N{SUPERSCRIPT TWO}", id="superscript-digit"),
        pytest.param("9" * 5000, id="over-int-max-str-digits"),
    ],
)
def test_a_quantity_string_that_only_looks_numeric_is_a_validation_error(menu: None, garbage: str) -> None:
    data = {"items": [{"pizza": "margherita", "size": "medium", "quantity": garbage}]}

    with pytest.raises(ValidationError) as excinfo:
        place_raw(data)

    assert excinfo.value.message_dict == {"items[0].quantity": ["Must be a whole number."]}
    assert_nothing_written()


def test_a_request_that_is_not_an_object_is_refused(menu: None) -> None:
    with pytest.raises(ValidationError) as excinfo:
        place_raw([MARGHERITA])

    assert excinfo.value.message_dict == {"non_field_errors": ["Expected an object."]}
    assert_nothing_written()


def test_a_pizza_taken_off_the_menu_is_refused(menu: None) -> None:
    Pizza.objects.filter(slug="funghi").update(available=False)

    with pytest.raises(ValidationError) as excinfo:
        place_raw({"items": [{"pizza": "funghi", "size": "small", "quantity": 1}]})

    assert excinfo.value.message_dict == {"items[0].pizza": ["Not on the menu: 'funghi'."]}
    assert_nothing_written()


def test_every_bad_field_is_reported_at_once(menu: None) -> None:
    data = {
        "items": [{"pizza": "hawaii", "size": "huge", "quantity": 0, "topping": "pineapple"}],
        "priority": 99,
        "kind": "drone",
        "note": "\x00",
        "colour": "red",
    }

    with pytest.raises(ValidationError) as excinfo:
        place_raw(data)

    assert excinfo.value.message_dict == {
        "non_field_errors": ["Unknown fields: colour."],
        "items[0]": ["Unknown fields: topping."],
        "items[0].pizza": ["Not on the menu: 'hawaii'."],
        "items[0].size": ["Must be one of small, medium, large."],
        "items[0].quantity": ["Must be between 1 and 20."],
        "kind": ["Must be one of delivery, takeaway."],
        "priority": ["Must be between 0 and 9."],
        "note": ["Must not contain NUL characters."],
    }
    assert_nothing_written()


def test_a_note_can_be_both_too_long_and_contain_nul(menu: None) -> None:
    with pytest.raises(ValidationError) as excinfo:
        place_raw({"items": [MARGHERITA], "note": "\x00" * 501})

    assert excinfo.value.message_dict == {"note": ["At most 500 characters.", "Must not contain NUL characters."]}


def test_the_limits_follow_the_settings(menu: None, settings: Any) -> None:
    settings.PIZZAQUEUE_MAX_ITEMS = 2
    settings.PIZZAQUEUE_MAX_QUANTITY = 3
    settings.PIZZAQUEUE_MAX_NOTE = 4

    with pytest.raises(ValidationError) as too_many:
        place_raw({"items": [MARGHERITA] * 3})
    with pytest.raises(ValidationError) as too_much:
        place_raw({"items": [{**MARGHERITA, "quantity": 4}], "note": "hello"})

    assert too_many.value.message_dict == {"items": ["At most 2 items per order."]}
    assert too_much.value.message_dict == {
        "items[0].quantity": ["Must be between 1 and 3."],
        "note": ["At most 4 characters."],
    }
    assert_nothing_written()
    order, created = place_raw({"items": [{**MARGHERITA, "quantity": 3}] * 2, "note": "four"})
    assert created is True
    assert order.note == "four"


def test_takeaway_from_a_shop_that_does_not_exist_writes_nothing(menu: None) -> None:
    request = clean_order_request(order_data(kind="takeaway", shop="nowhere"))

    with pytest.raises(ValidationError) as excinfo:
        queue.place(request)

    assert excinfo.value.message_dict == {"shop": ["No open shop named 'nowhere'."]}
    assert_nothing_written()


@pytest.mark.parametrize("verdict", ["closed", "stopped past the allowance", "dead past the allowance"])
def test_takeaway_from_a_shop_that_is_closed_writes_nothing(menu: None, verdict: str, settings: Any) -> None:
    shop = make_worker("shop-1")
    if verdict == "closed":
        membership.drain(shop.pk)
        membership.stop(shop.pk, CLOSED)
    else:
        settings.PIZZAQUEUE_SHOP_CLOSED_AFTER = 0
        if verdict.startswith("stopped"):
            membership.stop(shop.pk)
        else:
            monitor.declare_dead(shop.pk)

    with pytest.raises(ValidationError) as excinfo:
        place_raw(order_data(kind="takeaway", shop="shop-1"))

    assert excinfo.value.message_dict == {"shop": ["No open shop named 'shop-1'."]}
    assert_nothing_written()


def test_a_good_request_is_normalised(menu: None) -> None:
    not_before = datetime(2030, 1, 1, 18, 0, tzinfo=UTC)
    now = not_before - timedelta(days=30)

    request = clean_order_request(
        {
            "items": [{"pizza": "diavola", "quantity": "2"}, {"pizza": "margherita", "size": "large", "quantity": 1}],
            "kind": None,
            "area": "  north  ",
            "priority": "7",
            "note": " no onions ",
            "customer_name": "Ada",
            "address": "  1 Harbour Street ",
            "phone": "+44 (20) 7946-0958",
            "not_before": "2030-01-01T18:00:00Z",
            "max_attempts": 5,
        },
        now=now,
    )

    assert request == OrderRequest(
        items=[
            {"pizza": "diavola", "size": "medium", "quantity": 2, "price": "11.00"},
            {"pizza": "margherita", "size": "large", "quantity": 1, "price": "11.50"},
        ],
        kind="delivery",
        area="north",
        priority=7,
        note="no onions",
        customer_name="Ada",
        address="1 Harbour Street",
        phone="+442079460958",
        not_before=not_before,
        max_attempts=5,
    )
    assert request.not_before == not_before
    assert (request.total, request.delivery_fee) == (Decimal("33.50"), Decimal("0.00"))


def test_a_naive_not_before_is_read_in_the_current_time_zone(menu: None, settings: Any) -> None:
    settings.TIME_ZONE = "Europe/Rome"

    request = clean_order_request(order_data(not_before="2030-07-01T18:00:00"), now=datetime(2030, 6, 1, tzinfo=UTC))

    assert request.not_before == datetime(2030, 7, 1, 16, 0, tzinfo=UTC)


def test_a_good_request_writes_one_order_and_one_placed_event(menu: None) -> None:
    now = timezone.now()

    order, created = place_raw(order_data(area="north", priority=3, note="ring twice", customer_name="Ada"), now=now)

    assert created is True
    stored = Order.objects.get()
    assert stored.pk == order.pk
    assert stored.status == Order.Status.QUEUED
    assert stored.kind == Order.Fulfilment.DELIVERY
    assert stored.items == [{"pizza": "margherita", "size": "medium", "quantity": 1, "price": "9.00"}]
    assert stored.total == Decimal("9.00")
    assert stored.note == "ring twice"
    assert stored.customer_name == "Ada"
    assert stored.priority == 3
    assert stored.attempts == 0
    assert stored.max_attempts == 3
    assert stored.created_at == now
    assert stored.eligible_at == now
    assert stored.rank == queue.rank_for(now, 3)
    assert stored.worker_id is None
    assert stored.pinned_shop == ""
    assert stored.lease_token is None
    assert stored.idempotency_key is None
    assert stored.request_hash == ""
    event = OrderEvent.objects.get()
    assert (event.order_id, event.kind, event.created_at, event.message) == (
        order.pk,
        "placed",
        now,
        "",
    )


def refuse_event_inserts() -> None:
    """Make the database itself refuse new events, whatever statement writes them
    (undone with the test's transaction)."""
    table = connection.ops.quote_name(OrderEvent._meta.db_table)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"ALTER TABLE {table} ADD CONSTRAINT refuse_events CHECK (false) NOT VALID")
        else:
            cursor.execute(
                f"CREATE TRIGGER refuse_events BEFORE INSERT ON {table} "
                "BEGIN SELECT RAISE(ABORT, 'event insert refused'); END"
            )


def allow_event_inserts() -> None:
    table = connection.ops.quote_name(OrderEvent._meta.db_table)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"ALTER TABLE {table} DROP CONSTRAINT refuse_events")
        else:
            cursor.execute("DROP TRIGGER refuse_events")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", ["delivery", "takeaway"])
def test_outside_a_transaction_too_the_order_and_its_placed_event_commit_together(live_menu: None, kind: str) -> None:
    # Outside a transaction a delivery order is placed by one query of several
    # statements (the order's, then the wait for the disk): a refused event must
    # still take the order with it.
    make_worker("shop-1")
    request = clean_order_request(order_data(kind=kind, **({"shop": "shop-1"} if kind == "takeaway" else {})))
    refuse_event_inserts()
    try:
        with pytest.raises(IntegrityError):
            queue.place(request)
    finally:
        allow_event_inserts()

    assert_nothing_written()
    queue.place(request)  # and the connection is fine afterwards
    assert (Order.objects.count(), OrderEvent.objects.count()) == (1, 1)


@pytest.mark.parametrize("kind", ["delivery", "takeaway"])
def test_the_order_and_its_placed_event_commit_together(menu: None, kind: str) -> None:
    make_worker("shop-1")
    request = clean_order_request(order_data(kind=kind, **({"shop": "shop-1"} if kind == "takeaway" else {})))
    refuse_event_inserts()

    with pytest.raises(IntegrityError):
        queue.place(request)

    # The order went with the event the database refused: nothing half-written.
    assert_nothing_written()


def test_a_takeaway_order_is_pinned_to_its_live_shop(menu: None) -> None:
    shop = make_worker("shop-1")

    order = make_order(kind="takeaway", shop="shop-1")

    assert order.kind == Order.Fulfilment.TAKEAWAY
    assert order.pinned_shop == shop.name
    assert Order.objects.get().pinned_shop == shop.name


def test_max_attempts_comes_from_the_request_or_the_settings(menu: None, settings: Any) -> None:
    settings.PIZZAQUEUE_MAX_ATTEMPTS = 7

    default = make_order()
    explicit = make_order(max_attempts=2)

    assert default.max_attempts == 7
    assert explicit.max_attempts == 2


def test_not_before_makes_the_order_eligible_later_and_ranks_it_from_then(menu: None) -> None:
    now = timezone.now()
    later = now + timedelta(minutes=30)
    earlier = now - timedelta(minutes=30)

    scheduled, _ = place_raw(order_data(not_before=later), now=now)
    overdue, _ = place_raw(order_data(not_before=earlier), now=now)

    assert scheduled.eligible_at == later
    assert scheduled.rank == queue.rank_for(later, 0)
    # A time in the past means "now": the order does not jump the queue.
    assert overdue.eligible_at == now
    assert overdue.rank == queue.rank_for(now, 0)


@pytest.mark.parametrize(
    ("items", "seconds"),
    [
        # margherita: 40 s for a medium; diavola: 45 s.
        pytest.param([{"pizza": "margherita", "size": "medium", "quantity": 1}], 40, id="one-medium"),
        pytest.param([{"pizza": "margherita", "size": "small", "quantity": 1}], 32, id="small-is-0.8"),
        pytest.param([{"pizza": "margherita", "size": "large", "quantity": 1}], 52, id="large-is-1.3"),
        # Quantity scales with its square root: four bake side by side in twice the time.
        pytest.param([{"pizza": "margherita", "size": "large", "quantity": 4}], 104, id="four-large"),
        pytest.param(
            [{"pizza": "margherita", "size": "large", "quantity": 4}, {"pizza": "diavola", "size": "small"}],
            140,
            id="two-lines",
        ),
    ],
)
def test_estimated_seconds_come_from_the_menu_sizes_and_quantities(
    menu: None, items: list[dict[str, Any]], seconds: int
) -> None:
    order = make_order(items=items)

    assert order.estimated_seconds == seconds
    assert Order.objects.get().estimated_seconds == seconds


def test_orders_of_one_area_share_a_bucket(menu: None, settings: Any) -> None:
    first = make_order(area="north")
    second = make_order(area="north")
    elsewhere = make_order(area="harbour")

    assert first.bucket == second.bucket == ring.bucket_for("north", settings.PIZZAQUEUE_BUCKETS)
    assert elsewhere.bucket == ring.bucket_for("harbour", settings.PIZZAQUEUE_BUCKETS)
    assert elsewhere.bucket != first.bucket


def test_an_order_without_area_is_routed_by_its_id(menu: None, settings: Any) -> None:
    settings.PIZZAQUEUE_BUCKETS = 64

    orders = [make_order() for _ in range(8)]

    for order in orders:
        assert order.area == ""
        assert order.bucket == ring.bucket_for(str(order.id), 64)
    # Routed by id, orders spread over the buckets instead of piling into one.
    assert len({order.bucket for order in orders}) > 1
