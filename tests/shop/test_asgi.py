"""The ASGI entry point: every middleware still applies, and a request costs one thread hop, not thirty."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import SyncToAsync
from channels.testing import HttpCommunicator
from django.conf import settings
from django.core import signals

from pizzaqueue.asgi import application

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _drop_request_threads_connections() -> Iterator[None]:
    """A connection left in a request's thread (a test's own, outside any request)
    is closed when collected, so the test database can be dropped."""
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
    # Django's own handler makes one hop per middleware method (about thirty here),
    # and one for each of the request's signals.
    assert hops == ["OneHopASGIHandler._respond"]


async def test_a_request_starts_and_finishes_in_the_thread_that_served_it(live_menu: None) -> None:
    """`request_finished` releases the database connections of the thread it runs
    in, so it must run where the view ran."""
    seen: list[tuple[str, int]] = []

    def started(**kwargs: Any) -> None:
        seen.append(("started", threading.get_ident()))

    def finished(**kwargs: Any) -> None:
        seen.append(("finished", threading.get_ident()))

    signals.request_started.connect(started)
    signals.request_finished.connect(finished)
    try:
        for _ in range(20):
            response = await HttpCommunicator(
                application, "GET", "/healthz", headers=[(b"host", b"localhost")]
            ).get_response()
            assert response["status"] == 200
    finally:
        signals.request_started.disconnect(started)
        signals.request_finished.disconnect(finished)

    assert [what for what, _ in seen] == ["started", "finished"] * 20
    assert all(seen[n][1] == seen[n + 1][1] for n in range(0, 40, 2))


# WhiteNoise's file iterator is synchronous; Django warns that it consumes it to serve it (as in production).
@pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume synchronous iterators")
async def test_a_static_file_streams_through_the_handler() -> None:
    # Raw ASGI: a streamed body ends with a message without "body", which HttpCommunicator refuses.
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/static/css/site.css",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"localhost")],
        "http_version": "1.1",
        "scheme": "http",
        "server": ("localhost", 80),
        "client": ("127.0.0.1", 5000),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await application(scope, receive, send)

    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    body = b"".join(m.get("body", b"") for m in sent[1:])
    assert body == (settings.BASE_DIR / "static" / "css" / "site.css").read_bytes()
    assert sent[-1].get("more_body", False) is False


async def test_the_web_process_keeps_its_long_lived_objects_out_of_garbage_collection() -> None:
    # Importing the ASGI application froze what was loaded, and collections run rarely.
    assert gc.get_freeze_count() > 10_000
    assert gc.get_threshold()[0] >= 10_000
