"""Handlers for the benchmarks' worker processes (`--handler bench.handlers.NAME`)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

# Folder the `first_line` handler writes its marks to, one file per worker process.
MARKS_ENV = "BENCH_MARKS"


def first_line(order: object, progress: Callable[[str], None]) -> None:
    """Records when the handler started: `order-id epoch-seconds`, one short O_APPEND write per order."""
    started = time.time()
    with open(Path(os.environ[MARKS_ENV]) / f"starts-{os.getpid()}", "a") as f:
        f.write(f"{order.id} {started:.6f}\n")  # type: ignore[attr-defined]


def read_starts(folder: Path) -> dict[str, float]:
    """Each order's handler start (epoch seconds), from every worker process's marks."""
    starts = {}
    for path in folder.glob("starts-*"):
        for line in path.read_text().splitlines():
            order_id, at = line.split()
            starts[order_id] = float(at)
    return starts
