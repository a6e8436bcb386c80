"""The WebSocket consumers and the relay, in process, with WebsocketCommunicator."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from django.test import Client
from django.test.utils import override_settings
from rest_framework.authtoken.models import Token

from orders import roles
from orders.timeline import event_message
from pizzaqueue.asgi import application
from tests.base import in_role, kitchen_staff, logged_in, make_worker
from tests.conftest import forget_streams
from tests.factory import make_order
from workers import queue
from workers.models import OrderEvent
from workers.relay import (
    BOARD_GROUP,
    Read,
    Relay,
    Snapshot,
    order_group,
    stop_relay,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("live_menu")]

ORIGIN = (b"origin", b"http://localhost")


@pytest_asyncio.fixture(autouse=True)
async def fresh_relay() -> AsyncIterator[None]:
    yield
    await forget_streams()


async def connect(path: str, *headers: tuple[bytes, bytes]) -> tuple[WebsocketCommunicator, bool]:
    communicator = WebsocketCommunicator(application, path, headers=list(headers or [ORIGIN]))
    connected, _subprotocol = await communicator.connect(timeout=5)
    return communicator, connected


@database_sync_to_async
def session_cookie(*, staff: bool) -> tuple[bytes, bytes]:
    user = User.objects.create_user(f"user-{staff}", is_staff=staff)
    if staff:
        in_role(user, roles.OPERATORS)  # reading every order is the operators' permission
    client = Client()
    client.force_login(user)
    return (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())


@database_sync_to_async
def place(**kw: Any) -> Any:
    return make_order(**kw)


@database_sync_to_async
def rush(order_id: Any, priority: int) -> None:
    queue.raise_priority(order_id, priority)


@database_sync_to_async
def event_ids(order_id: Any) -> list[int]:
    return list(OrderEvent.objects.filter(order_id=order_id).order_by("id").values_list("id", flat=True))


async def test_a_new_client_gets_the_whole_timeline_then_live_events_through_the_relay() -> None:
    order = await place()
    communicator, connected = await connect(f"/ws/orders/{order.id}/")
    assert connected is True
    placed = await communicator.receive_json_from(timeout=5)
    assert (placed["kind"], placed["order"], placed["status"]) == ("placed", str(order.id), "queued")

    await rush(order.id, 7)  # committed by this process; the relay finds it in the table
    rushed = await communicator.receive_json_from(timeout=5)
    assert rushed["kind"] == "priority-raised"
    assert rushed["text"] == "Rushed: your order moves up the queue."
    assert [placed["id"], rushed["id"]] == await event_ids(order.id)
    assert await communicator.receive_nothing(timeout=0.3) is True
    await communicator.disconnect()


async def test_a_reconnecting_client_gets_only_what_it_missed() -> None:
    order = await place()
    await rush(order.id, 5)
    await rush(order.id, 6)
    first, second, third = await event_ids(order.id)

    communicator, connected = await connect(f"/ws/orders/{order.id}/?after={first}")
    assert connected is True
    assert (await communicator.receive_json_from(timeout=5))["id"] == second
    assert (await communicator.receive_json_from(timeout=5))["id"] == third
    await rush(order.id, 9)
    live = await communicator.receive_json_from(timeout=5)
    assert live["id"] > third
    assert live["kind"] == "priority-raised"
    assert await communicator.receive_nothing(timeout=0.3) is True
    await communicator.disconnect()


async def test_an_event_both_replayed_and_published_live_is_sent_once() -> None:
    order = await place()
    communicator, _connected = await connect(f"/ws/orders/{order.id}/")
    replayed = await communicator.receive_json_from(timeout=5)
    # The race the consumer closes: the relay publishes an event the replay already sent
    # (it was committed between joining the group and reading the table).
    await get_channel_layer().group_send(order_group(order.id), {"type": "order.events", "events": [replayed]})
    await rush(order.id, 3)
    following = await communicator.receive_json_from(timeout=5)
    assert following["kind"] == "priority-raised"
    assert await communicator.receive_nothing(timeout=0.3) is True
    await communicator.disconnect()


async def test_an_unknown_order_or_a_malformed_last_id_is_refused() -> None:
    order = await place()
    _communicator, connected = await connect("/ws/orders/8d4c0f4e-9a47-4a8e-9d5c-0c1b7f3f0e55/")
    assert connected is False
    _communicator, connected = await connect(f"/ws/orders/{order.id}/?after=abc")
    assert connected is False


async def test_a_connection_from_another_site_is_refused() -> None:
    order = await place()
    _communicator, connected = await connect(f"/ws/orders/{order.id}/", (b"origin", b"http://evil.example"))
    assert connected is False


async def test_the_board_refuses_anonymous_and_non_staff_users() -> None:
    _communicator, connected = await connect("/ws/board/")
    assert connected is False
    _communicator, connected = await connect("/ws/board/", ORIGIN, await session_cookie(staff=False))
    assert connected is False


async def test_the_board_streams_every_orders_events_to_staff() -> None:
    communicator, connected = await connect("/ws/board/", ORIGIN, await session_cookie(staff=True))
    assert connected is True
    first, second = await place(), await place()
    received = [await communicator.receive_json_from(timeout=5) for _ in range(2)]
    assert [(m["kind"], m["order"]) for m in received] == [("placed", str(first.id)), ("placed", str(second.id))]
    assert received[0]["id"] < received[1]["id"]
    await communicator.disconnect()


async def test_the_board_reads_a_dropped_message_back_from_the_table() -> None:
    communicator, _connected = await connect("/ws/board/", ORIGIN, await session_cookie(staff=True))
    await stop_relay()  # from here on only this test publishes
    order = await place()
    await rush(order.id, 4)
    await rush(order.id, 5)
    placed, rushed, rushed_again = await event_ids(order.id)
    last = await database_sync_to_async(lambda: event_message(OrderEvent.objects.get(pk=rushed_again)))()
    # The message covering (watermark, rushed] never arrived (a full channel drops it):
    # the next one says it follows `rushed`, so the consumer reads the gap from the table.
    await get_channel_layer().group_send(
        BOARD_GROUP, {"type": "board.events", "after": rushed, "upto": rushed_again, "events": [last]}
    )
    ids = [(await communicator.receive_json_from(timeout=5))["id"] for _ in range(3)]
    assert ids == [placed, rushed, rushed_again]
    assert await communicator.receive_nothing(timeout=0.2) is True
    await communicator.disconnect()


def event(id_: int) -> OrderEvent:
    return OrderEvent(id=id_, kind=OrderEvent.Kind.PLACED)


@override_settings(PIZZAQUEUE_RELAY_GAP_TIMEOUT=10.0)
async def test_the_relay_holds_events_behind_a_missing_id_until_its_transaction_ends() -> None:
    relay = Relay(asyncio.get_running_loop(), event_message)
    relay.watermark = 10
    try:
        # Id 11's transaction is still open (xid 100 is running); 12 committed first.
        assert relay.advance(Read([event(12)], Snapshot(xmin=100, xmax=105)), now=0.0) == []
        assert relay.advance(Read([event(12)], Snapshot(xmin=100, xmax=105)), now=0.5) == []
        assert relay.watermark == 10
        # It commits: both go out, in id order.
        assert [e.id for e in relay.advance(Read([event(11), event(12)], Snapshot(100, 106)), now=0.6)] == [11, 12]
        assert relay.watermark == 12

        # Id 13 rolled back: once every transaction running when the gap was seen has
        # ended (xmin passed the xmax noted after the grace), 14 goes out without it.
        assert relay.advance(Read([event(14)], Snapshot(xmin=200, xmax=210)), now=1.0) == []
        assert relay.advance(Read([event(14)], Snapshot(xmin=205, xmax=211)), now=1.2) == []
        assert [e.id for e in relay.advance(Read([event(14)], Snapshot(xmin=211, xmax=212)), now=1.3)] == [14]

        # SQLite commits one writer at a time, in id order: a missing id is a deleted row.
        assert [e.id for e in relay.advance(Read([event(16)], None), now=2.0)] == [16]
    finally:
        await relay.stop()


@override_settings(PIZZAQUEUE_RELAY_GAP_TIMEOUT=1.0)
async def test_the_relay_gives_up_on_a_missing_id_after_the_gap_timeout() -> None:
    relay = Relay(asyncio.get_running_loop(), event_message)
    relay.watermark = 10
    try:
        assert relay.advance(Read([event(12)], Snapshot(xmin=100, xmax=105)), now=0.0) == []
        assert relay.advance(Read([event(12)], Snapshot(xmin=100, xmax=105)), now=0.9) == []
        assert [e.id for e in relay.advance(Read([event(12)], Snapshot(xmin=100, xmax=105)), now=1.0)] == [12]
    finally:
        await relay.stop()


@database_sync_to_async
def token_of(username: str) -> tuple[Any, bytes]:
    user = User.objects.create_user(username)
    return user, (b"authorization", f"Token {Token.objects.create(user=user).key}".encode())


async def test_a_stream_with_an_integrators_token_follows_only_that_integrators_orders() -> None:
    alice, alices_token = await token_of("alice")
    bob, _bobs_token = await token_of("bob")
    alices, bobs, nobodys = await place(placed_by=alice), await place(placed_by=bob), await place()

    for order, expected in ((alices, True), (bobs, False), (nobodys, False)):
        communicator, connected = await connect(f"/ws/orders/{order.id}/", ORIGIN, alices_token)
        assert connected is expected, order
        await communicator.disconnect()
    communicator, connected = await connect(f"/ws/orders/{bobs.id}/", ORIGIN, (b"authorization", b"Token nope"))
    assert connected is False
    # Without a token the link itself is the capability, as on the tracking page.
    communicator, connected = await connect(f"/ws/orders/{bobs.id}/")
    assert connected is True
    await communicator.disconnect()


# --- Limits ---------------------------------------------------------------------------


async def staff_and_kitchen_cookies() -> tuple[tuple[bytes, bytes], tuple[bytes, bytes]]:
    staff = await session_cookie(staff=True)

    @database_sync_to_async
    def cook() -> tuple[bytes, bytes]:
        client = logged_in(kitchen_staff("shop-1"))
        return (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())

    return staff, await cook()


async def test_every_stream_checks_the_origin() -> None:
    order = await place()
    staff, cook = await staff_and_kitchen_cookies()
    evil = (b"origin", b"http://evil.example")
    for path, cookie in ((f"/ws/orders/{order.id}/", staff), ("/ws/board/", staff), ("/ws/kitchen/shop-1/", cook)):
        _communicator, connected = await connect(path, ORIGIN, cookie)
        assert connected is True, path
        await _communicator.disconnect()
        _communicator, connected = await connect(path, evil, cookie)
        assert connected is False, path


@override_settings(PIZZAQUEUE_WS_CONNECT_BURST=2, PIZZAQUEUE_WS_CONNECT_RATE=0.01)
async def test_a_client_address_opens_a_bounded_burst_of_streams() -> None:
    orders = [await place() for _ in range(3)]
    first, ok_1 = await connect(f"/ws/orders/{orders[0].id}/")
    second, ok_2 = await connect(f"/ws/orders/{orders[1].id}/")
    _third, ok_3 = await connect(f"/ws/orders/{orders[2].id}/")
    assert (ok_1, ok_2, ok_3) == (True, True, False)
    # Closing streams gives nothing back: the bucket refills with time, not with churn.
    await first.disconnect()
    _again, ok_again = await connect(f"/ws/orders/{orders[2].id}/")
    assert ok_again is False
    await second.disconnect()


@override_settings(
    PIZZAQUEUE_WS_CONNECT_BURST=2, PIZZAQUEUE_WS_CONNECT_RATE=0.01, PIZZAQUEUE_TRUSTED_PROXIES=["10.0.0.1"]
)
async def test_clients_behind_a_trusted_proxy_get_a_connection_rate_each_by_its_forwarded_for() -> None:
    order = await place()

    async def through_proxy(proxy: str, forwarded_for: str) -> bool:
        communicator = WebsocketCommunicator(
            application, f"/ws/orders/{order.id}/", headers=[ORIGIN, (b"x-forwarded-for", forwarded_for.encode())]
        )
        communicator.scope["client"] = (proxy, 50000)
        connected, _ = await communicator.connect(timeout=5)
        opened.append(communicator)
        return connected

    opened: list[WebsocketCommunicator] = []
    # Two customers behind the load balancer: two each.
    assert [await through_proxy("10.0.0.1", f"192.0.2.{n % 2}") for n in range(4)] == [True] * 4
    assert await through_proxy("10.0.0.1", "192.0.2.0") is False
    # Anyone else's header is not believed: a new address per connection buys nothing.
    assert [await through_proxy("198.51.100.7", f"192.0.2.{n + 10}") for n in range(3)] == [True, True, False]
    for communicator in opened:
        await communicator.disconnect()


@override_settings(PIZZAQUEUE_WS_PER_ORDER=2)
async def test_an_order_has_a_bounded_number_of_streams() -> None:
    order, other = await place(), await place()
    opened = [await connect(f"/ws/orders/{order.id}/") for _ in range(3)]
    assert [connected for _c, connected in opened] == [True, True, False]
    elsewhere, connected = await connect(f"/ws/orders/{other.id}/")
    assert connected is True
    for communicator, _connected in [*opened, (elsewhere, True)]:
        await communicator.disconnect()


@override_settings(PIZZAQUEUE_WS_MAX_CLIENT_MESSAGES=3)
async def test_a_client_that_keeps_talking_is_cut_off() -> None:
    order = await place()
    communicator, _connected = await connect(f"/ws/orders/{order.id}/")
    await communicator.receive_json_from(timeout=5)  # placed
    for _ in range(3):
        await communicator.send_to(text_data="{}")
    assert await communicator.receive_nothing(timeout=0.3) is True
    await communicator.send_to(text_data="{}")
    assert await communicator.receive_output(timeout=5) == {"type": "websocket.close", "code": 1008}


async def test_a_big_message_from_a_client_closes_its_stream() -> None:
    order = await place()
    communicator, _connected = await connect(f"/ws/orders/{order.id}/")
    await communicator.receive_json_from(timeout=5)
    await communicator.send_to(text_data="x" * 5000)
    assert await communicator.receive_output(timeout=5) == {"type": "websocket.close", "code": 1009}


@override_settings(PIZZAQUEUE_WS_REPLAY_LIMIT=2)
async def test_a_client_too_far_behind_is_told_to_reload_instead_of_replayed() -> None:
    order = await place()
    for priority in (3, 5, 7):
        await rush(order.id, priority)
    ids = await event_ids(order.id)

    communicator, _connected = await connect(f"/ws/orders/{order.id}/")
    assert await communicator.receive_json_from(timeout=5) == {"type": "reset", "id": ids[-1]}
    await communicator.disconnect()
    communicator, _connected = await connect(f"/ws/orders/{order.id}/?after={ids[1]}")
    assert [(await communicator.receive_json_from(timeout=5))["id"] for _ in range(2)] == ids[2:]
    await communicator.disconnect()


@override_settings(PIZZAQUEUE_WS_IDLE_TIMEOUT=0.5)
async def test_an_idle_stream_is_closed_and_traffic_keeps_one_open() -> None:
    order = await place()
    communicator, _connected = await connect(f"/ws/orders/{order.id}/")
    await communicator.receive_json_from(timeout=5)
    for priority in (3, 5):  # each event is traffic: the stream stays open past the timeout
        await asyncio.sleep(0.3)
        await rush(order.id, priority)
        await communicator.receive_json_from(timeout=5)
    assert await communicator.receive_output(timeout=5) == {"type": "websocket.close", "code": 4000}


@database_sync_to_async
def a_lost_lease(order_id: Any) -> None:
    """A kitchen claims the order, an operator takes it back, the kitchen's late stage report is refused."""
    worker = make_worker("shop-1")
    claim = next(c for c in queue.claim(worker.pk, 10) if c.order.pk == order_id)
    queue.requeue(order_id)
    assert queue.report_stage(order_id, claim.token, "oven", worker_id=worker.pk) is False


async def test_a_customer_is_not_sent_a_kitchens_lost_lease_live_or_replayed() -> None:
    order = await place()
    staff = await session_cookie(staff=True)
    customer, _ = await connect(f"/ws/orders/{order.id}/")
    board, _ = await connect("/ws/board/?after=0", ORIGIN, staff)
    await a_lost_lease(order.id)
    kinds = ["placed", "claimed", "retried", "lease-lost"]

    assert [(await board.receive_json_from(timeout=5))["kind"] for _ in kinds] == kinds
    live = [await customer.receive_json_from(timeout=5) for _ in kinds[:-1]]
    assert [m["kind"] for m in live] == kinds[:-1]
    assert await customer.receive_nothing(timeout=0.5) is True
    assert all("message" not in m for m in live)  # the customer's words only, never a kitchen's
    replayed, _ = await connect(f"/ws/orders/{order.id}/")
    assert [(await replayed.receive_json_from(timeout=5))["kind"] for _ in kinds[:-1]] == kinds[:-1]
    assert await replayed.receive_nothing(timeout=0.3) is True
    for communicator in (customer, board, replayed):
        await communicator.disconnect()
