"""A staffed kitchen's tap is scoped to the tapper's shop: another shop's order is
not tapped, even with its lease token, and the refusal says nothing about it."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from orders import roles
from orders.handlers import STAFFED_HANDLER
from orders.models import KitchenStaff
from tests.base import area_owned_by, in_role
from tests.factory import make_order
from workers import membership, queue
from workers.models import Order, Worker

pytestmark = pytest.mark.usefixtures("menu")


def staffed(name: str) -> Worker:
    return membership.register(name, "test-host", 1, 4, handler=STAFFED_HANDLER)


def in_kitchen(shop: Worker, **kw: Any) -> tuple[Order, uuid.UUID]:
    order = make_order(area=area_owned_by(shop), **kw)
    (claim,) = queue.claim(shop.pk, 1)
    assert claim.order.pk == order.pk
    return order, claim.token


@pytest.fixture
def cook_of_shop_a(client: Client) -> Client:
    cook = in_role(User.objects.create_user("ada"), roles.KITCHEN_STAFF)
    KitchenStaff.objects.create(user=cook, shop="shop-a")
    client.force_login(cook)
    return client


def test_a_tap_on_another_shops_ticket_changes_nothing_even_with_its_lease(cook_of_shop_a: Client) -> None:
    staffed("shop-a")
    other = staffed("shop-b")
    order, token = in_kitchen(other)

    response = cook_of_shop_a.post("/kitchen/shop-a/tap/", {"order": str(order.pk), "lease": str(token), "stage": ""})

    assert response.status_code == 404
    assert response.content.decode() == "order: Not a ticket of this kitchen."
    assert Order.objects.get(pk=order.pk).stage == ""


def test_a_refused_tap_tells_nothing_of_another_shops_order(cook_of_shop_a: Client) -> None:
    staffed("shop-a")
    other = staffed("shop-b")
    order, token = in_kitchen(other)
    queue.fail(order.pk, token, "secret recipe burnt", other.pk)
    queue.cancel(order.pk, "the customer moved to Mars")

    response = cook_of_shop_a.post(
        "/kitchen/shop-a/tap/", {"order": str(order.pk), "lease": str(uuid.uuid4()), "stage": ""}, follow=True
    )

    page = response.content.decode()
    assert response.status_code == 404
    for secret in ("Mars", "secret recipe", "shop-b", "cancelled"):
        assert secret not in page


def test_a_tap_on_its_own_ticket_that_moved_says_where_it_went(cook_of_shop_a: Client) -> None:
    shop_a = staffed("shop-a")
    order, token = in_kitchen(shop_a)
    queue.cancel(order.pk, "changed my mind", if_held=lambda _order: True)

    response = cook_of_shop_a.post(
        "/kitchen/shop-a/tap/", {"order": str(order.pk), "lease": str(token), "stage": ""}, follow=True
    )

    assert response.status_code == 200
    assert "was cancelled (changed my mind): stop making it." in response.content.decode()
