"""An order's `not_before` is bounded ahead, in UTC, on every way in; and orders
placed before the bound existed are cancelled, so no page fails on them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.db.models.expressions import RawSQL
from django.test import Client
from django.utils import timezone as django_timezone

from tests.base import logged_in, superuser
from workers.models import Order, OrderEvent

MARGHERITA = {"pizza": "margherita", "size": "medium", "quantity": 1}
AHEAD = "Must be at most 90 days from now."


# What a delivery order needs besides its pizzas.
CONTACT = {"address": "1 Harbour Street", "phone": "+442079460958"}


def post_order(client: Client, body: Any) -> Any:
    return client.post("/api/orders/", data=json.dumps(body), content_type="application/json")


def in_days(days: float) -> str:
    return (django_timezone.now() + timedelta(days=days)).isoformat()


@pytest.mark.parametrize(
    ("not_before", "message"),
    [
        # Year 10000 once in UTC: PostgreSQL stores it, Python cannot read it back.
        pytest.param("9999-12-31T23:59:59-12:00", AHEAD, id="past-year-9999-in-utc"),
        pytest.param("9999-12-31T23:59:59Z", AHEAD, id="year-9999"),
        pytest.param(lambda: in_days(91), AHEAD, id="91-days-ahead"),
        pytest.param("0001-01-01T00:00:00+14:00", "Must be after the year 1 in UTC.", id="before-year-1-in-utc"),
    ],
)
def test_a_not_before_out_of_range_is_a_400_naming_it_and_writes_nothing(
    menu: None, staff: Client, not_before: Any, message: str
) -> None:
    value = not_before() if callable(not_before) else not_before

    response = post_order(staff, {"items": [MARGHERITA], **CONTACT, "not_before": value})

    assert response.status_code == 400, response.content
    assert response.json()["errors"] == {"not_before": [message]}
    assert (Order.objects.count(), OrderEvent.objects.count()) == (0, 0)


def test_a_not_before_within_the_bound_is_accepted_and_one_in_the_past_means_now(menu: None, staff: Client) -> None:
    soon = post_order(staff, {"items": [MARGHERITA], **CONTACT, "not_before": in_days(89)})
    long_ago = post_order(staff, {"items": [MARGHERITA], **CONTACT, "not_before": "0001-01-01T00:00:00Z"})

    assert (soon.status_code, long_ago.status_code) == (201, 201)
    assert Order.objects.get(pk=soon.json()["id"]).eligible_at > django_timezone.now() + timedelta(days=88)
    assert Order.objects.get(pk=long_ago.json()["id"]).eligible_at <= django_timezone.now()


def test_the_bound_follows_the_setting(menu: None, staff: Client, settings: Any) -> None:
    settings.PIZZAQUEUE_MAX_SCHEDULE_DAYS = 1

    response = post_order(staff, {"items": [MARGHERITA], **CONTACT, "not_before": in_days(2)})

    assert response.json()["errors"] == {"not_before": ["Must be at most 1 days from now."]}


@pytest.fixture
def before_the_bound(transactional_db: None) -> Iterator[None]:
    """The database as the release before the bound left it; migrated forward by the test."""
    call_command("migrate", "workers", "0002_order_orderevent_move_in", verbosity=0)
    yield
    call_command("migrate", verbosity=0)


def schedule_out_of_range(model: Any, order: Any) -> None:
    """What the unbounded intake stored for `9999-12-31T23:59:59-12:00` (PostgreSQL) or `…Z` (either)."""
    if connection.vendor == "postgresql":
        far = RawSQL("%s::timestamptz", ["10000-01-01 11:59:59+00"])
        model.objects.filter(pk=order.pk).update(eligible_at=far)
    else:
        model.objects.filter(pk=order.pk).update(eligible_at=datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC))


def old_order(models: Any, status: str, eligible_at: datetime, worker: Any = None) -> Any:
    """An order as that release wrote it, with its events: through the models of its
    migration state, since today's have columns its tables do not."""
    now = django_timezone.now()
    order = models.get_model("workers", "Order").objects.create(
        status=status,
        items=[MARGHERITA],
        bucket=0,
        rank=0,
        eligible_at=eligible_at,
        created_at=now,
        estimated_seconds=60,
        attempts=1 if worker else 0,
        worker=worker,
        claimed_at=now if worker else None,
        finished_at=now if status == "done" else None,
    )
    kinds = ["placed", "claimed", "done"] if status == "done" else ["placed"]
    event = models.get_model("workers", "OrderEvent")
    event.objects.bulk_create(event(order=order, kind=kind, created_at=now, worker=worker) for kind in kinds)
    return order


def test_orders_scheduled_out_of_range_before_the_bound_are_cancelled_and_every_page_shows_them(
    live_menu: None, before_the_bound: None
) -> None:
    # The menu first: seeded as today's models have it, it is migrated back and forth with the rest.
    models = MigrationExecutor(connection).loader.project_state(("workers", "0002_order_orderevent_move_in")).apps
    now = django_timezone.now()
    worker = models.get_model("workers", "Worker").objects.create(
        name="shop-1", host="test-host", pid=1, started_at=now, last_heartbeat=now
    )
    finished = old_order(models, "done", now, worker)
    poisoned = old_order(models, "queued", now)
    fine = old_order(models, "queued", now + timedelta(days=30))
    for order in (poisoned, finished):
        schedule_out_of_range(models.get_model("workers", "Order"), order)

    call_command("migrate", verbosity=0)

    client = logged_in(superuser())
    pages = [
        "/api/orders/",
        "/api/orders/?status=queued",
        "/api/orders/?status=cancelled",
        f"/api/orders/{poisoned.pk}/",
        f"/api/orders/{finished.pk}/",
        "/admin/workers/order/",
        "/admin/workers/order/?status__exact=queued",
        f"/admin/workers/order/{poisoned.pk}/change/",
        f"/orders/{poisoned.pk}/",
        f"/orders/{finished.pk}/",
        "/board/",
        "/kitchen/shop-1/",
    ]
    assert {page: client.get(page).status_code for page in pages} == dict.fromkeys(pages, 200)
    cancelled = Order.objects.get(pk=poisoned.pk)
    assert (cancelled.status, cancelled.cancel_reason) == (Order.Status.CANCELLED, "scheduled too far ahead")
    assert cancelled.eligible_at == cancelled.created_at
    assert list(cancelled.events.values_list("kind", flat=True)) == ["placed", "cancelled"]
    assert Order.objects.get(pk=finished.pk).status == Order.Status.DONE
    assert Order.objects.get(pk=fine.pk).status == Order.Status.QUEUED


def test_a_not_before_with_an_offset_no_database_stores_is_a_400(staff: Client) -> None:
    response = post_order(staff, {"items": [MARGHERITA], **CONTACT, "not_before": "2030-03-21T23:13:25+23:33"})

    assert response.status_code == 400
    assert response.json()["errors"] == {"not_before": ["Must have a time zone offset within ±15:59."]}
