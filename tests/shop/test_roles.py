"""The roles (SPEC §9), as Django groups and permissions: kitchen staff work their
own shop's display and nothing else, operators act on every order and kitchen,
integrators place orders through the API; every operator action is on the
order's timeline with who did it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import Group, Permission, User
from django.db import connections
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from orders import roles
from orders.authentication import TokenAuthentication
from pizzaqueue.asgi import application
from tests import base
from tests.base import area_owned_by, in_role, logged_in, make_worker
from tests.factory import make_order, order_data
from workers import queue
from workers.models import Order, OrderEvent
from workers.relay import stop_relay

ORDERS_ADMIN = "/admin/workers/order/"
WORKERS_ADMIN = "/admin/workers/worker/"


def kitchen_staff(shop: str, username: str = "cook") -> Client:
    return logged_in(base.kitchen_staff(shop, username))


def operator(username: str = "olga") -> tuple[Client, User]:
    user = base.operator(username)
    return logged_in(user), user


def admin_action(browser: Client, changelist: str, action: str, objects: list[Any]) -> int:
    response = browser.post(changelist, {"action": action, "_selected_action": [str(o.pk) for o in objects]})
    return response.status_code


@pytest.mark.django_db
def test_the_migration_made_each_role_with_exactly_its_permissions(menu: None) -> None:
    for role, permissions in roles.ROLES.items():
        granted = Group.objects.get(name=role).permissions.values_list("content_type__app_label", "codename")
        assert sorted(granted) == sorted(permissions), role


# --- Kitchen staff -------------------------------------------------------------------


@pytest.mark.django_db
def test_kitchen_staff_work_their_own_shops_display_and_nothing_else(menu: None) -> None:
    make_worker("shop-1")
    make_worker("shop-2")
    cook = kitchen_staff("shop-1")

    page = cook.get("/kitchen/shop-1/")
    assert page.status_code == 200
    assert "Operations board" not in page.content.decode()
    assert cook.get("/kitchen/shop-2/").status_code == 403
    assert cook.get("/board/").status_code == 302  # to the login page: not staff
    assert cook.get(ORDERS_ADMIN).status_code == 302  # admin's login page
    assert cook.get("/api/orders/").json()["results"] == []


@pytest.mark.django_db
def test_kitchen_staff_rush_their_shops_orders_only_and_are_named_on_the_timeline(menu: None) -> None:
    shop_1, shop_2 = make_worker("shop-1"), make_worker("shop-2")
    theirs = make_order(area=area_owned_by(shop_1))
    elsewhere = make_order(area=area_owned_by(shop_2))
    cook = kitchen_staff("shop-1")

    assert cook.post(f"/kitchen/shop-1/rush/{theirs.pk}/").status_code == 302
    assert cook.post(f"/kitchen/shop-1/rush/{elsewhere.pk}/").status_code == 404
    assert cook.post(f"/kitchen/shop-2/rush/{elsewhere.pk}/").status_code == 403

    assert Order.objects.get(pk=theirs.pk).priority == Order.MAX_PRIORITY
    assert Order.objects.get(pk=elsewhere.pk).priority == 0
    rushed = OrderEvent.objects.get(order=theirs, kind="priority-raised")
    assert rushed.actor is not None and rushed.actor.username == "cook"


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_kitchen_staff_get_their_displays_stream_but_not_the_board(live_menu: None) -> None:
    @database_sync_to_async
    def cookie() -> tuple[bytes, bytes]:
        make_worker("shop-1")
        browser = kitchen_staff("shop-1")
        return (b"cookie", f"sessionid={browser.cookies['sessionid'].value}".encode())

    headers = [(b"origin", b"http://localhost"), await cookie()]
    try:
        for path, expected in (("/ws/kitchen/shop-1/", True), ("/ws/kitchen/shop-2/", False), ("/ws/board/", False)):
            communicator = WebsocketCommunicator(application, path, headers=headers)
            connected, _ = await communicator.connect(timeout=5)
            assert connected is expected, path
            if connected:
                await database_sync_to_async(make_order)()
                nudge = await communicator.receive_json_from(timeout=5)
                # A nudge to refresh, without the event: another shop's orders are not in it.
                assert (set(nudge), nudge["type"], nudge["gone"]) == ({"type", "id", "gone"}, "changed", [])
            await communicator.disconnect()
    finally:
        await stop_relay()
        await database_sync_to_async(connections.close_all)()


# --- Operators -----------------------------------------------------------------------


@pytest.mark.django_db
def test_every_operator_action_is_on_the_timeline_with_the_operator(menu: None) -> None:
    browser, olga = operator()
    shop = make_worker("shop-1")
    baking, stuck = make_order(area=area_owned_by(shop)), make_order(area=area_owned_by(shop))
    queue.claim(shop.pk, 10)
    queued, rushed = make_order(), make_order()

    assert admin_action(browser, ORDERS_ADMIN, "cancel_orders", [queued]) == 302
    assert admin_action(browser, ORDERS_ADMIN, "requeue_orders", [stuck]) == 302
    assert admin_action(browser, ORDERS_ADMIN, "raise_priority_of_orders", [rushed]) == 302
    assert admin_action(browser, WORKERS_ADMIN, "declare_workers_dead", [shop]) == 302

    by_olga = OrderEvent.objects.filter(actor=olga)
    assert sorted(by_olga.values_list("order_id", "kind")) == sorted(
        [
            (queued.pk, "cancelled"),
            (stuck.pk, "retried"),
            (rushed.pk, "priority-raised"),
            (baking.pk, "reassigned"),
        ]
    )
    # The customer reads that an operator did it, not who.
    assert all("olga" not in e.message for e in by_olga)


@pytest.mark.django_db
def test_staff_without_the_operator_role_cannot_act_on_orders_or_kitchens(menu: None) -> None:
    order = make_order()
    shop = make_worker("shop-1")
    browser = Client()
    browser.force_login(User.objects.create_user("viewer", is_staff=True))

    admin_action(browser, ORDERS_ADMIN, "cancel_orders", [order])
    admin_action(browser, WORKERS_ADMIN, "declare_workers_dead", [shop])

    assert Order.objects.get(pk=order.pk).status == Order.Status.QUEUED
    shop.refresh_from_db()
    assert shop.status == "alive"
    assert browser.post(f"/orders/{order.pk}/cancel/").status_code == 403


@pytest.mark.django_db
def test_the_api_shows_who_acted_to_staff_only(menu: None) -> None:
    integrator = in_role(User.objects.create_user("ivy"), roles.INTEGRATORS)
    order = make_order(placed_by=integrator)
    _browser, olga = operator()
    queue.cancel(order.pk, "cancelled by an operator", actor_id=olga.pk)
    as_integrator, as_operator = APIClient(), APIClient()
    as_integrator.force_authenticate(integrator)
    as_operator.force_authenticate(olga)

    def actors(client: APIClient) -> list[str | None]:
        return [e["actor"] for e in client.get(f"/api/orders/{order.pk}/").json()["events"]]

    assert actors(as_operator) == [None, "olga"]
    assert actors(as_integrator) == [None, None]


# --- Integrators ---------------------------------------------------------------------


@pytest.mark.django_db
def test_placing_orders_through_the_api_needs_the_integrator_role(menu: None) -> None:
    user = User.objects.create_user("stranger")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    body = json.dumps(order_data())

    refused = client.post("/api/orders/", data=body, content_type="application/json")
    assert refused.status_code == 403
    assert refused.json() == {"detail": "Placing orders needs the integrators role.", "code": "permission_denied"}
    assert Order.objects.count() == 0

    in_role(user, roles.INTEGRATORS)
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get(user=user).key}")
    assert client.post("/api/orders/", data=body, content_type="application/json").status_code == 201


def test_a_role_taken_away_or_given_counts_at_the_next_request(menu: None) -> None:
    user = in_role(User.objects.create_user("contractor"), roles.INTEGRATORS)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    body = json.dumps(order_data())
    assert client.post("/api/orders/", data=body, content_type="application/json").status_code == 201

    user.groups.clear()
    assert client.post("/api/orders/", data=body, content_type="application/json").status_code == 403

    # Given directly, and by a group whose permissions change (not by joining one).
    user.user_permissions.add(Permission.objects.get(codename="add_order"))
    assert client.post("/api/orders/", data=body, content_type="application/json").status_code == 201
    user.user_permissions.clear()
    group = Group.objects.create(name="partners")
    user.groups.add(group)
    assert client.post("/api/orders/", data=body, content_type="application/json").status_code == 403
    group.permissions.add(Permission.objects.get(codename="add_order"))
    assert client.post("/api/orders/", data=body, content_type="application/json").status_code == 201
    group.permissions.clear()
    assert client.post("/api/orders/", data=body, content_type="application/json").status_code == 403
    assert Order.objects.count() == 3


def test_a_permission_made_after_the_process_named_the_others_is_found_by_its_name(menu: None) -> None:
    user = in_role(User.objects.create_user("partner"), roles.INTEGRATORS)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    assert (
        client.post("/api/orders/", data=json.dumps(order_data()), content_type="application/json").status_code == 201
    )
    # A new permission (a new model's, say) given after this process named every permission it knew.
    made = Permission.objects.create(
        codename="taste_order",
        name="Can taste order",
        content_type=Permission.objects.get(codename="add_order").content_type,
    )
    user.user_permissions.add(made)
    key = Token.objects.get(user=user).key

    found, _token = TokenAuthentication().authenticate_credentials(key)

    assert found.has_perm("workers.taste_order") and found.has_perm(roles.PLACE_ORDERS)


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_a_kitchens_stream_names_its_own_orders_that_left_it_and_no_other_shops(live_menu: None) -> None:
    @database_sync_to_async
    def kitchens() -> tuple[bytes, bytes]:
        mine, theirs = make_worker("shop-1"), make_worker("shop-2")
        for worker in (mine, theirs):
            make_order(area=area_owned_by(worker))
            queue.claim(worker.pk, 1)
        browser = kitchen_staff("shop-1")
        return (b"cookie", f"sessionid={browser.cookies['sessionid'].value}".encode())

    @database_sync_to_async
    def cancel_both() -> str:
        held = list(Order.objects.filter(status="preparing").select_related("worker"))
        for order in held:
            queue.cancel(order.pk, "cancelled by an operator", if_held=lambda _order: True)
        return next(str(o.pk) for o in held if o.worker is not None and o.worker.name == "shop-1")

    headers = [(b"origin", b"http://localhost"), await kitchens()]
    communicator = WebsocketCommunicator(application, "/ws/kitchen/shop-1/", headers=headers)
    try:
        assert (await communicator.connect(timeout=5))[0]
        mine = await cancel_both()
        gone: list[str] = []
        while not gone:
            gone += (await communicator.receive_json_from(timeout=5))["gone"]
        while not await communicator.receive_nothing(timeout=0.5):  # whatever else the relay sends
            gone += (await communicator.receive_json_from(timeout=5))["gone"]
        assert gone == [mine]  # shop-2's cancelled order is not named to shop-1's staff
        await communicator.disconnect()
    finally:
        await stop_relay()
        await database_sync_to_async(connections.close_all)()
