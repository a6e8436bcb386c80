"""What an order costs, line by line, as the receipt, the tracking page, admin and the ticket show it.

Each item carries the unit price it was ordered at (`orders.intake`), so a
receipt reads the same after the menu's prices change.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from orders.models import Pizza
from orders.money import line_total
from workers.models import Order


def pizza_names() -> dict[str, str]:
    return dict(Pizza.objects.values_list("slug", "name"))


def item_line(item: dict[str, Any], names: dict[str, str]) -> str:
    return f"{item['quantity']} × {names.get(item['pizza'], item['pizza'])} ({item['size']})"


def receipt_lines(order: Order, names: dict[str, str]) -> list[tuple[str, Decimal]]:
    """(what, amount) per item, then the delivery fee of a delivery order. An order placed
    before items carried their prices has none to show: its lines are left out."""
    lines = [(item_line(item, names), line_total(item)) for item in order.items if "price" in item]
    if order.kind == Order.Fulfilment.DELIVERY:
        lines.append(("Delivery", order.delivery_fee))
    return lines
