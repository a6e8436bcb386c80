"""Order handlers: what a kitchen does with a claimed order.

Each is a `workers.loop.Handler`: it reports kitchen stages through
`progress(stage)` and fails the attempt by raising. Returning normally means
the order is done (the worker then completes it, fenced by its lease).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from django.conf import settings

if TYPE_CHECKING:
    from workers.loop import Progress
    from workers.models import Order

# Stages in kitchen order, with each one's share of the order's kitchen time.
STAGES: tuple[tuple[str, float], ...] = (("dough", 0.2), ("sauce", 0.1), ("oven", 0.55), ("boxing", 0.15))


def customer_may_cancel(order: Order) -> bool:
    """The shop's rule for a customer cancelling an order already in the kitchen: until
    it reaches PIZZAQUEUE_CUSTOMER_CANCEL_UNTIL (the oven, by default), nothing is lost."""
    names = [name for name, _share in STAGES]
    until = settings.PIZZAQUEUE_CUSTOMER_CANCEL_UNTIL
    if until not in names:
        return False
    return order.stage == "" or (order.stage in names and names.index(order.stage) < names.index(until))


def operator_may_cancel(order: Order) -> bool:
    """Operators may stop any order in any kitchen (SPEC §4.10)."""
    return True


def kitchen(order: Order, progress: Progress) -> None:
    """Simulate the kitchen: each stage takes its share of the order's estimated time,
    scaled by PIZZAQUEUE_KITCHEN_SPEED (0 makes it instant)."""
    total = order.estimated_seconds * settings.PIZZAQUEUE_KITCHEN_SPEED
    for stage, share in STAGES:
        progress(stage)
        if total > 0:
            time.sleep(total * share)


def noop(order: Order, progress: Progress) -> None:
    """Does nothing: measures the queue itself in benchmarks."""
