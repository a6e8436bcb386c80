"""The REST API: every endpoint, every error path, and nothing written on a 4xx."""

from __future__ import annotations

import base64
import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.conf import settings as django_settings
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import Permission, User
from django.core.exceptions import ImproperlyConfigured, RequestDataTooBig
from django.db import connection
from django.test import AsyncClient
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from orders import api, roles, stats
from orders.authentication import TokenAuthentication
from orders.intake import clean_order_request
from tests.base import in_role, integrator, make_worker
from tests.factory import make_order, order_data
from workers import membership, queue
from workers.models import CLOSED, Bucket, Order, OrderEvent

pytestmark = pytest.mark.django_db

ORDERS = "/api/orders/"
MARGHERITA = {"pizza": "margherita", "size": "large", "quantity": 2}


def order_url(order_id: object) -> str:
    return f"/api/orders/{order_id}/"


def cancel_url(order_id: object) -> str:
    return f"/api/orders/{order_id}/cancel/"


@pytest.fixture
def client(menu: None) -> APIClient:
    return integrator()


def post_json(client: APIClient, body: Any, **headers: str) -> Any:
    return client.post(ORDERS, data=json.dumps(body), content_type="application/json", headers=headers)


@contextmanager
def nothing_written() -> Iterator[None]:
    counts = (Order.objects.count(), OrderEvent.objects.count())
    yield
    assert (Order.objects.count(), OrderEvent.objects.count()) == counts


def assert_error(response: Any, status: int, code: str, detail: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["code"] == code
    if detail is not None:
        assert body["detail"] == detail
    return body


def hold(order: Order) -> uuid.UUID:
    """Put the order in a kitchen (the only live worker owns every bucket)."""
    worker = make_worker("shop-1")
    claims = queue.claim(worker.pk, limit=100)
    return next(c.token for c in claims if c.order.pk == order.pk)


# --- Placing orders -----------------------------------------------------------------


def test_it_places_an_order_and_answers_201_with_it(client: APIClient) -> None:
    response = post_json(client, order_data(items=[MARGHERITA], area="north", priority=3, note="ring twice"))

    assert response.status_code == 201
    body = response.json()
    order = Order.objects.get()
    assert body["id"] == str(order.pk)
    assert body["status"] == "queued"
    assert body["items"] == [{**MARGHERITA, "price": "11.50"}]
    assert (body["total"], body["delivery_fee"], body["currency"]) == ("23.00", "0.00", "EUR")
    assert body["area"] == "north"
    assert body["priority"] == 3
    assert body["note"] == "ring twice"
    assert body["worker"] is None
    assert response["Location"] == f"http://testserver/api/orders/{order.pk}/"


def test_a_201_means_the_order_and_its_placed_event_are_committed(client: APIClient) -> None:
    response = post_json(client, order_data())

    order = Order.objects.get(pk=response.json()["id"])
    assert order.status == Order.Status.QUEUED
    assert list(order.events.values_list("kind", flat=True)) == ["placed"]


def test_a_takeaway_order_names_an_open_shop(client: APIClient) -> None:
    make_worker("soho")

    response = post_json(client, order_data(kind="takeaway", shop="soho"))

    assert response.status_code == 201
    assert response.json()["shop"] == "soho"


BAD_INPUT = [
    pytest.param({}, "items", "Must be a non-empty list of {pizza, size, quantity}.", id="items-missing"),
    pytest.param(
        {"items": "margherita"}, "items", "Must be a non-empty list of {pizza, size, quantity}.", id="items-not-a-list"
    ),
    pytest.param({"items": []}, "items", "Must be a non-empty list of {pizza, size, quantity}.", id="items-empty"),
    pytest.param({"items": [MARGHERITA] * 21}, "items", "At most 20 items per order.", id="items-too-many"),
    pytest.param(
        {"items": [7]}, "items[0]", "Must be an object with pizza, size and quantity.", id="item-not-an-object"
    ),
    pytest.param({"items": [{"pizza": "hawaii"}]}, "items[0].pizza", "Not on the menu: 'hawaii'.", id="pizza-unknown"),
    pytest.param({"items": [{"pizza": 12}]}, "items[0].pizza", "Not on the menu: 12.", id="pizza-wrong-type"),
    pytest.param(
        {"items": [{"pizza": "margherita", "size": "huge"}]},
        "items[0].size",
        "Must be one of small, medium, large.",
        id="size-unknown",
    ),
    pytest.param(
        {"items": [{"pizza": "margherita", "quantity": "lots"}]},
        "items[0].quantity",
        "Must be a whole number.",
        id="quantity-wrong-type",
    ),
    pytest.param(
        {"items": [{"pizza": "margherita", "quantity": True}]},
        "items[0].quantity",
        "Must be a whole number.",
        id="quantity-boolean",
    ),
    pytest.param(
        {"items": [{"pizza": "margherita", "quantity": 1.5}]},
        "items[0].quantity",
        "Must be a whole number.",
        id="quantity-float",
    ),
    pytest.param(
        {"items": [{"pizza": "margherita", "quantity": 21}]},
        "items[0].quantity",
        "Must be between 1 and 20.",
        id="quantity-too-many",
    ),
    pytest.param(
        {"items": [{"pizza": "margherita", "quantity": 0}]},
        "items[0].quantity",
        "Must be between 1 and 20.",
        id="quantity-zero",
    ),
    pytest.param(
        {"items": [{"pizza": "margherita", "extra": "cheese"}]},
        "items[0]",
        "Unknown fields: extra.",
        id="item-unknown-field",
    ),
    pytest.param(order_data(priority="high"), "priority", "Must be a whole number.", id="priority-wrong-type"),
    pytest.param(order_data(priority=10), "priority", "Must be between 0 and 9.", id="priority-too-high"),
    pytest.param(order_data(priority=[1]), "priority", "Must be a whole number.", id="priority-list"),
    pytest.param(order_data(kind="drone"), "kind", "Must be one of delivery, takeaway.", id="kind-unknown"),
    pytest.param(
        order_data(kind="takeaway"),
        "shop",
        "A takeaway order names the shop it is collected from.",
        id="takeaway-without-shop",
    ),
    pytest.param(
        order_data(kind="takeaway", shop="atlantis"),
        "shop",
        "No open shop named 'atlantis'.",
        id="takeaway-shop-closed",
    ),
    pytest.param(
        order_data(shop="soho"), "shop", "Only takeaway orders are pinned to a shop.", id="delivery-with-shop"
    ),
    pytest.param(order_data(note="x" * 501), "note", "At most 500 characters.", id="note-too-long"),
    pytest.param(order_data(note=5), "note", "Must be a string.", id="note-wrong-type"),
    pytest.param(order_data(note="a\x00b"), "note", "Must not contain NUL characters.", id="note-nul"),
    pytest.param(
        order_data(customer_name=["Ann"]), "customer_name", "Must be a string.", id="customer-name-wrong-type"
    ),
    pytest.param(order_data(area="a" * 65), "area", "At most 64 characters.", id="area-too-long"),
    pytest.param(
        order_data(not_before="tomorrow"), "not_before", "Must be an ISO 8601 date and time.", id="not-before-garbage"
    ),
    pytest.param(
        order_data(not_before=1700000000), "not_before", "Must be an ISO 8601 date and time.", id="not-before-number"
    ),
    pytest.param(order_data(max_attempts=0), "max_attempts", "Must be between 1 and 20.", id="max-attempts-zero"),
    pytest.param(order_data(coupon="FREE"), "non_field_errors", "Unknown fields: coupon.", id="unknown-field"),
    pytest.param([order_data()], "non_field_errors", "Expected an object.", id="body-a-list"),
    pytest.param(None, "non_field_errors", "Expected an object.", id="body-null"),
    pytest.param("margherita", "non_field_errors", "Expected an object.", id="body-a-string"),
]


@pytest.mark.parametrize(("body", "field", "message"), BAD_INPUT)
def test_bad_input_is_a_400_naming_the_field(client: APIClient, body: Any, field: str, message: str) -> None:
    with nothing_written():
        response = post_json(client, body)

    errors = assert_error(response, 400, "invalid", "Invalid input.")["errors"]
    assert message in errors[field]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param(order_data(items=[{"pizza": "marg\x00herita"}]), "items[0].pizza", id="pizza"),
        pytest.param(order_data(items=[MARGHERITA, {"pizza": "\x00"}]), "items[1].pizza", id="second-pizza"),
        pytest.param(order_data(items=[{"pizza": "margherita", "size": "large\x00"}]), "items[0].size", id="size"),
        pytest.param(order_data(kind="takeaway\x00"), "kind", id="kind"),
        pytest.param(order_data(kind="takeaway", shop="shop-1\x00"), "shop", id="shop"),
        pytest.param(order_data(area="\x00north"), "area", id="area"),
        pytest.param(order_data(note="\x00"), "note", id="note"),
        pytest.param(order_data(customer_name="Ann\x00"), "customer_name", id="customer-name"),
        pytest.param(order_data(not_before="2030-01-01T18:00:00Z\x00"), "not_before", id="not-before"),
    ],
)
def test_a_nul_in_any_text_field_is_a_400_naming_it(client: APIClient, body: Any, field: str) -> None:
    make_worker("shop-1")
    with nothing_written():
        response = post_json(client, body)

    errors = assert_error(response, 400, "invalid", "Invalid input.")["errors"]
    assert errors == {field: ["Must not contain NUL characters."]}


def test_a_number_intake_cannot_convert_is_a_400_not_a_500(client: APIClient) -> None:
    with nothing_written():
        response = post_json(client, order_data(priority="²"))

    assert response.status_code == 400
    assert response.json()["code"] == "invalid"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        pytest.param(b'{"items": [', "JSON parse error - ", id="truncated"),
        pytest.param(b'{"items": NaN}', "JSON parse error - NaN is not valid JSON", id="nan"),
        pytest.param(b"[" * 20_000 + b"]" * 20_000, "JSON parse error - nested too deeply.", id="deep-nesting"),
        pytest.param(
            b'{"note": "\\ud800"}', "JSON parse error - not valid Unicode: surrogates not allowed.", id="lone-surrogate"
        ),
        pytest.param(b'{"note": "\xff"}', "JSON parse error - not valid Unicode: invalid start byte.", id="not-utf8"),
    ],
)
def test_malformed_json_is_a_400_naming_the_body(client: APIClient, raw: bytes, message: str) -> None:
    with nothing_written():
        response = client.post(ORDERS, data=raw, content_type="application/json")

    errors = assert_error(response, 400, "invalid")["errors"]
    assert errors["body"][0].startswith(message)


def test_an_empty_json_body_is_a_400_naming_items(client: APIClient) -> None:
    with nothing_written():
        response = client.post(ORDERS, data=b"", content_type="application/json")

    assert assert_error(response, 400, "invalid")["errors"] == {
        "items": ["Must be a non-empty list of {pizza, size, quantity}."],
        "address": ["A delivery order needs the address to bring it to."],
        "phone": ["A delivery order needs a phone number the driver can call."],
    }


def test_a_body_over_the_limit_is_a_413(client: APIClient) -> None:
    body = json.dumps(order_data(note="x" * (django_settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)))

    with nothing_written():
        response = client.post(ORDERS, data=body, content_type="application/json")

    assert_error(response, 413, "too_large", "Request body larger than 65536 bytes.")


def test_a_body_over_the_limit_is_a_413_through_the_asgi_handler_too(client: APIClient) -> None:
    # daphne serves the ASGI handler, whose request body is a spooled file, not a WSGI stream.
    token = Token.objects.get().key
    body = json.dumps(order_data(note="x" * (django_settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)))

    with nothing_written():
        response = async_to_sync(AsyncClient().post)(
            ORDERS, data=body, content_type="application/json", headers={"Authorization": f"Token {token}"}
        )

    assert_error(response, 413, "too_large", "Request body larger than 65536 bytes.")


def test_django_refusing_a_big_body_is_a_413_too() -> None:
    response = api.exception_handler(RequestDataTooBig("too big"), {})

    assert response is not None
    assert response.status_code == 413
    assert response.data == {"detail": "Request body larger than 65536 bytes.", "code": "too_large"}


@pytest.mark.parametrize(
    ("content_type", "data"),
    [
        ("application/x-www-form-urlencoded", "items=margherita"),
        ("text/plain", json.dumps(order_data())),
        ("multipart/form-data; boundary=x", "--x--"),
        ("", json.dumps(order_data())),
    ],
)
def test_a_body_that_is_not_json_is_a_415(client: APIClient, content_type: str, data: str) -> None:
    with nothing_written():
        response = client.generic("POST", ORDERS, data=data, content_type=content_type)

    assert_error(response, 415, "unsupported_media_type")


# --- Idempotency ------------------------------------------------------------------------


def test_a_retry_with_the_same_key_and_body_returns_the_same_order(client: APIClient) -> None:
    first = post_json(client, order_data(note="ring twice"), **{"Idempotency-Key": "order-42"})

    with nothing_written():
        again = post_json(client, order_data(note="ring twice"), **{"Idempotency-Key": "order-42"})

    assert first.status_code == 201
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert again["Idempotent-Replayed"] == "true"


def test_a_takeaway_retry_after_its_shop_closed_replays_the_first_order(client: APIClient) -> None:
    shop = make_worker("shop-1")
    takeaway = order_data(kind="takeaway", shop="shop-1")
    first = post_json(client, takeaway, **{"Idempotency-Key": "order-43"})
    membership.drain(shop.pk)
    membership.stop(shop.pk, CLOSED)  # closed by an operator: its customers are told at once

    with nothing_written():
        again = post_json(client, takeaway, **{"Idempotency-Key": "order-43"})

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["status"] == "cancelled"


def test_a_key_reused_with_a_different_body_is_a_409(client: APIClient) -> None:
    post_json(client, order_data(note="ring twice"), **{"Idempotency-Key": "order-42"})

    with nothing_written():
        response = post_json(client, order_data(note="knock"), **{"Idempotency-Key": "order-42"})

    assert_error(response, 409, "idempotency_conflict", "This Idempotency-Key was already used for a different order.")


def test_idempotency_keys_are_scoped_to_the_user(client: APIClient) -> None:
    other = integrator("other-integrator")

    mine = post_json(client, order_data(), **{"Idempotency-Key": "order-42"})
    theirs = post_json(other, order_data(), **{"Idempotency-Key": "order-42"})

    assert (mine.status_code, theirs.status_code) == (201, 201)
    assert mine.json()["id"] != theirs.json()["id"]


@pytest.mark.parametrize("key", ["", "with space", "x" * 201, "naïve"])
def test_a_malformed_idempotency_key_is_a_400_naming_the_header(client: APIClient, key: str) -> None:
    with nothing_written():
        response = post_json(client, order_data(), **{"Idempotency-Key": key})

    assert assert_error(response, 400, "invalid")["errors"] == {
        "Idempotency-Key": ["Must be 1 to 200 visible ASCII characters."]
    }


def test_a_takeaway_key_race_decided_by_the_unique_constraint_returns_the_winners_order(
    client: APIClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_worker("shop-1")
    takeaway = order_data(kind="takeaway", shop="shop-1")
    winner = post_json(client, takeaway, **{"Idempotency-Key": "race"})
    # A takeaway retry is looked up before its shop is checked. The loser's
    # lookup ran before the winner committed: it finds nothing, so its INSERT
    # hits the unique constraint and place() falls back to the winner.
    real_filter = Order.objects.filter
    missed: list[bool] = []

    def first_key_lookup_misses(*args: Any, **kwargs: Any) -> Any:
        queryset = real_filter(*args, **kwargs)
        if "idempotency_key" in kwargs and not missed:
            missed.append(True)
            return queryset.none()
        return queryset

    monkeypatch.setattr(Order.objects, "filter", first_key_lookup_misses)

    with nothing_written():
        loser = post_json(client, takeaway, **{"Idempotency-Key": "race"})

    assert missed == [True]
    assert loser.status_code == 200
    assert loser.json()["id"] == winner.json()["id"]


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_creates_with_one_key_make_one_order(live_menu: None) -> None:
    clients = [integrator("first"), integrator("second")]
    token = Token.objects.get(user__username="first").key
    for c in clients:
        c.credentials(HTTP_AUTHORIZATION=f"Token {token}")  # one integrator, two connections
    barrier = threading.Barrier(2)
    responses: list[Any] = [None, None]

    def submit(index: int) -> None:
        try:
            barrier.wait(timeout=10)
            responses[index] = post_json(clients[index], order_data(note="once"), **{"Idempotency-Key": "dinner"})
        finally:
            connection.close()

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    assert sorted(r.status_code for r in responses) == [200, 201]
    assert responses[0].json()["id"] == responses[1].json()["id"]
    assert Order.objects.count() == 1
    assert OrderEvent.objects.count() == 1


# --- Throttling ---------------------------------------------------------------------------


def test_placing_orders_is_throttled_per_user(client: APIClient, settings: Any) -> None:
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"order-create": "2/minute"}}
    assert [post_json(client, order_data()).status_code for _ in range(2)] == [201, 201]

    with nothing_written():
        response = post_json(client, order_data())

    body = assert_error(response, 429, "throttled")
    assert body["wait"] > 0
    assert int(response["Retry-After"]) > 0
    assert post_json(integrator("someone-else"), order_data()).status_code == 201
    assert client.get(ORDERS).status_code == 200  # reads are not throttled


def test_a_malformed_create_rate_fails_loudly(client: APIClient, settings: Any) -> None:
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"order-create": "lots"}}

    with (
        nothing_written(),
        pytest.raises(
            ImproperlyConfigured, match=r"^Throttle rate for 'order-create' must look like 600/minute, got 'lots'$"
        ),
    ):
        post_json(client, order_data())


# --- Authentication --------------------------------------------------------------------------


ENDPOINTS = [
    ("get", ORDERS),
    ("post", ORDERS),
    ("get", order_url(uuid.uuid4())),
    ("post", cancel_url(uuid.uuid4())),
    ("get", "/api/workers/"),
    ("get", "/api/buckets/"),
    ("get", "/api/stats/"),
]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_every_call_needs_a_token(menu: None, method: str, path: str) -> None:
    with nothing_written():
        response = getattr(APIClient(), method)(path)

    assert_error(response, 401, "not_authenticated", "Authentication credentials were not provided.")
    assert response["WWW-Authenticate"] == "Token"


def test_a_wrong_token_is_a_401(menu: None) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")

    with nothing_written():
        response = post_json(client, order_data())

    assert_error(response, 401, "authentication_failed", "Invalid token.")


@pytest.mark.parametrize(
    ("key", "detail"),
    [
        ("a\x00b", "Invalid token."),
        ("x" * 5000, "Invalid token."),
        ("é" * 40, "Invalid token header. Token string should not contain invalid characters."),
    ],
    ids=["nul", "long", "non-ascii"],
)
def test_a_token_no_token_could_be_is_a_401_not_a_500(menu: None, key: str, detail: str) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")

    with nothing_written():
        response = post_json(client, order_data())

    assert_error(response, 401, "authentication_failed", detail)


def test_a_token_of_an_inactive_user_is_a_401(menu: None) -> None:
    client = integrator("leaver")
    User.objects.filter(username="leaver").update(is_active=False)

    with nothing_written():
        response = post_json(client, order_data())

    assert_error(response, 401, "authentication_failed", "User inactive or deleted.")


def test_a_token_is_checked_to_the_same_user_and_token_as_drfs_own_lookup(menu: None) -> None:
    integrator("integrator")
    stored = Token.objects.select_related("user").get(user__username="integrator")

    user, token = TokenAuthentication().authenticate_credentials(stored.key)

    assert (type(user), type(token)) == (type(stored.user), Token)
    for field in Token._meta.concrete_fields:
        assert getattr(token, field.attname) == getattr(stored, field.attname), field.name
    for field in User._meta.concrete_fields:  # datetimes too: SQLite's need the backend's converters
        assert getattr(user, field.attname) == getattr(stored.user, field.attname), field.name
    assert token.user is user and not user._state.adding


def test_a_logged_in_session_without_csrf_cannot_place_orders(menu: None) -> None:
    user = in_role(User.objects.create_user("browser"), roles.INTEGRATORS)
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(user)

    with nothing_written():
        response = post_json(client, order_data())

    assert assert_error(response, 403, "permission_denied")["detail"].startswith("CSRF Failed")


# --- Reading orders ----------------------------------------------------------------------------


def test_an_order_is_read_with_its_timeline(client: APIClient) -> None:
    order = make_order(placed_by=client.user)
    token = hold(order)
    queue.report_stage(order.pk, token, "oven", worker_id=Order.objects.get(pk=order.pk).worker_id)

    body = client.get(order_url(order.pk)).json()

    assert body["status"] == "preparing"
    assert body["stage"] == "oven"
    assert body["worker"]["name"] == "shop-1"
    assert body["lease_expires_at"] is not None
    assert [(e["kind"], e["stage"], e["worker"]) for e in body["events"]] == [
        ("placed", "", None),
        ("claimed", "", "shop-1"),
        ("stage", "oven", "shop-1"),
    ]


@pytest.mark.parametrize("order_id", [uuid.uuid4(), "not-a-uuid", "1", "%00"])
def test_an_unknown_order_is_a_json_404(client: APIClient, order_id: object) -> None:
    assert_error(client.get(order_url(order_id)), 404, "not_found", "No order with this id.")


def test_reading_an_order_takes_a_fixed_number_of_queries(
    client: APIClient, django_assert_max_num_queries: Any
) -> None:
    order = make_order(placed_by=client.user)
    token = hold(order)
    for stage in ("dough", "oven", "boxing"):
        queue.report_stage(order.pk, token, stage)

    # Token, order with workers, events with workers.
    with django_assert_max_num_queries(3):
        assert client.get(order_url(order.pk)).status_code == 200


def test_orders_are_listed_newest_first(client: APIClient) -> None:
    older, newer = make_order(placed_by=client.user), make_order(placed_by=client.user)

    body = client.get(ORDERS).json()

    assert [o["id"] for o in body["results"]] == [str(newer.pk), str(older.pk)]
    assert body["next"] is None
    assert "events" not in body["results"][0]


def test_orders_are_filtered_by_status_priority_and_worker(client: APIClient) -> None:
    held = make_order(placed_by=client.user, priority=5)
    hold(held)
    queued_urgent = make_order(placed_by=client.user, priority=5)
    make_order(placed_by=client.user, priority=1)
    worker_id = Order.objects.get(pk=held.pk).worker_id

    def ids(query: str) -> set[str]:
        response = client.get(f"{ORDERS}?{query}")
        assert response.status_code == 200
        return {o["id"] for o in response.json()["results"]}

    assert ids("status=preparing") == {str(held.pk)}
    assert ids("priority=5") == {str(held.pk), str(queued_urgent.pk)}
    assert ids("status=queued&priority=5") == {str(queued_urgent.pk)}
    assert ids("worker=shop-1") == {str(held.pk)}
    assert ids(f"worker={worker_id}") == {str(held.pk)}
    assert ids("worker=nobody") == set()
    assert ids("worker=99999999999999999999999") == set()


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        ("status=burnt", "status", "Select a valid choice. burnt is not one of the available choices."),
        ("priority=urgent", "priority", "Enter a whole number."),
        ("priority=10", "priority", "Ensure this value is less than or equal to 9."),
        ("worker=" + "w" * 101, "worker", "Ensure this value has at most 100 characters (it has 101)."),
        ("worker=a%00b", "worker", "Must not contain NUL characters."),
        ("status=queued%00", "status", "Must not contain NUL characters."),
        ("page_size=0", "page_size", "Must be between 1 and 200."),
        ("page_size=lots", "page_size", "Must be between 1 and 200."),
        ("cursor=garbage", "cursor", "Invalid cursor; use the `next` link of a previous page."),
    ],
)
def test_bad_list_parameters_are_a_400_naming_the_parameter(
    client: APIClient, query: str, field: str, message: str
) -> None:
    response = client.get(f"{ORDERS}?{query}")

    assert assert_error(response, 400, "invalid")["errors"] == {field: [message]}


@pytest.mark.parametrize(
    "position",
    [
        ["not a date", str(uuid.uuid4())],
        ["2030-01-01T00:00:00+00:00", "not-a-uuid"],
        [1],
        "x",
        [None, None],
        ["0001-01-01T00:00:00+14:00", str(uuid.uuid4())],
    ],
)
def test_a_forged_cursor_is_a_400_not_a_500(client: APIClient, position: Any) -> None:
    cursor = base64.urlsafe_b64encode(json.dumps(position).encode()).decode()

    response = client.get(f"{ORDERS}?cursor={cursor}")

    assert assert_error(response, 400, "invalid")["errors"] == {
        "cursor": ["Invalid cursor; use the `next` link of a previous page."]
    }


def test_pages_interleave_statuses_newest_first(client: APIClient) -> None:
    orders = [make_order(placed_by=client.user) for _ in range(6)]
    queue.cancel(orders[1].pk)
    queue.cancel(orders[4].pk)
    seen: list[str] = []
    url: str | None = f"{ORDERS}?page_size=4"
    while url:
        body = client.get(url).json()
        seen += [o["id"] for o in body["results"]]
        url = body["next"]

    assert seen == [str(o.pk) for o in reversed(orders)]


def test_pages_follow_next_links_through_orders_with_equal_timestamps(client: APIClient) -> None:
    # A bulk placement stamps every order with the same time: the cursor must still
    # compare (created_at, id) so that no order is skipped or repeated.
    bulk = queue.place_many(
        [clean_order_request(order_data()) for _ in range(7)], owner=queue.Owner(user_id=client.user.pk)
    )
    single = make_order(placed_by=client.user)
    seen: list[str] = []
    url: str | None = f"{ORDERS}?page_size=3"
    pages = 0
    while url:
        body = client.get(url).json()
        seen += [o["id"] for o in body["results"]]
        url = body["next"]
        pages += 1

    assert pages == 3
    assert seen[0] == str(single.pk)
    assert sorted(seen) == sorted(str(o.pk) for o in [*bulk, single])
    assert len(set(seen)) == 8


def test_listing_orders_takes_a_fixed_number_of_queries(client: APIClient, django_assert_max_num_queries: Any) -> None:
    orders = [make_order(placed_by=client.user, kind="delivery") for _ in range(4)]
    hold(orders[0])
    make_worker("soho")
    make_order(placed_by=client.user, kind="takeaway", shop="soho")

    # Token, the newest keys of each status (one index range each), the page's rows with their kitchens.
    with django_assert_max_num_queries(1 + len(Order.Status.values) + 1):
        assert len(client.get(ORDERS).json()["results"]) == 5
    # Within one status: token, then one page query.
    with django_assert_max_num_queries(2):
        assert len(client.get(f"{ORDERS}?status=preparing").json()["results"]) == 4


def test_the_fast_order_representation_equals_drfs_field_by_field_output(client: APIClient) -> None:
    from rest_framework import serializers

    from orders.serializers import OrderDetailSerializer, OrderSerializer

    make_worker("soho")
    orders = [
        make_order(placed_by=client.user),
        make_order(placed_by=client.user, kind="takeaway", shop="soho"),
        make_order(
            placed_by=client.user,
            not_before=(timezone.now() + timedelta(days=30)).astimezone(timezone.get_fixed_timezone(120)),
        ),
    ]
    owner = Bucket.objects.get(number=orders[0].bucket).owner_id
    claim = next(c for c in queue.claim(owner, limit=10) if c.order.pk == orders[0].pk)
    queue.report_stage(orders[0].pk, claim.token, "oven")
    queue.cancel(orders[2].pk, reason="changed my mind")

    for order in Order.objects.select_related("worker").prefetch_related("events"):
        for serializer_class in (OrderSerializer, OrderDetailSerializer):
            serializer = serializer_class(order)
            assert serializer.data == serializers.Serializer.to_representation(serializer, order)


# --- Cancelling -------------------------------------------------------------------------------


def test_a_queued_order_is_cancelled(client: APIClient) -> None:
    order = make_order(placed_by=client.user)

    response = client.post(cancel_url(order.pk))

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "cancelled"
    assert body["cancel_reason"] == "cancelled through the API"
    assert [e["kind"] for e in body["events"]] == ["placed", "cancelled"]
    assert OrderEvent.objects.get(order=order, kind="cancelled").actor == client.user


def test_an_order_in_the_oven_cannot_be_cancelled_by_an_integrator(client: APIClient) -> None:
    order = make_order(placed_by=client.user)
    token = hold(order)
    assert queue.report_stage(order.pk, token, "oven")

    with nothing_written():
        response = client.post(cancel_url(order.pk))

    assert_error(response, 409, "invalid_transition", "Too late to cancel: the order is at the oven.")
    assert Order.objects.get(pk=order.pk).status == Order.Status.PREPARING


def test_an_order_in_the_kitchen_before_the_oven_is_cancelled_and_its_lease_revoked(client: APIClient) -> None:
    order = make_order(placed_by=client.user)
    token = hold(order)
    assert queue.report_stage(order.pk, token, "dough")

    response = client.post(cancel_url(order.pk))

    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    stored = Order.objects.get(pk=order.pk)
    assert (stored.status, stored.lease_token, stored.lease_expires_at) == ("cancelled", None, None)
    # The kitchen's next step is refused, and so is its completion.
    assert queue.report_stage(order.pk, token, "sauce") is False
    assert queue.complete(order.pk, token) is False
    assert not OrderEvent.objects.filter(order=order, kind="done").exists()


def test_operators_cancel_an_order_at_any_stage(menu: None) -> None:
    staff = integrator("operator")
    in_role(User.objects.get(username="operator"), roles.OPERATORS)
    User.objects.filter(username="operator").update(is_staff=True)
    order = make_order()
    token = hold(order)
    assert queue.report_stage(order.pk, token, "boxing")

    response = staff.post(cancel_url(order.pk))

    assert response.status_code == 200
    assert Order.objects.get(pk=order.pk).status == Order.Status.CANCELLED


@pytest.mark.parametrize("final", ["done", "cancelled"])
def test_a_finished_order_cannot_be_cancelled(client: APIClient, final: str) -> None:
    order = make_order(placed_by=client.user)
    if final == "done":
        queue.complete(order.pk, hold(order))
    else:
        queue.cancel(order.pk)

    with nothing_written():
        response = client.post(cancel_url(order.pk))

    assert_error(response, 409, "invalid_transition", f"Order is {final}; only a queued order can be cancelled.")


@pytest.mark.parametrize("order_id", [uuid.uuid4(), "not-a-uuid"])
def test_cancelling_an_unknown_order_is_a_404(client: APIClient, order_id: object) -> None:
    with nothing_written():
        response = client.post(cancel_url(order_id))

    assert_error(response, 404, "not_found", "No order with this id.")


# --- Kitchens, buckets, stats ----------------------------------------------------------------


def test_workers_are_listed_with_their_load(client: APIClient) -> None:
    first = make_worker("shop-1")
    second = make_worker("shop-2")
    order = make_order(placed_by=client.user)
    owner = Bucket.objects.get(number=order.bucket).owner_id
    queue.claim(owner, limit=1)
    membership.drain(second.pk)

    body = client.get("/api/workers/").json()

    rows = {w["name"]: w for w in body["results"]}
    assert [w["name"] for w in body["results"]] == ["shop-2", "shop-1"]
    assert rows["shop-1"]["owned_buckets"] + rows["shop-2"]["owned_buckets"] == django_settings.PIZZAQUEUE_BUCKETS
    assert rows["shop-1"]["in_flight"] == (1 if owner == first.pk else 0)
    assert rows["shop-2"]["in_flight"] == (1 if owner == second.pk else 0)
    assert rows["shop-2"]["status"] == "draining"
    assert 0 <= rows["shop-1"]["heartbeat_age_seconds"] < 60
    assert [w["name"] for w in client.get("/api/workers/?status=draining").json()["results"]] == ["shop-2"]


def test_only_staff_see_where_workers_run(client: APIClient) -> None:
    make_worker("shop-1", host="kitchen-7.internal", pid=4242)
    staff = integrator("operator")
    in_role(User.objects.get(username="operator"), roles.OPERATORS)

    theirs = client.get("/api/workers/").json()["results"][0]
    ours = staff.get("/api/workers/").json()["results"][0]

    assert (theirs["host"], theirs["pid"]) == ("", None)
    assert (ours["host"], ours["pid"]) == ("kitchen-7.internal", 4242)


def test_workers_list_rejects_an_unknown_status(client: APIClient) -> None:
    response = client.get("/api/workers/?status=sleepy")

    assert assert_error(response, 400, "invalid")["errors"] == {
        "status": ["Select a valid choice. sleepy is not one of the available choices."]
    }


def test_workers_list_takes_a_fixed_number_of_queries(client: APIClient, django_assert_max_num_queries: Any) -> None:
    for n in range(4):
        make_worker(f"shop-{n}")

    with django_assert_max_num_queries(2):
        assert len(client.get("/api/workers/").json()["results"]) == 4


def test_the_api_lists_every_bucket_with_owner_epoch_and_queued_depth(
    client: APIClient, django_assert_max_num_queries: Any
) -> None:
    worker = make_worker("shop-1")
    orders = [
        make_order(placed_by=client.user, area="north"),
        make_order(placed_by=client.user, area="north"),
        make_order(placed_by=client.user, area="south"),
    ]

    with django_assert_max_num_queries(3):
        body = client.get("/api/buckets/").json()

    assert len(body) == django_settings.PIZZAQUEUE_BUCKETS
    by_number = {b["number"]: b for b in body}
    north, south = orders[0].bucket, orders[2].bucket
    assert by_number[north]["queued"] == (2 if north != south else 3)
    assert by_number[south]["queued"] >= 1
    assert sum(b["queued"] for b in body) == 3
    assert {b["owner"]["name"] for b in body} == {worker.name}
    assert all(b["epoch"] >= 1 for b in body)


def test_stats_count_orders_by_status_with_throughput_and_live_workers(client: APIClient) -> None:
    done, _preparing = make_order(placed_by=client.user), make_order(placed_by=client.user)
    worker = make_worker("shop-1")
    claims = {c.order.pk: c.token for c in queue.claim(worker.pk, limit=10)}
    queue.complete(done.pk, claims[done.pk])
    make_order(placed_by=client.user)
    queue.cancel(make_order(placed_by=client.user).pk)

    body = client.get("/api/stats/").json()

    assert body["orders"] == {
        "queued": {"count": 1, "exact": True},
        "preparing": {"count": 1, "exact": True},
        "done": {"count": 1, "exact": True},
        "failed": {"count": 0, "exact": True},
        "cancelled": {"count": 1, "exact": True},
    }
    assert body["done_last_minute"] == 1
    assert body["throughput_per_second"] == 0.02
    assert body["live_workers"] == 1


def test_stats_ignore_done_events_older_than_a_minute(client: APIClient) -> None:
    order = make_order(placed_by=client.user)
    queue.complete(order.pk, hold(order), now=timezone.now() - timedelta(minutes=2))

    assert client.get("/api/stats/").json()["done_last_minute"] == 0


@pytest.mark.skipif(connection.vendor != "postgresql", reason="estimates come from PostgreSQL's planner")
def test_on_a_big_table_stats_estimate_finished_orders_and_count_active_ones(
    client: APIClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    for _ in range(3):
        make_order(placed_by=client.user)
    queue.cancel(make_order(placed_by=client.user).pk)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE orders_order")
    monkeypatch.setattr(stats, "EXACT_COUNT_BELOW", 0)

    orders = client.get("/api/stats/").json()["orders"]

    assert orders["queued"] == {"count": 3, "exact": True}
    assert orders["preparing"] == {"count": 0, "exact": True}
    assert {orders[s]["exact"] for s in ("done", "failed", "cancelled")} == {False}
    assert all(orders[s]["count"] >= 0 for s in ("done", "failed", "cancelled"))


# --- The rest of the surface ----------------------------------------------------------------


def test_an_unknown_api_route_is_a_json_404(client: APIClient) -> None:
    assert_error(client.get("/api/pizzas/"), 404, "not_found", "No such API endpoint.")


def test_an_unsupported_method_is_a_json_405(client: APIClient) -> None:
    order = make_order(placed_by=client.user)

    with nothing_written():
        response = client.delete(order_url(order.pk))

    assert_error(response, 405, "method_not_allowed", 'Method "DELETE" not allowed.')


def test_the_schema_and_docs_are_served_to_authenticated_callers(client: APIClient) -> None:
    schema = client.get("/api/schema/", headers={"Accept": "application/vnd.oai.openapi+json"})
    docs = client.get("/api/docs/")

    assert schema.status_code == 200
    paths = json.loads(schema.content)["paths"]
    assert set(paths) == {
        "/api/orders/",
        "/api/orders/{id}/",
        "/api/orders/{id}/cancel/",
        "/api/workers/",
        "/api/buckets/",
        "/api/stats/",
    }
    assert docs.status_code == 200
    assert b"swagger" in docs.content.lower()
    page = docs.content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in page
    assert "<script>" not in page  # the start-up script comes from ?script, for the CSP
    script = client.get("/api/docs/?script=")
    assert script.status_code == 200
    assert script["Content-Type"].startswith("application/javascript")


@pytest.mark.parametrize("granted", ["none", "own", "group", "both"])
def test_a_tokens_user_comes_with_the_permissions_djangos_backend_would_find(menu: None, granted: str) -> None:
    user = User.objects.create_user("perms")
    if granted in ("own", "both"):
        user.user_permissions.add(Permission.objects.get(codename="view_bucket"))
    if granted in ("group", "both"):
        in_role(user, roles.OPERATORS)
    key = Token.objects.create(user=user).key

    fast_user, _token = TokenAuthentication().authenticate_credentials(key)

    assert fast_user._perm_cache == ModelBackend().get_all_permissions(User.objects.get(pk=user.pk))
    with CaptureQueriesContext(connection) as queries:
        assert fast_user.has_perm("workers.change_order") is (granted in ("group", "both"))
    assert len(queries) == 0


def test_a_read_and_a_change_each_look_their_token_and_permissions_up_in_one_query(menu: None) -> None:
    client = integrator("integrator")
    placed = post_json(client, order_data())
    assert placed.status_code == 201

    with CaptureQueriesContext(connection) as read:
        assert client.get(f"/api/orders/{placed.json()['id']}/").status_code == 200
    with CaptureQueriesContext(connection) as change:
        assert post_json(client, order_data()).status_code == 201

    def touching(queries: CaptureQueriesContext, table: str) -> list[str]:
        return [q["sql"] for q in queries.captured_queries if table in (q["sql"] or "")]  # a prepared one logs none

    # Both are scoped by a permission (reading every order, placing one), each answered
    # by its token lookup: one query read the token, the user and the user's groups.
    for queries in (read, change):
        assert touching(queries, "auth_user_groups") == touching(queries, "authtoken_token")
        assert len(touching(queries, "authtoken_token")) == 1
