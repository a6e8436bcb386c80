"""Poison handlers for worker-process tests (`manage.py worker --handler tests.poison.handler`).

An order's note names its poison; an order with any other note is baked
normally. Each poison is something a shop's handler really can do: raise
what is not an `Exception`, raise with a text no database stores, report a
stage no column holds, or block for ever.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from workers.loop import Progress
from workers.models import Order


class UnprintableError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no message for you")


class NotAnError(BaseException):
    """A handler's own BaseException: neither Exception nor anything Python raises."""


def _raise(exc: BaseException) -> Callable[[Progress], None]:
    def poison(progress: Progress) -> None:
        progress("oven")
        raise exc

    return poison


def _stage(name: str) -> Callable[[Progress], None]:
    def poison(progress: Progress) -> None:
        progress(name)

    return poison


def _block(progress: Progress) -> None:
    progress("oven")
    threading.Event().wait()  # for ever, and deaf to everything


POISONS: dict[str, Callable[[Progress], None]] = {
    "system-exit": _raise(SystemExit(3)),
    "keyboard-interrupt": _raise(KeyboardInterrupt()),
    "cancelled": _raise(asyncio.CancelledError()),
    "base-exception": _raise(NotAnError("not an error")),
    "nul-in-error": _raise(RuntimeError("burnt\x00crust")),
    "surrogate-in-error": _raise(RuntimeError("burnt \ud800 crust")),
    "huge-error": _raise(RuntimeError("x" * 1_000_000)),
    "unprintable-error": _raise(UnprintableError()),
    "nul-in-stage": _stage("ov\x00en"),
    "surrogate-in-stage": _stage("ov\udc80en"),
    "long-stage": _stage("the-oven-of-a-stage-name-far-too-long"),
    "blocks-for-ever": _block,
}


def handler(order: Order, progress: Progress) -> None:
    poison = POISONS.get(order.note)
    if poison is not None:
        poison(progress)
        return
    progress("oven")
