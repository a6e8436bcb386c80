"""Client redirection (SPEC §7b): what a customer whose shop went down is offered.

A delivery order moves with its bucket and its page says which shop took it
(the `reassigned` events of `workers.queue`); a takeaway order waits for its
shop, and is cancelled only when the shop closes (`workers.recovery.close_shops`):
its page then offers the same order at an open shop in one
click, placed once however often the button is pressed (`reorder_key`).
"""

from __future__ import annotations

from typing import Any

from orders.shops import display_name
from workers import recovery
from workers.models import Order, Worker


def open_shops(excluding: str = "") -> list[str]:
    """Names of the shops taking takeaway orders now (a kitchen process of each in the ring:
    alive, not draining), each once, though a redeploy runs two processes of one shop."""
    shops = Worker.objects.in_ring().exclude(name=excluding).order_by("name")
    return list(shops.values_list("name", flat=True).distinct()[:20])


def can_reorder(order: Order) -> bool:
    return order.kind == Order.Fulfilment.TAKEAWAY and order.cancel_reason == recovery.SHOP_UNAVAILABLE


def reorder_key(order: Order, shop: str) -> str:
    """One order per cancelled order and chosen shop, however often the button is pressed."""
    return f"reorder:{order.id}:{shop}"


def reorder_context(order: Order, changeable: bool) -> dict[str, Any]:
    """The offer, for the browser that placed the order (or an operator) only: anyone with
    the link may follow an order, but placing another in the customer's name is theirs."""
    offered = changeable and can_reorder(order)
    shops = [{"name": name, "display": display_name(name)} for name in open_shops(order.pinned_shop)]
    return {"order": order, "can_reorder": offered, "shops": shops if offered else []}
