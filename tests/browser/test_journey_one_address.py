"""Customers behind one address (an office, a campus, a carrier's NAT): every tracking page is live.

The streams' bounds are the process's total, each browser session's, each
order's and each address's connection rate, never a count of streams per
address. The crowd test runs real daphne and 200 real WebSocket clients from
127.0.0.1, each following its own order as a tracking page does.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connections
from django.test.utils import override_settings
from playwright.sync_api import Browser, expect
from websockets.asyncio.client import connect as ws_connect

from orders.consumers import ConnectRate
from pizzaqueue.asgi import application
from tests.conftest import Daphne, forget_streams
from tests.factory import make_order
from workers import queue

ORIGIN = (b"origin", b"http://localhost")
CROWD = 200


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def follow(port: int, order_id: str, ready: asyncio.Event, results: dict[str, Any]) -> None:
    """One tracking page's stream: connect, read the replayed `placed`, wait for the rush."""
    url = f"ws://127.0.0.1:{port}/ws/orders/{order_id}/"
    async with ws_connect(url, origin=f"http://127.0.0.1:{port}", open_timeout=30) as ws:  # type: ignore[arg-type]
        kinds = [json.loads(await asyncio.wait_for(ws.recv(), 30))["kind"]]
        results["connected"] += 1
        await ready.wait()
        while "priority-raised" not in kinds:
            kinds.append(json.loads(await asyncio.wait_for(ws.recv(), 30))["kind"])
        results["live"] += 1


@pytest.mark.processes
@pytest.mark.django_db(transaction=True)
def test_two_hundred_tracking_pages_from_one_address_are_all_live(daphne: Daphne) -> None:
    daphne.start()
    orders = [str(make_order().id) for _ in range(CROWD)]
    assert daphne.proc is not None
    before = rss_kib(daphne.proc.pid)
    results: dict[str, Any] = {"connected": 0, "live": 0}

    async def crowd() -> float:
        ready = asyncio.Event()
        started = time.monotonic()
        pages = [asyncio.create_task(follow(daphne.port, oid, ready, results)) for oid in orders]
        while results["connected"] < CROWD:
            if any(p.done() and p.exception() for p in pages):
                break
            await asyncio.sleep(0.05)
        connect_seconds = time.monotonic() - started
        results["rss_open"] = rss_kib(daphne.proc.pid)  # type: ignore[union-attr]
        await asyncio.to_thread(rush_all)
        ready.set()
        await asyncio.gather(*pages)
        return connect_seconds

    def rush_all() -> None:
        for oid in orders:
            queue.raise_priority(oid, 9)
        connections.close_all()  # this thread's connection, before the database is flushed

    connect_seconds = asyncio.run(crowd())
    per_stream = (results["rss_open"] - before) / CROWD
    print(f"\n{CROWD} streams from one address: connected in {connect_seconds:.2f} s, {per_stream:.1f} KiB RSS each")  # noqa: T201 - the figure docs/security.md quotes
    assert (results["connected"], results["live"]) == (CROWD, CROWD)


# --- The bounds, one by one, through the ASGI application -----------------------------


@pytest_asyncio.fixture
async def streams(live_menu: None) -> AsyncIterator[None]:
    yield
    await forget_streams()


async def open_stream(order_id: Any, *headers: tuple[bytes, bytes]) -> tuple[WebsocketCommunicator, bool]:
    communicator = WebsocketCommunicator(application, f"/ws/orders/{order_id}/", headers=[ORIGIN, *headers])
    connected, _subprotocol = await communicator.connect(timeout=5)
    return communicator, connected


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("streams")
@override_settings(PIZZAQUEUE_WS_PER_SESSION=2)
async def test_one_browser_session_holds_a_bounded_number_of_streams_and_its_neighbours_are_not_counted() -> None:
    orders = [await database_sync_to_async(make_order)() for _ in range(4)]
    mine = (b"cookie", b"sessionid=abc123")
    opened = [await open_stream(o.id, mine) for o in orders[:3]]
    assert [ok for _c, ok in opened] == [True, True, False]
    neighbour, ok = await open_stream(orders[3].id, (b"cookie", b"sessionid=def456"))
    assert ok is True  # same address, another browser
    await opened[0][0].disconnect()
    again, ok_again = await open_stream(orders[2].id, mine)
    assert ok_again is True
    for communicator in (opened[1][0], neighbour, again):
        await communicator.disconnect()


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("streams")
@override_settings(PIZZAQUEUE_WS_MAX_STREAMS=3)
async def test_a_web_process_holds_a_bounded_number_of_streams_in_all() -> None:
    orders = [await database_sync_to_async(make_order)() for _ in range(4)]
    opened = [await open_stream(o.id) for o in orders]
    assert [ok for _c, ok in opened] == [True, True, True, False]
    await opened[0][0].disconnect()
    again, ok = await open_stream(orders[3].id)
    assert ok is True
    for communicator in (opened[1][0], opened[2][0], again):
        await communicator.disconnect()


def test_the_connection_rate_refills_with_time_and_forgets_quiet_addresses() -> None:
    rate = ConnectRate()
    assert [rate.allow("192.0.2.1", rate=2, burst=3, now=0) for _ in range(4)] == [True, True, True, False]
    assert rate.allow("192.0.2.1", rate=2, burst=3, now=0.5) is True  # one token back after half a second
    assert rate.allow("192.0.2.1", rate=2, burst=3, now=0.5) is False
    rate.MAX_TRACKED = 4
    for n in range(10):
        rate.allow(f"198.51.100.{n}", rate=2, burst=3, now=100)
    assert len(rate.buckets) <= 4


@pytest.mark.processes
@pytest.mark.django_db(transaction=True)
def test_thirty_customers_browsers_behind_one_address_all_follow_their_orders_live(
    daphne: Daphne, browser: Browser
) -> None:
    """The issue's office: 30 Chromium browsers on one address (the old cap refused the 21st)."""
    daphne.start()
    orders = [make_order() for _ in range(30)]
    contexts = [browser.new_context() for _ in orders]
    try:
        pages = []
        for context, order in zip(contexts, orders, strict=True):
            page = context.new_page()
            page.goto(daphne.url(f"/orders/{order.id}/"))
            pages.append(page)
        for page in pages:
            expect(page.locator("#live-state")).to_have_text("● live", timeout=20_000)
        for order in orders:
            queue.raise_priority(order.id, 9)
        for page in pages:
            expect(page.locator("#timeline li .text").last).to_have_text(
                "Rushed: your order moves up the queue.", timeout=20_000
            )
    finally:
        for context in contexts:
            context.close()
