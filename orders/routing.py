"""WebSocket routes (served by daphne next to the HTTP ones, see pizzaqueue/asgi.py)."""

from __future__ import annotations

from django.urls import path

from orders import consumers

websocket_urlpatterns = [
    path("ws/orders/<uuid:order_id>/", consumers.OrderConsumer.as_asgi()),
    path("ws/board/", consumers.BoardConsumer.as_asgi()),
    path("ws/kitchen/<str:name>/", consumers.KitchenConsumer.as_asgi()),
]
