"""Who and where: a delivery order carries an address and a phone, a takeaway order a name,
checked with clear errors; and as personal data they are shown only to the order's owner and
the shop's people, never to the link alone, and go when the order is purged."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from orders.intake import PHONE_MESSAGE
from tests.base import integrator, kitchen_staff, logged_in, make_worker, operator
from tests.factory import ADDRESS, make_order, order_data
from workers import queue
from workers.models import Order, OrderEvent

pytestmark = pytest.mark.django_db

PERSONAL = ("1 Harbour Street", "+442079460958", "Ada Lovelace")


def post(client: Any, body: Any) -> Any:
    return client.post("/api/orders/", data=json.dumps(body), content_type="application/json")


def place_from_the_form(browser: Client, **fields: str) -> Order:
    form = {
        "token": str(uuid.uuid4()),
        "kind": "delivery",
        "qty_margherita": "1",
        "address": "1 Harbour Street",
        "phone": "+44 20 7946 0958",
        "customer_name": "Ada Lovelace",
        **fields,
    }
    response = browser.post("/orders/", form)
    assert response.status_code == 302, response.content
    return Order.objects.get(pk=response["Location"].rstrip("/").rsplit("/", 1)[1])


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        pytest.param(
            order_data(address="", phone=""),
            {
                "address": ["A delivery order needs the address to bring it to."],
                "phone": ["A delivery order needs a phone number the driver can call."],
            },
            id="delivery-without-address-or-phone",
        ),
        pytest.param(order_data(address="1 A"), {"address": ["Too short to find: give the street and house number."]}),
        pytest.param(order_data(phone="call me"), {"phone": [PHONE_MESSAGE]}, id="phone-in-words"),
        pytest.param(order_data(phone="+1 23"), {"phone": [PHONE_MESSAGE]}, id="phone-too-short"),
        pytest.param(order_data(phone="+" + "1" * 16), {"phone": [PHONE_MESSAGE]}, id="phone-too-long"),
        pytest.param(order_data(phone=5551234567), {"phone": ["Must be a string."]}, id="phone-a-number"),
        pytest.param(order_data(address="x" * 201), {"address": ["At most 200 characters."]}, id="address-too-long"),
        pytest.param(
            order_data(kind="takeaway", shop="shop-1", customer_name=""),
            {"customer_name": ["A takeaway order needs the name the counter calls."]},
            id="takeaway-without-a-name",
        ),
        pytest.param(
            order_data(kind="takeaway", shop="shop-1", address=ADDRESS),
            {"address": ["Only delivery orders have an address."]},
            id="takeaway-with-an-address",
        ),
    ],
)
def test_who_and_where_are_checked_with_clear_errors_and_nothing_is_placed(
    menu: None, body: dict[str, Any], errors: dict[str, list[str]]
) -> None:
    make_worker("shop-1")

    response = post(integrator(), body)

    assert response.status_code == 400, response.content
    assert response.json()["errors"] == errors
    assert (Order.objects.count(), OrderEvent.objects.count()) == (0, 0)


def test_a_phone_is_kept_as_its_digits_and_the_owner_reads_it_back(menu: None) -> None:
    api = integrator()

    body = post(api, order_data(phone="+44 (20) 7946-0958", address=" 1 Harbour Street ")).json()

    again = api.get(f"/api/orders/{body['id']}/").json()
    assert (again["address"], again["phone"]) == ("1 Harbour Street", "+442079460958")
    assert integrator("someone-else").get(f"/api/orders/{body['id']}/").status_code == 404


def test_the_tracking_link_alone_shows_nothing_personal(menu: None) -> None:
    placing = Client()
    order = place_from_the_form(placing)

    stranger = Client().get(f"/orders/{order.pk}/").content.decode()
    mine = placing.get(f"/orders/{order.pk}/").content.decode()
    staff = logged_in(operator()).get(f"/orders/{order.pk}/").content.decode()

    for text in PERSONAL:
        assert text not in stranger, text
        assert text in mine, text
        assert text in staff, text
    assert "Margherita" in stranger  # what was ordered is not personal: the link's holder may follow it


def test_a_shops_kitchen_staff_see_its_customers_but_not_another_shops(menu: None) -> None:
    order = place_from_the_form(Client())
    (claim,) = queue.claim(make_worker("shop-1").pk, 1)  # the only shop owns every bucket

    ours = logged_in(kitchen_staff("shop-1")).get(f"/orders/{order.pk}/").content.decode()
    theirs = logged_in(kitchen_staff("shop-9", username="other-cook")).get(f"/orders/{order.pk}/").content.decode()

    assert claim.order.pk == order.pk
    assert "1 Harbour Street" in ours
    assert "1 Harbour Street" not in theirs


def test_a_takeaway_ticket_shows_the_customers_name(menu: None) -> None:
    make_worker("corner")
    make_order(kind="takeaway", shop="corner", customer_name="Grace Hopper")

    page = logged_in(kitchen_staff("corner")).get("/kitchen/corner/").content.decode()

    assert "Grace Hopper" in page


def test_the_form_leaves_out_what_belongs_to_the_other_kind_of_order(menu: None) -> None:
    make_worker("corner")

    order = place_from_the_form(Client(), kind="takeaway", shop="corner")
    delivered = place_from_the_form(Client(), shop="corner")

    assert (order.kind, order.address, order.phone, order.customer_name) == ("takeaway", "", "", "Ada Lovelace")
    assert (delivered.kind, delivered.pinned_shop) == ("delivery", "")


def test_purge_erases_the_personal_data_with_the_order(menu: None) -> None:
    order = make_order(address="7 Purge Lane", phone="+15550001111", customer_name="Eve")
    queue.cancel(order.pk, now=timezone.now() - timedelta(days=40))

    call_command("purge", "--before", "30d", stdout=StringIO())

    assert not Order.objects.filter(address="7 Purge Lane").exists()
    assert not Order.objects.filter(phone="+15550001111").exists()
    assert not OrderEvent.objects.filter(order_id=order.pk).exists()
