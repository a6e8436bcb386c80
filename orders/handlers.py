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
