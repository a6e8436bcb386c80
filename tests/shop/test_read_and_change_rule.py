"""One rule for who reads and who changes (SPEC §9), the same on the API, the
pages, the board's WebSocket and the admin: permissions decide, `is_staff`
alone grants nothing but the admin's door."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from django.test import Client
from rest_framework.test import APIClient

from orders import roles
from pizzaqueue.asgi import application
from tests.base import in_role
from tests.factory import make_order
from workers.models import Order

pytestmark = pytest.mark.django_db


def test_an_operator_without_staff_status_reads_the_order_it_just_cancelled(menu: None) -> None:
    operator = APIClient()
    operator.force_authenticate(in_role(User.objects.create_user("omar"), roles.OPERATORS))
    order = make_order()

    response = operator.post(f"/api/orders/{order.pk}/cancel/")

    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert operator.get(f"/api/orders/{order.pk}/").status_code == 200
    assert Order.objects.get(pk=order.pk).status == Order.Status.CANCELLED


def test_staff_status_without_a_role_reads_no_one_elses_order(menu: None) -> None:
    bare = User.objects.create_user("stan", is_staff=True)
    api = APIClient()
    api.force_authenticate(bare)
    order = make_order()

    assert api.get(f"/api/orders/{order.pk}/").status_code == 404
    assert api.get("/api/orders/").json()["results"] == []
    browser = Client()
    browser.force_login(bare)
    assert browser.get("/board/").status_code == 302  # to the login page, as for anyone without the role


def test_an_operator_without_staff_status_opens_the_board(menu: None) -> None:
    browser = Client()
    browser.force_login(in_role(User.objects.create_user("omar"), roles.OPERATORS))

    assert browser.get("/board/").status_code == 200


@pytest.mark.django_db(transaction=True)
def test_the_boards_stream_follows_the_same_rule(live_menu: None) -> None:
    def board_opens(user: User) -> bool:
        browser = Client()
        browser.force_login(user)
        cookie = f"sessionid={browser.cookies['sessionid'].value}".encode()

        async def connect() -> bool:
            communicator = WebsocketCommunicator(
                application, "/ws/board/", headers=[(b"origin", b"http://localhost"), (b"cookie", cookie)]
            )
            connected, _subprotocol = await communicator.connect(timeout=5)
            await communicator.disconnect()
            return connected

        return async_to_sync(connect)()

    assert board_opens(User.objects.create_user("stan", is_staff=True)) is False
    assert board_opens(in_role(User.objects.create_user("omar"), roles.OPERATORS)) is True


def test_an_operator_without_staff_status_uses_the_admin_and_staff_status_alone_sees_no_orders(menu: None) -> None:
    order = make_order()
    operator = Client()
    operator.force_login(in_role(User.objects.create_user("omar"), roles.OPERATORS))
    bare = Client()
    bare.force_login(User.objects.create_user("stan", is_staff=True))

    assert operator.get("/admin/workers/order/").status_code == 200
    assert str(order.pk) in operator.get(f"/admin/workers/order/{order.pk}/change/").content.decode()
    assert bare.get("/admin/workers/order/").status_code == 403
