"""pizzaqueue's handler for the crash-recovery job (`--handler bench.peers.pizzaqueue_tasks.hang_once`)."""

from __future__ import annotations

from collections.abc import Callable

from bench.peers import crash


def hang_once(order: object, progress: Callable[[str], None]) -> None:
    crash.hang_once(str(order.id))  # type: ignore[attr-defined]
