"""What the jobs of every system do when they are not noops: the same code for all.

`hang_once` is the crash-recovery job: it hangs on its first run and returns
at once when run again. Each run appends `start PID TIME` and, if it finishes, `done PID TIME` to a
file named after the job, in the folder named by PEERS_MARKS. The first run
(the one whose worker gets SIGKILLed) is the one that creates the file. The
file tells which process held the job, when another one started it again,
when it finished, and whether it finished more than once.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

MARKS_ENV = "PEERS_MARKS"
PICKUPS = "pickups"
HANG_SECONDS = 300.0


def _append(path: Path, what: str) -> None:
    with open(path, "a") as f:  # one short O_APPEND write per line: lines never interleave
        f.write(f"{what} {os.getpid()} {time.time():.6f}\n")


def hang_once(key: str) -> None:
    path = Path(os.environ[MARKS_ENV]) / key
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        first = True
    except FileExistsError:
        first = False
    _append(path, "start")
    if first:
        time.sleep(HANG_SECONDS)  # SIGKILL arrives long before this ends
    _append(path, "done")


def read_marks(key: str) -> list[tuple[str, int, float]]:
    path = Path(os.environ[MARKS_ENV]) / key
    if not path.exists():
        return []
    marks = []
    for line in path.read_text().splitlines():
        what, pid, at = line.split()
        marks.append((what, int(pid), float(at)))
    return marks


def record_pickup(sent: float) -> None:
    """The pickup-latency job: seconds from just before its enqueue call to its start,
    one line per job in a file per worker process."""
    latency = time.time() - sent
    with open(Path(os.environ[MARKS_ENV]) / f"{PICKUPS}-{os.getpid()}", "a") as f:
        f.write(f"{latency:.6f}\n")


def read_pickups() -> list[float]:
    return [
        float(line) for path in Path(os.environ[MARKS_ENV]).glob(f"{PICKUPS}-*") for line in path.read_text().split()
    ]
