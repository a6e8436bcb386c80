"""ASGI entry point: daphne serves HTTP and WebSocket from this one application.

WebSocket connections are checked against ALLOWED_HOSTS by their Origin header
(a page on another site cannot open a stream with the visitor's cookies) and
carry the session user, which the board's consumer requires to be staff. The
first WebSocket connection starts this process's event relay
(`orders.relay.ensure_relay`), so a process that only serves HTTP never opens
the relay's database connections.
"""

from __future__ import annotations

import gc
import os
from typing import Any

import django
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.http import FileResponse, HttpResponse, HttpResponseBase
from django.urls import set_script_prefix

from pizzaqueue import bodylimit

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pizzaqueue.settings")


class OneHopASGIHandler(ASGIHandler):
    """Django's ASGI handler, with all of a request's synchronous work done in one thread hop.

    Every view here is synchronous. Django's own handler runs the middleware
    chain in async mode, where each of Django's middleware runs its
    `process_request` and `process_response` in a thread hop of its own (some
    thirty hops per request), and it starts a new thread for every request
    (`ThreadSensitiveContext`). Here the `request_started` signal, the chain
    (loaded in sync mode: the same middleware, in the same order), the view
    and the closing of the response (`request_finished`, which releases the
    request's database connection in the thread that used it) run in one call
    on a pooled thread; only the response's bytes are sent from the event
    loop. Together that halves the CPU of an API request (docs/performance.md).
    """

    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async=False)

    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if _declared_length(scope) > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
            await self.send_response(_too_large(), send)  # refused on its Content-Length, nothing read
            return
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        except _BodyTooLargeError:
            await self.send_response(_too_large(), send)
            return
        set_script_prefix(get_script_prefix(scope))
        try:
            response = await sync_to_async(self._respond, thread_sensitive=False)(scope, body_file)
            try:
                await self.send_response(response, send)
            finally:
                if response.streaming:  # its content was read only now, by send_response
                    await sync_to_async(response.close, thread_sensitive=False)()
        finally:
            body_file.close()

    async def read_body(self, receive: Any) -> Any:
        """Django's, stopped as soon as the body passes the limit (one sent without a Content-Length)."""
        limit, read = settings.DATA_UPLOAD_MAX_MEMORY_SIZE, 0

        async def bounded() -> dict[str, Any]:
            nonlocal read
            message = await receive()
            read += len(message.get("body", b""))
            if read > limit:
                raise _BodyTooLargeError
            return message

        return await super().read_body(bounded)

    def _respond(self, scope: dict[str, Any], body_file: Any) -> HttpResponseBase:
        signals.request_started.send(sender=self.__class__, scope=scope)
        request, response = self.create_request(scope, body_file)
        if request is not None:
            response = self.get_response(request)
            response._handler_class = self.__class__  # type: ignore[attr-defined]  # as Django's own handler does
            if isinstance(response, FileResponse):
                response.block_size = self.chunk_size  # the server chunks the bytes itself
        if response is None:
            raise RuntimeError("the request was neither answered nor refused")
        if not response.streaming:
            response.close()  # its content is in memory; close now, in the request's own thread
        return response


class _BodyTooLargeError(Exception):
    pass


def _declared_length(scope: dict[str, Any]) -> int:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0  # Django answers a malformed one itself
    return 0


def _too_large() -> HttpResponse:
    response = HttpResponse(bodylimit.too_large_body(), status=413, content_type="application/json")
    response["Connection"] = "close"
    return response


# Set Django up before importing anything that touches models.
django.setup(set_prefix=False)
django_asgi_app = OneHopASGIHandler()
bodylimit.install()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from orders.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)

# Everything loaded so far (Django, the URL map, the models, DRF's machinery)
# lives as long as the process. Frozen, the collector never walks it again,
# and with a larger first generation it runs a tenth as often: per-request
# garbage is freed by reference counting anyway. Full collections were the
# longest pauses behind the API's 99th percentile (docs/performance.md).
gc.freeze()
gc.set_threshold(20_000, 50, 100)
