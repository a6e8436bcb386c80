"""How many orders a worker claims at a time: as many as it will start soon.

A claim is one transaction whose cost hardly depends on how many orders it
carries, so a worker with fast handlers drains faster the more each claim
takes. But a claimed order is leased to this worker: one it will not start
for a while is one another worker, idle, cannot take. So the worker claims
what it will start within a short horizon (PIZZAQUEUE_CLAIM_HORIZON) at the
rate its slots free up, and never fewer than its free slots: fast handlers
get big batches, slow ones no more than their free slots.

The rate is the slots over the handlers' mean duration, not a count of
recent starts or completions: those come in bursts (every slot of an idle
worker starts at once; slow orders claimed together end together), and a
burst seen through a window of 150 ms looks like a fast worker. A worker
idle for longer than the horizon forgets the rate, so the first orders after
a pause claim only the free slots, whatever the orders before them took.

An explicit prefetch (`--prefetch N`, PIZZAQUEUE_PREFETCH) replaces the rate
with a fixed number of orders claimed beyond the free slots.
"""

from __future__ import annotations

# The largest claim: one statement's rows, loaded into Python at once. Past a
# few hundred orders a bigger batch buys little (loading the rows costs per
# order) and only holds the later ones back from other workers for longer.
MAX_BATCH = 1000
# Weight of the newest handler duration in the running mean.
SMOOTHING = 0.2


class PrefetchPolicy:
    """The number of orders to claim next, from the handlers' durations (or a fixed prefetch)."""

    def __init__(self, concurrency: int, horizon: float, prefetch: int | None = None) -> None:
        self.concurrency = concurrency
        self.horizon = horizon
        self.prefetch = prefetch
        self.duration: float | None = None  # mean seconds per handler call; None until measured
        self._idle_since: float | None = None

    def finished(self, seconds: float) -> None:
        """Record how long one handler call took (under the loop's lock: one writer at a time)."""
        if self.duration is None:
            self.duration = seconds
        else:
            self.duration += SMOOTHING * (seconds - self.duration)

    def rate(self) -> float:
        """Orders the slots start per second when busy (0 until a handler has finished)."""
        if self.duration is None:
            return 0.0
        return self.concurrency / max(self.duration, 1e-6)

    def want(self, running: int, pending: int, now: float) -> int:
        """Orders to claim now, given those running and those claimed but not started."""
        free = self.concurrency - running
        if self.prefetch is not None:
            return free + self.prefetch - pending
        if running or pending:
            self._idle_since = None
        elif self._idle_since is None:
            self._idle_since = now
        elif now - self._idle_since > self.horizon:
            self.duration = None  # a pause: the next orders may be nothing like the last ones
        ahead = int(self.rate() * self.horizon)
        return max(free, min(ahead, MAX_BATCH)) - pending
