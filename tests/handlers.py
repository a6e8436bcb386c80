"""Handlers for worker-process tests, importable by `manage.py worker --handler`."""

from __future__ import annotations

import os
import time

from django.db import connection

from workers.loop import Progress, still_working
from workers.models import Order, OrderEvent


def explode(order: Order, progress: Progress) -> None:
    progress("oven")
    raise RuntimeError("oven on fire")


def bake_for(seconds: float) -> None:
    """Sleep, showing the kitchen every tenth of a second that the handler is alive
    (`workers.loop.still_working`), as a real oven's handler does between stages."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(0.1, left))
        still_working()


def slow(order: Order, progress: Progress) -> None:
    """Reports the oven stage, then takes the seconds written in the order's note."""
    progress("oven")
    bake_for(float(order.note or "60"))


def slow_first_attempt(order: Order, progress: Progress) -> None:
    """Like `slow` on the first attempt; three times as long on every later one,
    so a rescuer is still baking when the first kitchen comes back."""
    progress("oven")
    bake_for(float(order.note or "60") * (1 if order.attempts <= 1 else 3))


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


def logged(order: Order, progress: Progress) -> None:
    """Bakes for the seconds in the note, reporting a stage every quarter second
    (the kitchen's chance to stop it), and writes when it starts and stops baking to
    the file named by PIZZAQUEUE_TEST_BAKE_LOG: the handlers' own account of who
    baked what when, on the machine-wide monotonic clock every process shares."""
    log = os.open(os.environ["PIZZAQUEUE_TEST_BAKE_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(log, f"{time.monotonic():.6f} start {order.id} {os.getpid()}\n".encode())
        try:
            deadline = time.monotonic() + float(order.note or "60")
            while time.monotonic() < deadline:
                progress("oven")
                time.sleep(0.25)
        finally:
            os.write(log, f"{time.monotonic():.6f} stop {order.id} {os.getpid()}\n".encode())
    finally:
        os.close(log)


def bakes(path: str) -> dict[str, list[tuple[float, float, int]]]:
    """Each order's bakes from a `logged` log: (start, stop, pid), stop = inf while still baking."""
    started: dict[tuple[str, int], float] = {}
    result: dict[str, list[tuple[float, float, int]]] = {}
    with open(path) as lines:
        for line in lines:
            at, what, order_id, pid = line.split()
            if what == "start":
                started[order_id, int(pid)] = float(at)
            else:
                begun = started.pop((order_id, int(pid)))
                result.setdefault(order_id, []).append((begun, float(at), int(pid)))
    for (order_id, pid), begun in started.items():
        result.setdefault(order_id, []).append((begun, float("inf"), pid))
    return result
