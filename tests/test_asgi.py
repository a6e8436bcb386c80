"""The ASGI entry point: every middleware still applies, and a request costs one thread hop, not thirty."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import SyncToAsync
from channels.testing import HttpCommunicator

from pizzaqueue.asgi import application

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _drop_request_threads_connections() -> Iterator[None]:
    """Each request ran in a thread of its own, now gone; collecting its connection
    closes it, so the test database can be dropped."""
    yield
    gc.collect()


def headers(response: dict[str, Any]) -> dict[str, str]:
    return {k.decode().lower(): v.decode() for k, v in response["headers"]}


@pytest.fixture
def hops(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every sync_to_async call made while serving, by the name of what it ran."""
    seen: list[str] = []
    real_call = SyncToAsync.__call__

    async def counting_call(self: SyncToAsync, *args: Any, **kwargs: Any) -> Any:
        seen.append(getattr(self.func, "__qualname__", repr(self.func)))
        return await real_call(self, *args, **kwargs)

    monkeypatch.setattr(SyncToAsync, "__call__", counting_call)
    return seen


async def test_a_page_through_the_asgi_app_gets_every_middlewares_work(live_menu: None) -> None:
    response = await HttpCommunicator(application, "GET", "/", headers=[(b"host", b"localhost")]).get_response()

    assert response["status"] == 200
    got = headers(response)
    assert got["x-frame-options"] == "DENY"  # XFrameOptionsMiddleware
    assert got["x-content-type-options"] == "nosniff"  # SecurityMiddleware
    assert "csrftoken=" in got.get("set-cookie", "")  # CsrfViewMiddleware, for the order form
    assert got["vary"].lower().count("cookie") == 1


async def test_the_middleware_chain_and_the_view_run_in_one_thread_hop(live_menu: None, hops: list[str]) -> None:
    response = await HttpCommunicator(application, "GET", "/healthz", headers=[(b"host", b"localhost")]).get_response()

    assert response["status"] == 200
    # Django's own handler makes one hop per middleware method (about thirty here);
    # besides the signals at the start and the end of a request, only get_response hops.
    assert [name for name in hops if "signal" not in name.lower() and "close" not in name] == [
        "BaseHandler.get_response"
    ]
    assert len(hops) <= 3, hops
