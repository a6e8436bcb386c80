"""pizzaqueue's handlers for the benchmark's jobs (`--handler bench.peers.pizzaqueue_tasks.NAME`)."""

from __future__ import annotations

from collections.abc import Callable

from bench.peers import jobs


def hang_once(order: object, progress: Callable[[str], None]) -> None:
    jobs.hang_once(str(order.id))  # type: ignore[attr-defined]


def stamp(order: object, progress: Callable[[str], None]) -> None:
    # `queue.place` stamps created_at as it starts: the moment of the enqueue call.
    jobs.record_pickup(order.created_at.timestamp())  # type: ignore[attr-defined]
