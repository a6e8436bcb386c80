"""ASGI entry point: daphne serves HTTP (and, later, WebSocket) from here."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pizzaqueue.settings")

application = get_asgi_application()
