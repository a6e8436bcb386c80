"""Handlers for worker-process tests, importable by `manage.py worker --handler`."""

from __future__ import annotations

import time

from django.db import connection

from workers.loop import Progress
from workers.models import Order, OrderEvent


def explode(order: Order, progress: Progress) -> None:
    progress("oven")
    raise RuntimeError("oven on fire")


def slow(order: Order, progress: Progress) -> None:
    """Reports the oven stage, then takes the seconds written in the order's note."""
    progress("oven")
    time.sleep(float(order.note or "60"))


def slow_first_attempt(order: Order, progress: Progress) -> None:
    """Like `slow` on the first attempt; three times as long on every later one,
    so a rescuer is still baking when the first kitchen comes back."""
    progress("oven")
    time.sleep(float(order.note or "60") * (1 if order.attempts <= 1 else 3))


def chatty(order: Order, progress: Progress) -> None:
    """Reports a stage every few milliseconds for the seconds in the note: the
    kitchen spends most of its time inside stage-report transactions."""
    deadline = time.monotonic() + float(order.note or "60")
    while time.monotonic() < deadline:
        progress("oven")
        time.sleep(0.002)


def loses_its_connection_once(order: Order, progress: Progress) -> None:
    """The first time, the connection under its stage report is gone (closed
    beneath Django, as a server restart or a network cut leaves it); after the
    order came back, it bakes normally."""
    if not OrderEvent.objects.filter(order=order, kind=OrderEvent.Kind.RELEASED).exists():
        connection.ensure_connection()
        connection.connection.close()
    progress("oven")
