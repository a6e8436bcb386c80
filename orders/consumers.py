"""WebSocket consumers: one order's events, and every event for the operations board.

Both follow one pattern, which leaves no gap and sends nothing twice:

1. join the group, so everything the relay publishes from now on is queued here;
2. read the relay's watermark W: every event up to W was published before the
   join or will be found in the table, and everything after W comes live;
3. replay from the table the events after the client's last id, up to W;
4. pass on live events only past the last id sent, which drops the ones the
   replay already covered (published between the join and the read of W).

Clients give their last id as `?after=<id>` when they reconnect.

Every stream is bounded (`Stream`), in this process: streams in all, streams
per browser session and per order, new streams per client address per
second (a token bucket, so a whole office behind one address may open its
pages at once, but one client cannot churn connections), messages a client
may send (clients only listen), events replayed on a reconnect, and time
without traffic before it is closed (docs/security.md, with the figures).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections import Counter, OrderedDict
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from rest_framework.exceptions import AuthenticationFailed

from orders import roles
from orders.authentication import TokenAuthentication
from orders.clients import scope_client
from orders.timeline import PRIVATE_KINDS, customer_message, event_message
from workers.models import Order, OrderEvent, reads_every_order
from workers.relay import BOARD_GROUP, ensure_relay, order_group

logger = logging.getLogger(__name__)

# Close codes (RFC 6455): the client broke the rules; the stream was idle.
POLICY_VIOLATION = 1008
TOO_BIG = 1009
IDLE = 4000

# Streams open in this process: by browser session (a digest of its cookie), by order, in all.
OPEN_BY_SESSION: Counter[str] = Counter()
OPEN_BY_ORDER: Counter[str] = Counter()
OPEN_TOTAL = Counter[str]()


class ConnectRate:
    """New streams per client address in this process, as a token bucket: up to `burst`
    at once, then `rate` per second. A shop's customers behind one NAT open their
    pages together and stay connected; a client that opens and drops streams in a
    loop is refused after the burst.

    Once more than `MAX_TRACKED` addresses are tracked, those whose bucket has
    refilled are forgotten, then the ones heard from longest ago, so the table
    stays bounded however many addresses call.
    """

    MAX_TRACKED = 10_000

    def __init__(self) -> None:
        self.buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # address -> (tokens, at)

    def allow(self, client: str, rate: float, burst: float, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        tokens, at = self.buckets.pop(client, (burst, now))
        tokens = min(burst, tokens + (now - at) * rate)
        allowed = tokens >= 1
        self.buckets[client] = (tokens - 1 if allowed else tokens, now)
        if len(self.buckets) > self.MAX_TRACKED:
            self._forget_refilled(rate, burst, now)
            while len(self.buckets) > self.MAX_TRACKED:
                self.buckets.popitem(last=False)  # the address heard from longest ago starts afresh
        return allowed

    def _forget_refilled(self, rate: float, burst: float, now: float) -> None:
        for address, (tokens, at) in list(self.buckets.items()):
            if tokens + (now - at) * rate >= burst:
                del self.buckets[address]
            if len(self.buckets) <= self.MAX_TRACKED // 2:
                break

    def clear(self) -> None:
        self.buckets.clear()


CONNECT_RATE = ConnectRate()


def session_digest(scope: dict[str, Any]) -> str:
    """The browser's session, as a digest of its cookie ("" without one): counted, never kept."""
    cookie = (scope.get("cookies") or {}).get(settings.SESSION_COOKIE_NAME, "")
    return hashlib.sha256(cookie.encode()).hexdigest()[:32] if cookie else ""


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
def may_read_every_order(user: Any) -> bool:
    return reads_every_order(user)


@database_sync_to_async
def may_work_kitchen(user: Any, shop: str) -> bool:
    """The shop's people: its kitchen staff (the display) and its drivers (the shelf), or operators."""
    return roles.works_shop(user, shop)


@database_sync_to_async
def order_events(order_id: uuid.UUID, after: int, upto: int, limit: int) -> list[dict[str, Any]] | None:
    """The customer's messages of the order's events in (after, upto], or None when there are more than `limit`."""
    events = list(
        OrderEvent.objects.filter(order_id=order_id, id__gt=after, id__lte=upto)
        .exclude(kind__in=PRIVATE_KINDS)
        .select_related("worker")
        .order_by("id")[: limit + 1]
    )
    if len(events) > limit:
        return None
    return [message for message in map(customer_message, events) if message is not None]


@database_sync_to_async
def events_between(after: int, upto: int, limit: int) -> list[dict[str, Any]] | None:
    """Every event in (after, upto], or None when there are more than `limit`."""
    events = list(
        OrderEvent.objects.filter(id__gt=after, id__lte=upto).select_related("worker").order_by("id")[: limit + 1]
    )
    if len(events) > limit:
        return None
    return [event_message(e) for e in events]


class Stream(AsyncJsonWebsocketConsumer):
    """What every stream shares: its bounds.

    `admit` counts the stream against the process's, its session's and its
    order's bounds and its address's connection rate, or refuses it; the client may send a few small messages (it only listens); a
    stream that carried nothing either way for PIZZAQUEUE_WS_IDLE_TIMEOUT is
    closed, and the page reconnects from its last event id if it is still open.
    """

    counted = False  # counted in OPEN_TOTAL (and its session's and order's) while set
    session = ""
    order_key = ""
    received = 0
    last_activity = 0.0
    idle_timer: asyncio.TimerHandle | None = None

    async def admit(self, order: object = None) -> bool:
        """Count this stream in, and accept it; False (and closed) when a bound is reached."""
        client, order_key = scope_client(self.scope), "" if order is None else str(order)
        session = session_digest(self.scope)
        why = ""
        if OPEN_TOTAL["all"] >= settings.PIZZAQUEUE_WS_MAX_STREAMS:
            why = "this process holds its most streams"
        elif session and OPEN_BY_SESSION[session] >= settings.PIZZAQUEUE_WS_PER_SESSION:
            why = "too many streams of one browser"
        elif order_key and OPEN_BY_ORDER[order_key] >= settings.PIZZAQUEUE_WS_PER_ORDER:
            why = "too many streams of one order"
        elif not CONNECT_RATE.allow(client, settings.PIZZAQUEUE_WS_CONNECT_RATE, settings.PIZZAQUEUE_WS_CONNECT_BURST):
            why = "new streams too fast from one address"
        if why:
            logger.warning("stream refused client=%s order=%s: %s", client, order_key or "-", why)
            await self.close()
            return False
        self.counted, self.session, self.order_key = True, session, order_key
        OPEN_TOTAL["all"] += 1
        if session:
            OPEN_BY_SESSION[session] += 1
        if order_key:
            OPEN_BY_ORDER[order_key] += 1
        await self.accept()
        self.touch()
        return True

    async def disconnect(self, code: int) -> None:
        if self.idle_timer is not None:
            self.idle_timer.cancel()
        if self.counted:
            _release(OPEN_TOTAL, "all")
            self.counted = False
        if self.session:
            _release(OPEN_BY_SESSION, self.session)
            self.session = ""
        if self.order_key:
            _release(OPEN_BY_ORDER, self.order_key)
            self.order_key = ""

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any) -> None:
        """Clients only listen: a few small messages are ignored, more (or a big one) close the stream."""
        self.received += 1
        size = len(text_data.encode()) if text_data is not None else len(bytes_data or b"")
        if size > settings.PIZZAQUEUE_WS_MAX_MESSAGE_BYTES:
            await self.close(code=TOO_BIG)
        elif self.received > settings.PIZZAQUEUE_WS_MAX_CLIENT_MESSAGES:
            await self.close(code=POLICY_VIOLATION)
        else:
            self.touch()

    async def send_json(self, content: Any, close: bool = False) -> None:
        self.touch()
        await super().send_json(content, close)

    def touch(self) -> None:
        """Traffic: the idle clock starts again (checked by a timer in this stream's own loop)."""
        self.last_activity = time.monotonic()
        if self.idle_timer is None:
            self.idle_timer = asyncio.get_running_loop().call_later(
                settings.PIZZAQUEUE_WS_IDLE_TIMEOUT, self._check_idle
            )

    def _check_idle(self) -> None:
        self.idle_timer = None
        left = self.last_activity + settings.PIZZAQUEUE_WS_IDLE_TIMEOUT - time.monotonic()
        if left > 0:
            self.idle_timer = asyncio.get_running_loop().call_later(left, self._check_idle)
        else:
            # Through the consumer's own queue, so the close runs where its other handlers do.
            asyncio.ensure_future(self.channel_layer.send(self.channel_name, {"type": "stream.idle"}))

    async def stream_idle(self, message: dict[str, Any]) -> None:
        await self.close(code=IDLE)


def _release(counter: Counter[str], key: str) -> None:
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]


class OrderConsumer(Stream):
    """`/ws/orders/<id>/`: anyone holding the order's id (a UUID, the customer's
    capability) may follow it; an integrator's token, if presented, only its own."""

    group: str | None = None

    async def connect(self) -> None:
        order_id = self.scope["url_route"]["kwargs"]["order_id"]
        after = after_id(self.scope)
        if after == -1 or not await order_exists(order_id, presented_token(self.scope)):
            await self.close()
            return
        relay = await ensure_relay(event_message, customer_message)
        self.group = order_group(order_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        if not await self.admit(order_id):
            return
        upto = relay.watermark
        after = after or 0
        messages = await order_events(order_id, after, upto, settings.PIZZAQUEUE_WS_REPLAY_LIMIT)
        if messages is None:
            await self.send_json({"type": "reset", "id": upto})  # too far behind: the page reloads
        else:
            for message in messages:
                await self.send_json(message)
        self.last_id = max(after, upto)

    async def disconnect(self, code: int) -> None:
        await super().disconnect(code)
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def order_events(self, message: dict[str, Any]) -> None:
        for event in message["events"]:
            if event["id"] > self.last_id:
                await self.send_json(event)
                self.last_id = event["id"]


class BoardConsumer(Stream):
    """`/ws/board/`: every event, for staff (the operations board)."""

    joined = False

    async def connect(self) -> None:
        user = self.scope.get("user")
        after = after_id(self.scope)
        if user is None or not await may_read_every_order(user) or after == -1:
            await self.close()
            return
        relay = await ensure_relay(event_message, customer_message)
        await self.channel_layer.group_add(BOARD_GROUP, self.channel_name)
        self.joined = True
        if not await self.admit():
            return
        # `upto` follows the relay's messages; `last_id` is what this client has.
        self.upto = relay.watermark
        self.last_id = self.upto if after is None else after
        await self.catch_up(self.upto)

    async def disconnect(self, code: int) -> None:
        await super().disconnect(code)
        if self.joined:
            await self.channel_layer.group_discard(BOARD_GROUP, self.channel_name)

    async def catch_up(self, upto: int) -> None:
        """Send what the client is missing up to `upto` from the table, or tell it to reload."""
        if upto <= self.last_id:
            return
        messages = await events_between(self.last_id, upto, settings.PIZZAQUEUE_WS_REPLAY_LIMIT)
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


# Events after which an order is no longer this kitchen's to make.
LEFT_THE_KITCHEN = frozenset(
    {
        OrderEvent.Kind.CANCELLED,
        OrderEvent.Kind.REASSIGNED,
        OrderEvent.Kind.DONE,
        OrderEvent.Kind.FAILED,
        OrderEvent.Kind.RELEASED,
    }
)


class KitchenConsumer(Stream):
    """`/ws/kitchen/<shop>/`: a nudge whenever something changed, for a kitchen display.

    The display reloads its tickets through its own page, which shows the
    shop's orders only; the nudge carries no event's content, so the stream
    tells kitchen staff nothing about other shops' orders. It names only this
    kitchen's own orders that just left it (`gone`), so their tickets go at
    once, not at the next reload: nobody goes on making a cancelled pizza.
    """

    joined = False

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not await may_work_kitchen(user, self.scope["url_route"]["kwargs"]["name"]):
            await self.close()
            return
        await ensure_relay(event_message, customer_message)
        await self.channel_layer.group_add(BOARD_GROUP, self.channel_name)
        self.joined = True
        await self.admit()

    async def disconnect(self, code: int) -> None:
        await super().disconnect(code)
        if self.joined:
            await self.channel_layer.group_discard(BOARD_GROUP, self.channel_name)

    async def board_events(self, message: dict[str, Any]) -> None:
        shop = self.scope["url_route"]["kwargs"]["name"]
        gone = [e["order"] for e in message["events"] if e["kind"] in LEFT_THE_KITCHEN and e["worker"] == shop]
        await self.send_json({"type": "changed", "id": message["upto"], "gone": gone})
