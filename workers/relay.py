"""The live-update relay: committed events, read in id order, fanned out in this process.

`OrderEvent` rows are the outbox. Each web process runs one relay (started by
its first WebSocket connection) that reads the events committed after its
*watermark*, in id order, and hands them to this process's consumers through
the in-memory channel layer: each order's events to the group `order.<id>`,
every event to the group `board`. A change made by a worker process therefore
reaches a browser connected here with no broker: the database carries it.

The relay wakes on PostgreSQL `LISTEN pizzaqueue_events` (every transaction
that writes events NOTIFYs on commit), through a dedicated psycopg
connection, and polls every `PIZZAQUEUE_RELAY_POLL_INTERVAL` where there is no
NOTIFY (SQLite). Its reads run in one dedicated thread, so they never queue
behind the consumers' own database calls.

The watermark only moves over ids that can no longer appear: every event with
an id at or below it has been published, in order. That is what lets a
consumer replay `(client's last id, watermark]` from the table and take the
rest live, with no gap between the two (see `consumers.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection, connections
from django.db.models import BigIntegerField, Func, Max

from workers import sql
from workers.listening import listen_params
from workers.models import OrderEvent

logger = logging.getLogger(__name__)

BOARD_GROUP = "board"
# How long a missing id must have been missing before the PostgreSQL snapshot
# is consulted about it: covers a transaction that drew the id from the
# sequence an instant before it was given a transaction id.
GAP_GRACE = 0.1
# How often a pending gap is looked at again, NOTIFY or not.
GAP_RECHECK = 0.05
# Poll interval behind a working LISTEN connection: only a safety net.
LISTEN_SAFETY_POLL = 1.0


# Turns an event into the JSON message its clients receive: the shop's to define.
Render = Callable[[OrderEvent], dict[str, Any]]
# The message an order's own followers (its customer) receive, or None for an event
# they are not sent (a worker's lost lease): also the shop's.
CustomerRender = Callable[[OrderEvent], dict[str, Any] | None]


def order_group(order_id: object) -> str:
    return f"order.{order_id}"


# --- Reading the outbox ------------------------------------------------------------


class _SnapshotXmin(Func):
    """The oldest transaction still running in this statement's snapshot."""

    template = sql.queries["snapshot_xmin"]
    output_field = BigIntegerField()


class _SnapshotXmax(Func):
    """The first transaction id not yet assigned when this statement's snapshot was taken."""

    template = sql.queries["snapshot_xmax"]
    output_field = BigIntegerField()


@dataclass(frozen=True)
class Snapshot:
    """The PostgreSQL snapshot a read was made in (transaction ids, 64-bit)."""

    xmin: int
    xmax: int


@dataclass
class _Gap:
    start: int  # the first missing id
    since: float  # monotonic time it was first seen missing
    threshold: int | None = None  # xmax once the grace has passed: every id holder's xid is below it


@dataclass(frozen=True)
class Read:
    events: list[OrderEvent]
    snapshot: Snapshot | None


def read_events(after: int, limit: int) -> Read:
    """Events with an id above `after`, in id order, with the snapshot they were read in."""
    rows = OrderEvent.objects.filter(id__gt=after).select_related("worker").order_by("id")
    if connection.vendor == "postgresql":
        rows = rows.annotate(snapshot_xmin=_SnapshotXmin(), snapshot_xmax=_SnapshotXmax())
    events = list(rows[:limit])
    snapshot = None
    if events and connection.vendor == "postgresql":
        first: Any = events[0]  # annotated with the snapshot
        snapshot = Snapshot(first.snapshot_xmin, first.snapshot_xmax)
    return Read(events, snapshot)


def latest_event_id() -> int:
    return OrderEvent.objects.aggregate(latest=Max("id"))["latest"] or 0


class Relay:
    """Publishes committed events, in id order, to this process's consumers."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, render: Render, render_for_customer: CustomerRender | None = None
    ) -> None:
        self.loop = loop
        self.render = render
        # Without one, an order's followers get what the board gets.
        self.render_for_customer: CustomerRender = render_for_customer or render
        # Every event with id <= watermark has been published (or can never appear).
        self.watermark = 0
        self.channel_layer = get_channel_layer()
        self.listening = False
        self._gap: _Gap | None = None
        self._wake = asyncio.Event()
        self._ready = asyncio.Event()
        self._stopped = False
        # One thread, so one long-lived database connection, for every read.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="relay-db")
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def running(self) -> bool:
        return not self._stopped and bool(self._tasks) and not self._tasks[0].done()

    def start(self) -> None:
        self._tasks.append(self.loop.create_task(self._run(), name="pizzaqueue-relay"))
        if connections["default"].vendor == "postgresql":
            self._tasks.append(self.loop.create_task(self._listen(), name="pizzaqueue-relay-listen"))
        self._tasks[0].add_done_callback(self._on_exit)

    async def ready(self, timeout: float = 10.0) -> None:
        """Wait until the starting watermark is known."""
        await asyncio.wait_for(self._ready.wait(), timeout)

    async def stop(self) -> None:
        self._stopped = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # Close this thread's connection: a test database cannot be dropped while it is open.
        await self.loop.run_in_executor(self._executor, connections.close_all)
        self._executor.shutdown(wait=True)

    def _on_exit(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.error("relay stopped", exc_info=task.exception())

    async def _db(self, function: Any, *args: Any) -> Any:
        def call() -> Any:
            close_old_connections()
            return function(*args)

        return await self.loop.run_in_executor(self._executor, call)

    async def _run(self) -> None:
        while True:
            try:
                # Events committed before the relay started were sent to nobody
                # live; a connecting client replays them from the table. (One still
                # being committed at this instant, below the newest id, reaches only
                # clients that connect after its commit: a window of milliseconds,
                # once per process.)
                self.watermark = await self._db(latest_event_id)
                break
            except DatabaseError:
                logger.warning("relay cannot read events; retrying", exc_info=True)
                await asyncio.sleep(1.0)
        self._ready.set()
        logger.info("relay started watermark=%s", self.watermark)
        while True:
            await self._sleep()
            try:
                read = await self._db(read_events, self.watermark, settings.PIZZAQUEUE_RELAY_BATCH)
            except DatabaseError:
                logger.warning("relay lost its database connection; retrying", exc_info=True)
                await self.loop.run_in_executor(self._executor, connections.close_all)
                await asyncio.sleep(1.0)
                continue
            after = self.watermark
            events = self.advance(read, time.monotonic())
            if events:
                await self.publish(events, after)
            if len(read.events) == settings.PIZZAQUEUE_RELAY_BATCH and events:
                self._wake.set()  # a full batch: more may be waiting

    async def _sleep(self) -> None:
        if self._gap is not None:
            timeout = GAP_RECHECK
        elif self.listening:
            timeout = LISTEN_SAFETY_POLL
        else:
            timeout = settings.PIZZAQUEUE_RELAY_POLL_INTERVAL
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)
        self._wake.clear()

    def advance(self, read: Read, now: float) -> list[OrderEvent]:
        """The events that can be published now, in id order; moves the watermark past them.

        Ids come from a sequence when a row is inserted, but transactions commit
        in their own order: on PostgreSQL, id 11 may be visible while id 10's
        transaction is still open. Publishing 11 and moving on would lose 10
        for good, so the relay stops at the first missing id until that id
        either appears or is known never to: once every transaction that was
        running when the gap was seen has ended (the snapshot's xmin has
        passed their ids), a still-missing id belonged to a transaction that
        rolled back. On SQLite one writer commits at a time, in id order, so a
        missing id is a row deleted already and is skipped at once.
        """
        if not read.events:
            self._gap = None
            return []
        ready: list[OrderEvent] = []
        expected = self.watermark + 1
        for event in read.events:
            if event.id > expected and not self._gap_closed(expected, read.snapshot, now):
                break
            self._gap = None
            ready.append(event)
            expected = event.id + 1
        if ready:
            self.watermark = ready[-1].id
        return ready

    def _gap_closed(self, start: int, snapshot: Snapshot | None, now: float) -> bool:
        if snapshot is None:
            return True
        if self._gap is None or self._gap.start != start:
            logger.debug("relay waits for event id=%s (committed ids after it are held)", start)
            self._gap = _Gap(start, now)
        gap = self._gap
        waited = now - gap.since
        if waited >= settings.PIZZAQUEUE_RELAY_GAP_TIMEOUT:
            logger.warning("relay skips missing event ids from %s after %.1fs", start, waited)
            return True
        if gap.threshold is None:
            if waited < GAP_GRACE:
                return False
            gap.threshold = snapshot.xmax
        return snapshot.xmin >= gap.threshold

    async def publish(self, events: Sequence[OrderEvent], after: int) -> None:
        """One message per order group (the customer's rendering, without what
        customers are not sent), and one for the board with the range it covers.

        The board message carries `after` and `upto` so a consumer that missed a
        message (a full channel drops it) notices and reads the range from the table.
        """
        messages = [self.render(e) for e in events]
        by_order: dict[str, list[dict[str, Any]]] = defaultdict(list)
        # Optimization: the in-memory layer walks every group membership on each group_send,
        # and most orders have nobody watching: render and send only for groups that have members.
        groups = getattr(self.channel_layer, "groups", None)
        for event in events:
            group = order_group(event.order_id)
            if isinstance(groups, dict) and group not in groups:
                continue
            message = self.render_for_customer(event)
            if message is not None:
                by_order[group].append(message)
        for group, order_messages in by_order.items():
            await self.channel_layer.group_send(group, {"type": "order.events", "events": order_messages})
        await self.channel_layer.group_send(
            BOARD_GROUP, {"type": "board.events", "after": after, "upto": self.watermark, "events": messages}
        )

    async def _listen(self) -> None:
        """Wake the relay on every NOTIFY; reconnect with a pause when the connection drops."""
        import psycopg

        params = listen_params("pizzaqueue-relay")
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(**params, autocommit=True) as conn:
                    await conn.execute(sql.queries["listen_events"])
                    self.listening = True
                    self._wake.set()  # catch up on what was committed while not listening
                    async for _notify in conn.notifies():
                        self._wake.set()
            except psycopg.Error:
                logger.warning("relay listener lost its connection; retrying", exc_info=True)
            finally:
                self.listening = False
            await asyncio.sleep(1.0)


_relay: Relay | None = None


async def ensure_relay(render: Render, render_for_customer: CustomerRender | None = None) -> Relay:
    """This process's relay, started on first use (by the first WebSocket connection).

    One per event loop: daphne runs one loop per process; tests run one per test.
    """
    global _relay
    loop = asyncio.get_running_loop()
    if _relay is None or _relay.loop is not loop or not _relay.running:
        if _relay is not None and _relay.loop is loop:
            await _relay.stop()
        _relay = Relay(loop, render, render_for_customer)
        _relay.start()
    await _relay.ready()
    return _relay


async def stop_relay() -> None:
    global _relay
    if _relay is not None:
        relay, _relay = _relay, None
        await relay.stop()
