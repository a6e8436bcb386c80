"""The hand-over, after the kitchen: a takeaway order waits on its shop's counter until it is
collected and paid; a delivery order waits on its shop's shelf until one driver takes it, then
is out for delivery until delivered and paid. Every step is fenced like a kitchen's tap."""

from __future__ import annotations

import html
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.test import Client
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from orders import navigation, roles
from orders.metrics import QueueCollector
from orders.models import Driver
from tests.base import T0, at, fresh, in_role, integrator, kitchen_staff, logged_in, make_worker, operator
from tests.factory import make_order
from workers import monitor, queue
from workers.models import Order, OrderEvent

pytestmark = pytest.mark.django_db
Handover = Order.Handover


def driver(shop: str = "shop-1", username: str = "dora") -> User:
    """A driver of `shop`, in the drivers' role."""
    user = in_role(User.objects.create_user(username), roles.DRIVERS)
    Driver.objects.create(user=user, shop=shop)
    return user


@pytest.fixture
def shop(menu: None) -> Any:
    return make_worker("shop-1")


def make_made(kitchen: Any, now: Any = None, **kw: Any) -> Order:
    """An order made by `kitchen` (which owns its bucket): done, waiting at the shop."""
    order = make_order(now=now, **kw)
    (claim,) = [c for c in queue.claim(kitchen.pk, 10, now=now) if c.order.pk == order.pk]
    assert queue.complete(order.pk, claim.token, kitchen.pk, now=now) is True
    return fresh(order)


def kinds(order: Order) -> list[str]:
    return list(order.events.values_list("kind", flat=True))


def test_a_made_takeaway_waits_on_the_counter_and_a_delivery_on_the_shelf(shop: Any) -> None:
    takeaway = make_made(shop, kind="takeaway", shop="shop-1")
    delivery = make_made(shop)

    assert (takeaway.status, takeaway.handover) == (Order.Status.DONE, Handover.COUNTER)
    assert (delivery.status, delivery.handover) == (Order.Status.DONE, Handover.SHELF)
    assert delivery.paid_at is None and delivery.payment_method == ""


def test_the_counter_hands_a_takeaway_over_once_with_its_payment(shop: Any) -> None:
    order = make_made(shop, kind="takeaway", shop="shop-1", now=at(0))
    cook = kitchen_staff("shop-1")

    assert queue.collect(order.pk, "card", now=at(90), actor_id=cook.pk) is True
    assert queue.collect(order.pk, "cash", now=at(91), actor_id=cook.pk) is False  # a double tap

    order = fresh(order)
    assert (order.handover, order.payment_method, order.paid_at) == (Handover.COLLECTED, "card", at(90))
    collected = order.events.get(kind=OrderEvent.Kind.COLLECTED)
    assert (collected.actor_id, collected.data) == (cook.pk, {"method": "card", "counter_seconds": 90.0})


def test_one_driver_takes_an_order_and_a_second_phones_take_is_refused(shop: Any) -> None:
    order = make_made(shop, now=at(0))
    dora, dan = driver(), driver(username="dan")

    token = queue.take(order.pk, dora.pk, now=at(30))
    assert token is not None
    assert queue.take(order.pk, dan.pk, now=at(31)) is None
    assert queue.take(order.pk, dora.pk, now=at(32)) is None  # the same phone again: one take

    order = fresh(order)
    assert (order.handover, order.driver_id, order.handover_token, order.out_at) == (
        Handover.OUT,
        dora.pk,
        token,
        at(30),
    )
    assert kinds(order).count(OrderEvent.Kind.OUT_FOR_DELIVERY) == 1
    assert order.events.get(kind=OrderEvent.Kind.OUT_FOR_DELIVERY).data == {"shelf_seconds": 30.0}


def test_a_stale_phones_tap_changes_nothing(shop: Any) -> None:
    order = make_made(shop, now=at(0))
    dora, dan = driver(), driver(username="dan")
    doras_phone = queue.take(order.pk, dora.pk, now=at(10))
    assert doras_phone is not None
    # Dora's scooter breaks down: an operator puts the order back, and Dan takes it.
    assert queue.back_to_shelf(order.pk, now=at(20), actor_id=operator().pk) is True
    dans_phone = queue.take(order.pk, dan.pk, now=at(25))
    assert dans_phone is not None

    assert queue.deliver(order.pk, doras_phone, "cash", now=at(40)) is False
    assert fresh(order).handover == Handover.OUT
    assert queue.deliver(order.pk, dans_phone, "cash", now=at(625)) is True

    order = fresh(order)
    assert (order.handover, order.driver_id, order.payment_method, order.handover_token) == (
        Handover.DELIVERED,
        dan.pk,
        "cash",
        None,
    )
    assert kinds(order)[-4:] == ["out-for-delivery", "back-on-shelf", "out-for-delivery", "delivered"]
    assert order.events.get(kind=OrderEvent.Kind.DELIVERED).data == {"method": "cash", "delivery_seconds": 600.0}


def test_only_a_made_order_of_the_right_kind_is_handed_over(shop: Any) -> None:
    waiting = make_order()
    takeaway = make_made(shop, kind="takeaway", shop="shop-1")
    delivery = make_made(shop)

    assert queue.take(waiting.pk, driver().pk) is None  # not made yet
    assert queue.take(takeaway.pk, driver(username="dan").pk) is None  # collected at the counter, not driven
    assert queue.collect(delivery.pk, "cash") is False
    with pytest.raises(ValidationError):
        queue.collect(takeaway.pk, "cheque")
    assert fresh(waiting).handover == "" and fresh(takeaway).handover == Handover.COUNTER


def test_a_made_order_stays_at_its_shop_when_the_shop_goes_down(shop: Any, client: Client) -> None:
    order = make_made(shop, now=T0)
    make_worker("shop-2")

    monitor.declare_dead(shop.pk)

    order = fresh(order)
    assert (order.status, order.handover, order.worker_id) == (Order.Status.DONE, Handover.SHELF, shop.pk)
    page = client.get(f"/orders/{order.pk}/").content.decode()
    assert "Shop 1 is not open just now. Your order was made and stays there, not moved to another shop" in page
    # A driver still takes it from there: the pizza is on that shop's shelf.
    assert queue.take(order.pk, driver().pk) is not None


def test_the_tracking_page_says_each_step(shop: Any, client: Client) -> None:
    order = make_made(shop)
    dora = driver()

    def status() -> tuple[str, str]:
        page = html.unescape(client.get(f"/orders/{order.pk}/").content.decode())
        label = page.split('<p class="status" id="status">')[1].split("<")[0]
        line = page.split('id="handover">')[1].split("<")[0]
        return label, line

    assert status() == (
        "Ready",
        "Ready on Shop 1's shelf, waiting for a driver: pay the driver when it arrives.",
    )
    token = queue.take(order.pk, dora.pk)
    assert status() == ("Out for delivery", "Out for delivery: pay the driver when it arrives.")
    assert token is not None and queue.deliver(order.pk, token, "card")
    assert status() == ("Delivered", "Delivered and paid — enjoy!")
    assert "Delivered and paid (card). Enjoy!" in client.get(f"/orders/{order.pk}/").content.decode()
    assert "Paid card on" in client.get(f"/orders/{order.pk}/receipt/").content.decode()


def test_a_driver_works_the_shelf_in_a_browser_without_javascript(shop: Any) -> None:
    order = make_made(shop, address="9 Quay Road", phone="+15550009999")
    phone = logged_in(driver())

    shelf = phone.get("/shelf/shop-1/").content.decode()
    assert "9 Quay Road" in shelf and "Take it" in shelf
    assert phone.post("/shelf/shop-1/take/", {"order": str(order.pk)}).status_code == 302
    mine = phone.get("/shelf/shop-1/").content.decode()
    token = str(fresh(order).handover_token)
    assert token in mine and "+15550009999" in mine
    assert (
        phone.post("/shelf/shop-1/deliver/", {"order": str(order.pk), "token": token, "method": "cash"}).status_code
        == 302
    )
    assert fresh(order).handover == Handover.DELIVERED


def test_a_second_phone_is_told_the_order_was_taken(shop: Any) -> None:
    order = make_made(shop)
    first, second = logged_in(driver()), logged_in(driver(username="dan"))
    first.post("/shelf/shop-1/take/", {"order": str(order.pk)})

    refused = second.post("/shelf/shop-1/take/", {"order": str(order.pk)}, follow=True).content.decode()

    assert "was taken by another driver a moment ago: nothing changed." in refused
    assert fresh(order).driver.username == "dora"  # type: ignore[union-attr]


def test_the_shelf_is_its_own_drivers_and_taps_with_bad_input_are_400(shop: Any) -> None:
    order = make_made(shop)
    make_worker("shop-2")
    elsewhere = logged_in(driver(shop="shop-2", username="elsa"))
    mine = logged_in(driver())

    assert elsewhere.get("/shelf/shop-1/").status_code == 403  # another shop's shelf, as for kitchen displays
    assert elsewhere.post("/shelf/shop-1/take/", {"order": str(order.pk)}).status_code == 403
    assert Client().get("/shelf/shop-1/").status_code == 302  # to log in
    assert mine.post("/shelf/shop-1/take/", {"order": "nope"}).status_code == 400
    assert (
        mine.post(
            "/shelf/shop-1/deliver/", {"order": str(order.pk), "token": str(order.pk), "method": "iou"}
        ).status_code
        == 400
    )
    assert fresh(order).handover == Handover.SHELF


def test_the_counter_on_the_kitchen_display_hands_over_once(shop: Any) -> None:
    order = make_made(shop, kind="takeaway", shop="shop-1", customer_name="Grace")
    display = logged_in(kitchen_staff("shop-1"))

    page = display.get("/kitchen/shop-1/").content.decode()
    assert "Grace" in page and "Collected, paid card" in page
    assert display.post("/kitchen/shop-1/counter/", {"order": str(order.pk), "method": "card"}).status_code == 302
    again = display.post("/kitchen/shop-1/counter/", {"order": str(order.pk), "method": "card"}, follow=True)
    assert "was already collected and paid: nothing changed." in again.content.decode()
    assert display.post("/kitchen/shop-1/counter/", {"order": str(order.pk), "method": "iou"}).status_code == 400
    assert fresh(order).payment_method == "card"


def test_the_board_shows_the_shelf_and_the_drivers_out(shop: Any) -> None:
    waiting, out = make_made(shop), make_made(shop)
    queue.take(out.pk, driver().pk)

    page = logged_in(operator()).get("/board/").content.decode()

    assert (
        '<tr data-shop="shop-1"><td>shop-1</td><td class="num">0</td><td class="num shelf">1</td><td class="num">1</td></tr>'
        in page
    )
    assert 'data-driver="dora"' in page
    assert waiting.pk != out.pk


def test_metrics_have_shelf_time_and_delivery_time(shop: Any) -> None:
    collector = QueueCollector()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    generate_latest(registry)  # the first scrape starts the counters
    order = make_made(shop, now=at(0))
    token = queue.take(order.pk, driver().pk, now=at(120))
    assert token is not None
    queue.deliver(order.pk, token, "cash", now=at(120 + 900))
    make_made(shop)

    text = generate_latest(registry).decode()
    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert values[("pizzaqueue_shelf_seconds_sum", ())] == 120
    assert values[("pizzaqueue_delivery_seconds_sum", ())] == 900
    assert values[("pizzaqueue_delivery_seconds_bucket", (("le", "900"),))] == 1
    assert values[("pizzaqueue_orders_awaiting_handover", (("at", "shelf"),))] == 1


def test_the_api_shows_the_hand_over_and_the_payment(shop: Any) -> None:
    api = integrator()
    order = make_made(shop, placed_by=api.user)  # type: ignore[attr-defined]
    token = queue.take(order.pk, driver().pk)
    assert token is not None
    queue.deliver(order.pk, token, "card", now=fresh(order).out_at + timedelta(minutes=5))  # type: ignore[operator]

    body = api.get(f"/api/orders/{order.pk}/").json()

    assert (body["status"], body["handover"], body["payment_method"]) == ("done", "delivered", "card")
    assert body["paid_at"] is not None and body["out_at"] is not None
    assert [e["kind"] for e in body["events"]][-2:] == ["out-for-delivery", "delivered"]


def test_the_api_lists_orders_at_a_hand_over_step_with_their_promise(shop: Any) -> None:
    api = integrator()
    on_the_shelf = make_made(shop, placed_by=api.user)  # type: ignore[attr-defined]
    on_the_counter = make_made(shop, kind="takeaway", shop="shop-1", placed_by=api.user)  # type: ignore[attr-defined]
    make_order(placed_by=api.user)  # type: ignore[attr-defined]

    def listed(query: str) -> list[str]:
        response = api.get(f"/api/orders/?{query}")
        assert response.status_code == 200
        return [o["id"] for o in response.json()["results"]]

    assert listed("handover=shelf") == [str(on_the_shelf.pk)]
    assert listed("handover=counter&status=done") == [str(on_the_counter.pk)]
    assert listed("handover=delivered") == []
    body = api.get(f"/api/orders/{on_the_shelf.pk}/").json()
    assert body["promised_at"] == on_the_shelf.promised_at.isoformat().replace("+00:00", "Z")  # type: ignore[union-attr]
    refused = api.get("/api/orders/?handover=lost")
    assert refused.status_code == 400
    assert list(refused.json()["errors"]) == ["handover"]


def test_a_driver_lands_on_their_shelf_and_is_sent_back_there_from_another(shop: Any) -> None:
    user = driver()

    board = logged_in(user).get("/board/", follow=True)

    assert navigation.home_for(user) == "/shelf/shop-1/"
    assert board.redirect_chain[-1][0] == "/shelf/shop-1/"
    assert "Shelf Shop 1" in board.content.decode()
