"""Handlers for worker-process tests, importable by `manage.py worker --handler`."""

from __future__ import annotations

import time

from workers.loop import Progress
from workers.models import Order


def explode(order: Order, progress: Progress) -> None:
    progress("oven")
    raise RuntimeError("oven on fire")


def slow(order: Order, progress: Progress) -> None:
    """Reports the oven stage, then takes the seconds written in the order's note."""
    progress("oven")
    time.sleep(float(order.note or "60"))
