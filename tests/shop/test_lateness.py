"""Lateness that is true: an order is late once unfinished past its promise,
counted from when it became due, and every late order is found however many
orders are scheduled ahead of it (`orders.deadlines`)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from orders import roles
from orders.deadlines import late_count, late_orders, promised_at, promised_seconds
from orders.intake import clean_order_request
from tests.base import in_role, make_worker
from tests.factory import order_data, placed_at
from workers import clock, queue
from workers.models import Order

pytestmark = pytest.mark.django_db


@pytest.fixture
def board_client(client: Client, menu: None) -> Client:
    client.force_login(in_role(User.objects.create_user("olga", is_staff=True), roles.OPERATORS))
    return client


def schedule(count: int, placed: datetime, due: datetime) -> list[Order]:
    """`count` orders placed at `placed` for `due`, in one transaction."""
    request = clean_order_request(order_data(not_before=due.isoformat()), now=placed)
    return queue.place_many([request] * count, now=placed)


def test_a_late_order_behind_500_scheduled_ones_is_listed_and_counted(board_client: Client, settings: Any) -> None:
    settings.PIZZAQUEUE_KITCHEN_SPEED = 1.0
    make_worker("shop-1")
    now = clock.now()
    # Placed first, for tomorrow: the oldest unfinished orders, none of them due.
    schedule(500, placed=now - timedelta(hours=3), due=now + timedelta(days=1))
    late = placed_at(now - timedelta(hours=1))
    on_time = placed_at(now - timedelta(seconds=1))
    assert promised_at(late) < now < promised_at(on_time)

    assert [o.pk for o in late_orders(now)] == [late.pk]
    assert late_count(now) == 1
    board = board_client.get("/board/").content.decode()
    assert f'data-late="{late.pk}"' in board and f'data-late="{on_time.pk}"' not in board
    assert "pizzaqueue_orders_late 1.0" in board_client.get("/metrics").content.decode()


def test_every_late_order_is_counted_however_many_there_are(settings: Any, menu: None) -> None:
    settings.PIZZAQUEUE_KITCHEN_SPEED = 1.0
    now = clock.now()
    schedule(500, placed=now - timedelta(hours=3), due=now + timedelta(days=1))
    for _ in range(60):
        placed_at(now - timedelta(hours=1))

    assert late_count(now) == 60
    assert len(late_orders(now)) == 60
    assert len(late_orders(now, limit=20)) == 20


def test_a_scheduled_order_is_late_counted_from_when_it_became_due(settings: Any, menu: None) -> None:
    settings.PIZZAQUEUE_KITCHEN_SPEED = 1.0
    now = clock.now()
    (due_just_now,) = schedule(1, placed=now - timedelta(hours=3), due=now - timedelta(seconds=1))
    (due_long_ago,) = schedule(1, placed=now - timedelta(hours=3), due=now - timedelta(hours=2))
    promise = timedelta(seconds=promised_seconds(due_just_now))
    assert timedelta(seconds=1) < promise < timedelta(hours=2)

    assert abs(promised_at(due_just_now) - (now - timedelta(seconds=1) + promise)) < timedelta(milliseconds=1)
    assert [o.pk for o in late_orders(now)] == [due_long_ago.pk]


def test_a_retried_order_stays_late_from_when_it_became_due(settings: Any, menu: None) -> None:
    settings.PIZZAQUEUE_KITCHEN_SPEED = 1.0
    now = clock.now()
    worker = make_worker("shop-1")
    order = placed_at(now - timedelta(hours=1))
    (claim,) = queue.claim(worker.pk, 1)
    # Its retry is not due for a while: waiting out a backoff does not make it on time.
    queue.fail(order.pk, claim.token, "oven on fire", worker.pk)
    order.refresh_from_db()
    assert order.status == Order.Status.QUEUED and order.eligible_at > now

    assert [o.pk for o in late_orders(now + timedelta(seconds=1))] == [order.pk]
