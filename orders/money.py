"""Money: prices from the menu, a delivery area's fee, an order's total, and how amounts read.

Every amount is a `Decimal` with two places in the one currency of the
installation (PIZZAQUEUE_CURRENCY). The server prices an order from the menu
(`orders.intake`); a price or total a client sends is at most checked
against it, never believed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from django.conf import settings

CENT = Decimal("0.01")
# How the common currencies are written before an amount; any other by its code.
SYMBOLS = {"EUR": "€", "GBP": "£", "USD": "$", "CHF": "CHF ", "JPY": "¥"}


def amount(value: Any) -> Decimal:
    """A stored amount as a two-place Decimal (SQLite hands raw queries a float)."""
    return Decimal(str(value)).quantize(CENT, rounding=ROUND_HALF_UP)


def parse_amount(value: Any) -> Decimal | None:
    """An amount a client sent (`"12.50"` or `12.5`), or None when it is not one:
    not a number, not finite, negative, or with more than two decimals."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    try:
        parsed = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    # The size first: quantizing a huge number (`1e100`) would overflow the context's precision.
    if not parsed.is_finite() or parsed < 0 or parsed >= 10**9 or parsed != parsed.quantize(CENT):
        return None
    return parsed.quantize(CENT)


def money(value: Decimal | None) -> str:
    """An amount as customers read it: `€12.50`."""
    if value is None:
        return ""
    code = settings.PIZZAQUEUE_CURRENCY
    return f"{SYMBOLS.get(code, code + ' ')}{amount(value):,.2f}"


def delivery_fee(area: str) -> Decimal:
    """What delivering to `area` costs: its own `DeliveryFee`, else PIZZAQUEUE_DELIVERY_FEE."""
    from orders.models import DeliveryFee  # the table, not read at import time

    own = DeliveryFee.objects.filter(area__iexact=area.strip()).values_list("fee", flat=True).first() if area else None
    return amount(own) if own is not None else amount(settings.PIZZAQUEUE_DELIVERY_FEE)


def line_total(item: Mapping[str, Any]) -> Decimal:
    """One priced item's amount: its unit price times its quantity."""
    return amount(Decimal(str(item["price"])) * int(item["quantity"]))


def total(items: Iterable[Mapping[str, Any]], fee: Decimal) -> Decimal:
    """The order's total: its priced items and the delivery fee."""
    return amount(sum((line_total(item) for item in items), Decimal(0)) + fee)
