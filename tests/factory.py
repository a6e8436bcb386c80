"""Orders through the shop's intake, as a customer's form or an integrator's API
call would place them: data checked against the menu (`orders.intake`), then
placed on the queue. The engine's own builders, the clock and the people are
`tests.base`'s."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from orders.intake import clean_order_request
from workers import queue
from workers.models import Order

# Where a delivery order of the tests goes, and whom its driver calls.
ADDRESS = "1 Harbour Street"
PHONE = "+442079460958"


def order_data(**kw: Any) -> dict[str, Any]:
    """A request as the shop receives it: one medium margherita unless `items` says otherwise,
    with what its kind needs (a delivery's address and phone, a takeaway's name) unless given."""
    kw.setdefault("items", [{"pizza": "margherita", "size": "medium", "quantity": 1}])
    if kw.get("kind", "delivery") in ("delivery", None, ""):
        kw.setdefault("address", ADDRESS)
        kw.setdefault("phone", PHONE)
    else:
        kw.setdefault("customer_name", "Ada")
    return kw


def make_order(
    idempotency_key: str | None = None,
    placed_by: Any = None,
    session: str = "",
    now: datetime | None = None,
    **kw: Any,
) -> Order:
    """An order placed through the shop's intake; by nobody (staff-only) unless
    `placed_by` (a user) or `session` says; at `now`, or by the database's clock."""
    owner = queue.Owner(user_id=placed_by.pk if placed_by is not None else None, session=session)
    request = clean_order_request(order_data(**kw), now=now)
    order, _created = queue.place(request, idempotency_key=idempotency_key, now=now, owner=owner)
    return order


def placed_at(now: datetime, **kw: Any) -> Order:
    """An order placed through the shop's intake at a pinned time: its estimate is the menu's."""
    return make_order(now=now, **kw)
