"""A delivery order's promise is its customer's door: kept, revised and flagged late
while the made order waits on its shop's shelf or is out with a driver; a takeaway
order's ends at the counter. The stand-ins (`orders.standins`) hand over what no
person does, through the same fenced steps, and a person's tap wins."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from orders import promises, standins
from orders.deadlines import late_count, late_orders
from orders.timeline import customer_message
from tests.base import T0, at, fresh, logged_in, make_worker, operator
from tests.factory import make_order
from workers import clock, queue
from workers.models import Order, OrderEvent, Worker

pytestmark = pytest.mark.django_db
Handover = Order.Handover
DRIVE = 600.0  # seconds on the road to any area


@pytest.fixture(autouse=True)
def _clocks(settings: Any, menu: None) -> None:
    settings.PIZZAQUEUE_KITCHEN_SPEED = 1.0
    settings.PIZZAQUEUE_MONITOR_INTERVAL = 1.0
    settings.PIZZAQUEUE_PROMISE_TOLERANCE = 10.0
    settings.PIZZAQUEUE_PROMISE_THRESHOLD = 0.25
    settings.PIZZAQUEUE_DELIVERY_SECONDS = DRIVE
    settings.PIZZAQUEUE_COLLECTION_SECONDS = 0.0
    promises.KEEPER.last_event_id = None


@pytest.fixture
def shop() -> Worker:
    return make_worker("shop-1", concurrency=4, now=T0)


def made(kitchen: Worker, done_at: float, **kw: Any) -> Order:
    """An order placed at T0 and made by `kitchen` at `done_at` seconds: waiting at the shop."""
    order = make_order(now=T0, **kw)
    (claim,) = [c for c in queue.claim(kitchen.pk, 10, now=T0) if c.order.pk == order.pk]
    assert queue.complete(order.pk, claim.token, kitchen.pk, now=at(done_at)) is True
    return fresh(order)


def promised_seconds(order: Order) -> float:
    assert order.promised_at is not None
    return (order.promised_at - T0).total_seconds()


def driver(username: str = "dora") -> User:
    return User.objects.create_user(username)


def test_a_delivery_order_is_promised_at_the_door_and_a_takeaway_ready_to_collect(shop: Worker) -> None:
    delivery = make_order(now=T0)
    takeaway = make_order(now=T0, kind="takeaway", shop="shop-1")

    # Its 40 s in the kitchen, the drive, and a tenth of the lead as margin.
    assert promised_seconds(delivery) == pytest.approx(40 + DRIVE + 64)
    assert promised_seconds(takeaway) == pytest.approx(40 + 4)


def test_the_kitchen_display_times_a_ticket_against_its_ready_time_not_the_door(shop: Worker) -> None:
    order = make_order()  # due now: the display shows what its kitchen claims next

    page = logged_in(operator()).get("/kitchen/shop-1/").content.decode()

    (ticket,) = re.findall(rf'<article[^>]*data-ticket="{order.pk}"[^>]*>', page)
    # The promise (40 + 600 + 64 s) less the drive: the kitchen has 104 s.
    assert 'data-promise="104"' in ticket


def test_the_tracking_page_keeps_a_delivery_orders_promise_until_it_is_at_the_door(shop: Worker) -> None:
    delivery = made(shop, 40)
    takeaway = made(shop, 40, kind="takeaway", shop="shop-1")
    client = Client()

    on_the_shelf = client.get(f"/orders/{delivery.pk}/").content.decode()
    assert "At your door by" in on_the_shelf
    assert f'datetime="{delivery.promised_at.isoformat()}"' in on_the_shelf
    assert "Ready to collect by" not in client.get(f"/orders/{takeaway.pk}/").content.decode()

    token = queue.take(delivery.pk, driver().pk, now=at(60))
    assert token is not None
    assert "At your door by" in client.get(f"/orders/{delivery.pk}/").content.decode()
    assert queue.deliver(delivery.pk, token, "card", now=at(600)) is True
    delivered = client.get(f"/orders/{delivery.pk}/").content.decode()
    assert "At your door by" not in delivered
    assert "Delivered and paid" in delivered


def test_a_delivery_order_left_on_the_shelf_is_revised_before_its_promise_passes(shop: Worker) -> None:
    order = made(shop, 40)
    promise = order.promised_at
    assert promise is not None

    # Taken now, it would be at the door at 650 s, inside its promise (704 s): nothing to tell.
    assert promises.keep(at(50)) == []
    # Still on the shelf at 250 s: at the door at 850 s at the soonest.
    assert promises.keep(at(250)) == [order.pk]

    revised = fresh(order)
    assert revised.promised_at is not None and revised.promised_at > promise
    assert promised_seconds(revised) == pytest.approx(250 + DRIVE + 60)
    event = OrderEvent.objects.get(order=order, kind=OrderEvent.Kind.PROMISED)
    assert event.data["why"] == promises.ON_THE_WAY
    message = customer_message(event)
    assert message is not None and message["text"] == f"Running late: now by {revised.promised_at:%H:%M:%S}."


def test_an_order_out_with_a_driver_keeps_its_promise_until_the_drive_runs_over(shop: Worker) -> None:
    order = made(shop, 40)
    assert queue.take(order.pk, driver().pk, now=at(50)) is not None

    # Out since 50 s, at the door by 650 s: the promise (704 s) holds.
    assert promises.keep(at(60)) == []
    assert promises.keep(at(400)) == []
    # The drive ran over its 600 s: a quarter of a drive more, past the promise.
    assert promises.keep(at(690)) == [order.pk]
    assert promised_seconds(fresh(order)) == pytest.approx(690 + 150 + 15)


def test_a_takeaway_order_on_the_counter_and_a_delivered_order_are_never_revised(shop: Worker) -> None:
    takeaway = made(shop, 40, kind="takeaway", shop="shop-1")
    delivered = made(shop, 40)
    token = queue.take(delivered.pk, driver().pk, now=at(40))
    assert token is not None and queue.deliver(delivered.pk, token, "cash", now=at(45))

    assert promises.keep(at(5000)) == []
    assert queue.revise_promises([queue.Revision(takeaway.pk, takeaway.promised_at, at(9000), "queue")]) == []
    assert not OrderEvent.objects.filter(kind=OrderEvent.Kind.PROMISED).exists()


def test_a_delivery_order_past_its_promise_on_its_way_is_late_until_delivered(shop: Worker) -> None:
    order = made(shop, 40)
    made(shop, 40, kind="takeaway", shop="shop-1")  # waits on the counter: its customer's to collect
    past = order.promised_at + timedelta(seconds=1)

    assert [o.pk for o in late_orders(past)] == [order.pk]
    assert late_count(past) == 1
    token = queue.take(order.pk, driver().pk, now=past)
    assert token is not None
    assert late_count(past) == 1
    assert queue.deliver(order.pk, token, "card", now=past) is True
    assert late_orders(past) == [] and late_count(past) == 0


def test_the_board_lists_a_delivery_order_late_on_the_shelf(shop: Worker, monkeypatch: pytest.MonkeyPatch) -> None:
    order = made(shop, 40)
    monkeypatch.setattr(clock, "now", lambda: order.promised_at + timedelta(seconds=30))

    page = logged_in(operator()).get("/board/").content.decode()

    assert f'data-late="{order.pk}"' in page
    assert "done · on the shelf" in page


def test_the_stand_ins_hand_each_made_order_over_after_their_standby(shop: Worker) -> None:
    takeaway = made(shop, 40, kind="takeaway", shop="shop-1")
    delivery = made(shop, 40)

    assert standins.step(4.0, now=at(43)) == standins.Pass()
    assert standins.step(4.0, now=at(44)) == standins.Pass(collected=1, taken=1)
    # On the road for the area's drive, then delivered and paid at the door.
    assert standins.step(4.0, now=at(44 + DRIVE - 1)) == standins.Pass()
    assert standins.step(4.0, now=at(44 + DRIVE)) == standins.Pass(delivered=1)

    takeaway, delivery = fresh(takeaway), fresh(delivery)
    assert takeaway.handover == Handover.COLLECTED and takeaway.paid_at == at(44)
    assert delivery.handover == Handover.DELIVERED and delivery.paid_at == at(44 + DRIVE)
    assert delivery.payment_method in Order.Payment.values
    assert delivery.driver.username == standins.DRIVER_USERNAME
    assert list(delivery.events.values_list("kind", flat=True))[-2:] == [
        OrderEvent.Kind.OUT_FOR_DELIVERY,
        OrderEvent.Kind.DELIVERED,
    ]


def test_a_person_who_takes_an_order_first_keeps_it_from_the_stand_in(shop: Worker) -> None:
    order = made(shop, 40)
    token = queue.take(order.pk, driver().pk, now=at(41))
    assert token is not None

    assert standins.step(4.0, now=at(44 + DRIVE * 2)) == standins.Pass()
    order = fresh(order)
    assert (order.handover, order.handover_token) == (Handover.OUT, token)
    assert order.driver.username == "dora"
