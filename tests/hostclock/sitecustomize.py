"""Loaded (through PYTHONPATH) by every Python process that tests/hosts.py runs with a wrong clock.

libfaketime 0.9.10 (Debian 12) shifts the wall clock, and is told to leave the
monotonic clock alone (FAKETIME_DONT_FAKE_MONOTONIC), as a machine whose clock
is set wrong still counts seconds at the right rate. With that setting its
clock_nanosleep() wrapper mangles an absolute monotonic deadline and the
kernel answers EINVAL (wolfcw/libfaketime#426), and since Python 3.11
`time.sleep()` is exactly such a call. So `time.sleep` sleeps in select()
instead: the same wait on the same monotonic clock, through a call
libfaketime leaves alone. (Faking the monotonic clock too is no way out:
locks and Event.wait then hang, as glibc's sem_clockwait is not intercepted.)
"""

from __future__ import annotations

import select
import time


def _sleep(seconds: float) -> None:
    if seconds < 0:
        raise ValueError("sleep length must be non-negative")
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        select.select([], [], [], left)


time.sleep = _sleep
