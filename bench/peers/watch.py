"""A watcher for benchmark runs on a shared machine (bench/peers.py, bench/scale.py)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

WATCHED = ("pytest", "daphne", "manage.py worker", "bench/", "manage.py rush")


def _ancestors(pid: int) -> set[int]:
    seen = set()
    while pid > 1 and pid not in seen:
        seen.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            break
    return seen


class Watcher(threading.Thread):
    """Notes, every 2 s, benchmark or test processes that are not this run's, and the load:
    figures taken while the machine was shared say so in the JSON."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.others: set[str] = set()
        self.max_load = 0.0
        self._halt = threading.Event()

    def run(self) -> None:
        me = os.getpid()
        while not self._halt.wait(2.0):
            self.max_load = max(self.max_load, float(Path("/proc/loadavg").read_text().split()[0]))
            for entry in Path("/proc").iterdir():
                if not entry.name.isdigit():
                    continue
                try:
                    cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
                except OSError:
                    continue
                if any(w in cmd for w in WATCHED) and me not in _ancestors(int(entry.name)):
                    self.others.add(cmd[:100])

    def stop(self) -> None:
        self._halt.set()
        self.join(5)
