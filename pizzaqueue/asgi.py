"""ASGI entry point: daphne serves HTTP and WebSocket from this one application.

WebSocket connections are checked against ALLOWED_HOSTS by their Origin header
(a page on another site cannot open a stream with the visitor's cookies) and
carry the session user, which the board's consumer requires to be staff. The
first WebSocket connection starts this process's event relay
(`orders.relay.ensure_relay`), so a process that only serves HTTP never opens
the relay's database connections.
"""

from __future__ import annotations

import os

import django
from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django.http import HttpRequest, HttpResponseBase

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pizzaqueue.settings")


class OneHopASGIHandler(ASGIHandler):
    """Django's ASGI handler, with the middleware chain and the view run in one thread hop.

    Every view here is synchronous. Django's own handler runs the chain in
    async mode, and in that mode each of Django's middleware runs its
    `process_request` and `process_response` in a thread hop of its own: some
    thirty hops per request, which cost more CPU than the API's work (see
    docs/performance.md). Loading the chain in sync mode and entering it once
    gives the same middleware, in the same order, for one hop.
    """

    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async=False)

    async def get_response_async(self, request: HttpRequest) -> HttpResponseBase:
        return await sync_to_async(self.get_response, thread_sensitive=True)(request)


# Set Django up before importing anything that touches models.
django.setup(set_prefix=False)
django_asgi_app = OneHopASGIHandler()

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
