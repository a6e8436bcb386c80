"""WebSocket consumers: one order's events, and every event for the operations board.

Both follow one pattern, which leaves no gap and sends nothing twice:

1. join the group, so everything the relay publishes from now on is queued here;
2. read the relay's watermark W: every event up to W was published before the
   join or will be found in the table, and everything after W comes live;
3. replay from the table the events after the client's last id, up to W;
4. pass on live events only past the last id sent, which drops the ones the
   replay already covered (published between the join and the read of W).

Clients give their last id as `?after=<id>` when they reconnect.
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from rest_framework.exceptions import AuthenticationFailed

from orders import roles
from orders.authentication import TokenAuthentication
from orders.timeline import event_message
from workers.models import Order, OrderEvent
from workers.relay import BOARD_GROUP, ensure_relay, order_group

# A board client further behind than this reloads the page instead of replaying.
BOARD_REPLAY_LIMIT = 200


def after_id(scope: dict[str, Any]) -> int | None:
    """The client's last event id from `?after=`; None when absent; -1 when malformed."""
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("after")
    if not values:
        return None
    value = values[-1]
    return int(value) if value.isdigit() and len(value) < 19 else -1


def presented_token(scope: dict[str, Any]) -> str | None:
    """The API token of an `Authorization: Token <key>` header (an integrator's program); None without one."""
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, key = value.decode("latin-1").partition(" ")
            return key.strip() if scheme.lower() == "token" else ""
    return None


@database_sync_to_async
def order_exists(order_id: uuid.UUID, token: str | None) -> bool:
    """Whether the stream may open: anyone holding the order's id may follow it, but a
    connection that presents an API token sees only that integrator's own orders."""
    orders = Order.objects.all()
    if token is not None:
        try:
            user, _token = TokenAuthentication().authenticate_credentials(token)
        except AuthenticationFailed:
            return False
        orders = Order.objects.visible_to(user)
    return orders.filter(pk=order_id).exists()


@database_sync_to_async
def may_work_kitchen(user: Any, shop: str) -> bool:
    return roles.works_kitchen(user, shop)


@database_sync_to_async
def order_events(order_id: uuid.UUID, after: int, upto: int) -> list[dict[str, Any]]:
    events = OrderEvent.objects.filter(order_id=order_id, id__gt=after, id__lte=upto).select_related("worker")
    return [event_message(e) for e in events.order_by("id")]


@database_sync_to_async
def events_between(after: int, upto: int, limit: int) -> list[dict[str, Any]] | None:
    """Every event in (after, upto], or None when there are more than `limit`."""
    events = list(
        OrderEvent.objects.filter(id__gt=after, id__lte=upto).select_related("worker").order_by("id")[: limit + 1]
    )
    if len(events) > limit:
        return None
    return [event_message(e) for e in events]


class OrderConsumer(AsyncJsonWebsocketConsumer):
    """`/ws/orders/<id>/`: anyone holding the order's id (a UUID, the customer's
    capability) may follow it; an integrator's token, if presented, only its own."""

    group: str | None = None

    async def connect(self) -> None:
        order_id = self.scope["url_route"]["kwargs"]["order_id"]
        after = after_id(self.scope)
        if after == -1 or not await order_exists(order_id, presented_token(self.scope)):
            await self.close()
            return
        relay = await ensure_relay(event_message)
        self.group = order_group(order_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        upto = relay.watermark
        after = after or 0
        for message in await order_events(order_id, after, upto):
            await self.send_json(message)
        self.last_id = max(after, upto)

    async def disconnect(self, code: int) -> None:
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """Clients only listen."""

    async def order_events(self, message: dict[str, Any]) -> None:
        for event in message["events"]:
            if event["id"] > self.last_id:
                await self.send_json(event)
                self.last_id = event["id"]


class BoardConsumer(AsyncJsonWebsocketConsumer):
    """`/ws/board/`: every event, for staff (the board and the kitchen displays)."""

    joined = False

    async def connect(self) -> None:
        user = self.scope.get("user")
        after = after_id(self.scope)
        if user is None or not (user.is_active and user.is_staff) or after == -1:
            await self.close()
            return
        relay = await ensure_relay(event_message)
        await self.channel_layer.group_add(BOARD_GROUP, self.channel_name)
        self.joined = True
        await self.accept()
        # `upto` follows the relay's messages; `last_id` is what this client has.
        self.upto = relay.watermark
        self.last_id = self.upto if after is None else after
        await self.catch_up(self.upto)

    async def disconnect(self, code: int) -> None:
        if self.joined:
            await self.channel_layer.group_discard(BOARD_GROUP, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """Clients only listen."""

    async def catch_up(self, upto: int) -> None:
        """Send what the client is missing up to `upto` from the table, or tell it to reload."""
        if upto <= self.last_id:
            return
        messages = await events_between(self.last_id, upto, BOARD_REPLAY_LIMIT)
        if messages is None:
            await self.send_json({"type": "reset", "id": upto})
        else:
            for message in messages:
                await self.send_json(message)
        self.last_id = upto

    async def board_events(self, message: dict[str, Any]) -> None:
        if message["upto"] <= self.upto:
            return  # published before this client's replay, which covered it
        if message["after"] > self.upto:
            # A message in between was dropped (the channel was full): the table has it.
            await self.catch_up(message["after"])
        for event in message["events"]:
            if event["id"] > self.last_id:
                await self.send_json(event)
                self.last_id = event["id"]
        self.upto = message["upto"]


class KitchenConsumer(AsyncJsonWebsocketConsumer):
    """`/ws/kitchen/<shop>/`: a nudge whenever something changed, for a kitchen display.

    The display reloads its tickets through its own page, which shows the
    shop's orders only; the nudge carries no event's content, so the stream
    tells kitchen staff nothing about other shops' orders.
    """

    joined = False

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not await may_work_kitchen(user, self.scope["url_route"]["kwargs"]["name"]):
            await self.close()
            return
        await ensure_relay(event_message)
        await self.channel_layer.group_add(BOARD_GROUP, self.channel_name)
        self.joined = True
        await self.accept()

    async def disconnect(self, code: int) -> None:
        if self.joined:
            await self.channel_layer.group_discard(BOARD_GROUP, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """Clients only listen."""

    async def board_events(self, message: dict[str, Any]) -> None:
        await self.send_json({"type": "changed", "id": message["upto"]})
