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

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pizzaqueue.settings")

# Set Django up before importing anything that touches models.
django_asgi_app = get_asgi_application()

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
