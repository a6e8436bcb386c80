"""The worker loop: claim in batches, bake in threads, complete in batches.

One `WorkerLoop` per `manage.py worker` process. The main thread owns every
database write except stage reports: it claims, heartbeats, runs the monitor
duty when elected and flushes finished orders. Handlers run in a thread pool
of `concurrency` threads, so a slow oven never delays a heartbeat.

Throughput comes from batching: a claim hands over, in one transaction, as
many orders as the worker will start within a short horizon at its measured
rate, never fewer than its free slots (`workers.prefetch`), and every finished
order found at a wake-up is completed in one transaction, so the rate is not
capped by one commit per order.

Alive means making progress (SPEC §4.12). A heartbeat vouches for the
worker's progress, not for its process being up:

1. A turn of the loop makes progress when every write it attempts goes
   through (its flush, hand-back, claim and monitor duty). Each heartbeat
   stamps the worker with the time of its last such turn, not the time of
   the beat, and renews its leases from that time. A worker whose writes keep
   failing, while its heartbeats still get through, therefore looks silent to
   the monitor from its last good turn: it is declared dead, and its buckets
   and orders move on, within the heartbeat timeout and one monitor tick of
   that turn. It gives its own leases up before then, as a worker cut off
   from the database does, and rejoins once a turn works again.
2. A handler shows it is alive by returning, reporting a stage, or calling
   `still_working()` (between stages; the shop's simulated and staffed kitchens do,
   every PIZZAQUEUE_KITCHEN_CHECK_INTERVAL). Its order's lease is renewed only
   from its last sign of life, so an order whose handler went silent (blocked
   for ever, deadlocked) expires and is retried elsewhere within the timeout
   and one tick of its silence; whatever the handler does later is fenced off.
3. While every slot is taken by a handler silent for longer than the timeout
   less the lease margin, the worker can start nothing: it declares itself
   dead (its orders move on at once) and exits with EXIT_STUCK, because a
   blocked Python thread cannot be freed; its supervisor starts it again.
"""

from __future__ import annotations

import logging
import os
import queue as stdlib_queue
import secrets
import signal
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import FrameType

from django.conf import settings
from django.db import DatabaseError, DataError, IntegrityError, connection, connections

from workers import membership, monitor, queue, sql, storable
from workers.listening import for_worker, listen_params
from workers.models import CLOSED, Order, Worker
from workers.prefetch import PrefetchPolicy

logger = logging.getLogger(__name__)


# What a worker runs for each order: `handler(order, progress)`. It reports stages
# through `progress(stage)` and fails the attempt by raising; returning normally
# means the order is done (the loop then completes it, fenced by its lease).
Progress = Callable[[str], None]
Handler = Callable[[Order, Progress], None]


class LeaseLostError(Exception):
    """Raised inside a handler when its order was taken away: stop baking it."""


class StageRefusedError(Exception):
    """Raised inside a handler when the database refused its stage report for what it
    holds: the order's trouble, so the attempt is charged and the order ends failed
    once its attempts are spent, instead of looping between workers."""


class DatabaseUnavailableError(Exception):
    """Raised inside a handler when its stage report could not reach the database:
    the worker's trouble, not the order's, so the attempt is not charged."""


class HandedOverError(Exception):
    """Raised by a handler that passes its order on because its kitchen is stopping
    (`shift_over`): a person's ticket, which the shop's next process takes up where it
    stood (`queue.HANDED_OVER`). The worker's stop, not the order's trouble: no attempt
    is charged."""


# A worker whose every slot is stuck exits with this code (rule 3 above).
EXIT_STUCK = 3

# How long every slot must be seen stuck before the worker gives up on them (at most
# half the lease margin, so it leaves before its heartbeats' last vouch runs out).
STUCK_CONFIRMATION = 0.5

# The sign of life of the handler baking in this thread: [monotonic time].
_baking = threading.local()


def still_working() -> None:
    """Tell the worker that the handler calling this (in a baking thread) is alive.

    A handler silent for longer than the heartbeat timeout loses its order
    (the module docstring's rule 2); one that waits between stages calls this
    at least that often. It writes nothing, so it may be called freely.
    """
    alive = getattr(_baking, "alive", None)
    if alive is not None:
        alive[0] = time.monotonic()


def shift_over() -> bool:
    """Whether the kitchen running the calling handler (in a baking thread) is stopping:
    a handler waiting on people rather than on an oven hands its order over
    (HandedOverError) instead of keeping the stop waiting for the shutdown grace."""
    stopping = getattr(_baking, "stopping", None)
    return stopping is not None and stopping.is_set()


# How soon a heartbeat that failed is tried again (the interval is for beats that worked).
HEARTBEAT_RETRY = 0.25
# A worker gives its leases up this far (a share of the timeout) before they could expire.
LEASE_MARGIN = 0.25


@dataclass(frozen=True)
class Finished:
    claim: queue.Claim
    error: str | None  # None: done; otherwise the failure message
    lease_lost: bool = False
    charged: bool = True  # False: interrupted by the database, handed back as unstarted
    handed_over: bool = False  # passed on by a stopping kitchen, not charged (HandedOverError)


class WorkerLoop:
    """A worker process: see the module docstring for the shape of the loop."""

    def __init__(
        self,
        handler: Handler,
        *,
        name: str | None = None,
        concurrency: int = 1,
        prefetch: int | None = None,
        horizon: float = 0.15,
        burst: bool = False,
        max_orders: int | None = None,
    ) -> None:
        self.handler = handler
        # Recorded on the worker's row: the displays tell a staffed worker by it.
        self.handler_path = f"{getattr(handler, '__module__', '')}.{getattr(handler, '__qualname__', '')}"
        # Customers read a worker's name on their timeline: the default says nothing of the machine.
        self.name = name or f"kitchen-{secrets.token_hex(3)}"
        self.concurrency = concurrency
        self.prefetch = prefetch
        self.policy = PrefetchPolicy(concurrency, horizon, prefetch)
        self.burst = burst
        self.max_orders = max_orders
        self.record: Worker | None = None
        self.claimed_total = 0
        # Claimed orders move pending -> running under `_lock`: baking threads take
        # the next pending order themselves, so a slot never waits for the main
        # thread's round trips, while a stop releases exactly what no thread took.
        self.pending: deque[queue.Claim] = deque()  # claimed, not started
        self.running: dict[object, queue.Claim] = {}  # started, not finished
        # The last sign of life of each started order's handler (`still_working`).
        self.alive_at: dict[object, list[float]] = {}
        self._lock = threading.Lock()
        self._bakers = 0  # baking threads started and not yet out of pending orders
        self.unflushed: list[Finished] = []  # finished, not yet written
        self.finished: stdlib_queue.SimpleQueue[Finished] = stdlib_queue.SimpleQueue()
        self.wake = threading.Event()
        self.stopping = False
        # `stopping`, for the handlers' threads (`shift_over`).
        self._stopping = threading.Event()
        self.draining = False
        self.exit_code = 0
        self._closing = threading.Event()
        self._previous_handlers: dict[int, object] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._next_heartbeat = 0.0
        self._next_monitor = 0.0
        self._stop_deadline: float | None = None
        # After a database error, a claim may have committed without its answer
        # reaching us: the next turn hands back whatever we hold but do not know.
        self._unsure_of_claims = False
        # When the last heartbeat that worked was sent (monotonic): every lease this
        # worker holds lasts at least the timeout from then, by the database's clock.
        self._renewed_at = 0.0
        # Out of touch past its leases: baking nothing more until it rejoins.
        self.cut_off = False
        # When the last turn whose writes all went through began (monotonic).
        self._progressed_at = 0.0
        # The last heartbeat that got through (monotonic), and what giving up leases decided.
        self._beat_ok_at = 0.0
        # Since when its heartbeats have got through without a gap (monotonic): the
        # monitor judges others' silence only once it has watched for a whole timeout.
        self._in_touch_since = 0.0
        self._registered_at = 0.0
        self._stalled = False
        self._stall_backoff = 0.0
        self._rejoin_after = 0.0
        self._left = False
        # When every slot was first seen stuck (`slots_stuck`).
        self._stuck_seen: float | None = None

    # --- lifecycle -------------------------------------------------------------

    def run(self) -> int:
        """Run until stopped by a signal, a drain, --burst or --max-orders; returns the exit code."""
        self.configure_signals()
        try:
            self.register()
            self._executor = ThreadPoolExecutor(self.concurrency, thread_name_prefix="bake")
            if connection.vendor == "postgresql":
                threading.Thread(target=self._listen, name="listen", daemon=True).start()
            while self.step():
                pass
            self.finish()
        finally:
            self._closing.set()
            self.reset_signals()
            if self._executor is not None:
                self._executor.shutdown(wait=False, cancel_futures=True)
        return self.exit_code

    def register(self) -> None:
        sent = time.monotonic()
        self.record = membership.register(
            self.name, socket.gethostname(), os.getpid(), self.concurrency, handler=self.handler_path
        )
        self._renewed_at = sent
        self._progressed_at = sent
        self._beat_ok_at = sent
        self._in_touch_since = sent
        self._registered_at = sent
        self.cut_off = False
        now = time.monotonic()
        self._next_heartbeat = now + settings.PIZZAQUEUE_HEARTBEAT_INTERVAL
        self._next_monitor = now
        logger.info("worker started name=%s id=%s concurrency=%d", self.record, self.record.pk, self.concurrency)

    def configure_signals(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous_handlers[sig] = signal.signal(sig, self._on_signal)

    def reset_signals(self) -> None:
        for sig, previous in self._previous_handlers.items():
            signal.signal(sig, previous)  # type: ignore[arg-type]
        self._previous_handlers.clear()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.stopping:
            # Second signal: leave now. The monitor re-queues what this worker held.
            logger.warning("forced exit on second signal=%s", signal.Signals(signum).name)
            os._exit(1)
        logger.warning(
            "stopping on signal=%s: finishing %d in-flight orders", signal.Signals(signum).name, len(self.running)
        )
        self.begin_stop()

    def begin_stop(self) -> None:
        self.stopping = True
        self._stopping.set()
        self._stop_deadline = time.monotonic() + settings.PIZZAQUEUE_SHUTDOWN_GRACE
        self.wake.set()

    def finish(self) -> None:
        """Leave cleanly: write what finished, hand back the rest, leave the ring."""
        self.flush()
        self._release_pending()
        if self.record is not None:
            membership.stop(self.record.pk, CLOSED if self.draining else "stopped")
            monitor.resign(self.record.pk)
            logger.info("worker stopped name=%s", self.record)

    # --- one turn of the loop ----------------------------------------------------

    def step(self) -> bool:
        """One turn: heartbeat and monitor when due, flush, claim, start. False when done."""
        self.wake.clear()
        if self.slots_stuck():
            self._leave_stuck()
            return False
        if not self.cut_off and self.leases_lapsed():
            self._give_up_leases()
        turn = time.monotonic()
        try:
            self.heartbeat_if_due()
            self.monitor_if_due()
            self.flush()
            self.hand_back_unanswered_claims()
            claimed = self.fill()
        except Exception:
            # A lost connection (database restart, network), or a write refused:
            # drop the connection and retry on the next turn. Nothing is lost:
            # unwritten results stay in `unflushed`, and a claim that committed
            # unanswered is handed back next turn. A turn that failed is no
            # progress, so the heartbeats stop vouching for this worker from its
            # last good turn (module docstring, rule 1): when the trouble lasts,
            # its orders move on instead of waiting for it.
            logger.exception("turn failed; reconnecting")
            self._unsure_of_claims = True
            connections.close_all()
            self.wake.wait(min(1.0, settings.PIZZAQUEUE_POLL_INTERVAL * 4))
            return True
        self._progressed_at = turn
        if self._done():
            return False
        if claimed and not self.stopping:
            return True  # a full batch likely means more work: skip the wait
        self.wake.wait(self._wait_time())
        return True

    def _done(self) -> bool:
        idle = not self.running and not self.pending and not self.unflushed
        if self.stopping or self.draining:
            overdue = self._stop_deadline is not None and time.monotonic() >= self._stop_deadline
            return idle or overdue
        if self.max_orders is not None and self.claimed_total >= self.max_orders:
            return idle
        return False

    def _wait_time(self) -> float:
        now = time.monotonic()
        until = min(self._next_heartbeat, self._next_monitor) - now
        return max(0.0, min(settings.PIZZAQUEUE_POLL_INTERVAL, until))

    def heartbeat_if_due(self) -> None:
        if time.monotonic() < self._next_heartbeat or self.record is None:
            return
        # Until this beat succeeds, the next one is due soon: a beat lost to a
        # database error must not cost a whole interval of the timeout.
        self._next_heartbeat = time.monotonic() + min(HEARTBEAT_RETRY, settings.PIZZAQUEUE_HEARTBEAT_INTERVAL)
        if self.cut_off:
            self._rejoin()
            return
        sent = time.monotonic()
        vouched = self.vouched_at()
        leases = {token: sent - at for token, at in self.held_leases(vouched).items()}
        try:
            status = membership.heartbeat(self.record.pk, leases, idle_for=sent - vouched)
        except membership.WorkerLostError:
            self._reincarnate()
            return
        self._renewed_at = vouched
        answered = time.monotonic()
        if answered - self._beat_ok_at > 2 * settings.PIZZAQUEUE_HEARTBEAT_INTERVAL:
            # Back after a gap (beats that failed, or one that waited on a lock that long):
            # the database was away from here, so others' silence proves nothing yet.
            self._in_touch_since = answered
        self._beat_ok_at = sent
        interval = settings.PIZZAQUEUE_HEARTBEAT_INTERVAL
        if sent - vouched > interval:
            # This beat could vouch only for a turn long past (the first after an outage,
            # before any turn worked again): its leases run from then. The next beat goes
            # as soon as a turn has worked, not an interval later, or at the default clocks
            # the leases would lapse first and an outage of half the timeout would end the
            # incarnation it was meant to spare (`bench/outage.py`).
            interval = min(HEARTBEAT_RETRY, interval)
        self._next_heartbeat = time.monotonic() + interval
        if status == Worker.Status.DRAINING and not self.draining:
            logger.warning("draining on operator request name=%s", self.record)
            self.draining = True
            # A drain is a stop that waits for the work in hand, within the same grace.
            self._stop_deadline = time.monotonic() + settings.PIZZAQUEUE_SHUTDOWN_GRACE

    def held_tokens(self) -> set[uuid.UUID]:
        """The lease tokens of every order this worker has in hand: claimed and
        not started, baking, or finished and not yet written."""
        # Running before finished: a baking thread puts its result in `finished`
        # before leaving `running`, so read in this order no order slips between.
        with self._lock:
            claims = [*self.pending, *self.running.copy().values()]
        self._collect_finished()
        claims += [f.claim for f in self.unflushed]
        return {c.token for c in claims}

    def vouched_at(self) -> float:
        """The monotonic time up to which this worker vouches for its progress
        (module docstring): its last good turn, and while every slot is taken,
        no later than the freshest sign of life among their handlers."""
        lives = [alive[0] for alive in self.alive_at.copy().values()]
        if lives and len(lives) >= self.concurrency:
            return min(self._progressed_at, max(lives))
        return self._progressed_at

    def held_leases(self, vouched: float) -> dict[uuid.UUID, float]:
        """Each held lease's token, with the monotonic time its renewal counts from:
        the worker's `vouched` time, and for an order being baked no later than
        its handler's last sign of life."""
        with self._lock:
            pending = list(self.pending)
            running = self.running.copy()
        alive = self.alive_at.copy()
        self._collect_finished()
        leases = {c.token: vouched for c in [*pending, *(f.claim for f in self.unflushed)]}
        for order_id, claim in running.items():
            life = alive.get(order_id)
            leases[claim.token] = min(vouched, life[0]) if life is not None else vouched
        return leases

    def slots_stuck(self) -> bool:
        """Whether every slot is taken by a handler silent for longer than the
        timeout less the lease margin (module docstring, rule 3)."""
        lives = [alive[0] for alive in self.alive_at.copy().values()]
        if not lives or len(lives) < self.concurrency:
            self._stuck_seen = None
            return False
        now = time.monotonic()
        if now - max(lives) < settings.PIZZAQUEUE_HEARTBEAT_TIMEOUT * (1 - LEASE_MARGIN):
            self._stuck_seen = None
            return False
        # Seen twice, a moment apart: a process resumed after a pause (SIGSTOP, a
        # suspended machine) finds every handler silent for as long as the pause,
        # and its handlers must get a moment to run before they are judged.
        if self._stuck_seen is None:
            self._stuck_seen = now
        confirm = min(STUCK_CONFIRMATION, settings.PIZZAQUEUE_HEARTBEAT_TIMEOUT * LEASE_MARGIN / 2)
        return now - self._stuck_seen >= confirm

    def _leave_stuck(self) -> None:
        """Every slot is stuck: nothing more can be baked by this process. Leave the
        ring at once, so its orders and buckets move on now rather than at the
        timeout, and stop with EXIT_STUCK for the supervisor to start a fresh one."""
        logger.error("every baking slot stuck: leaving the ring name=%s", self.record)
        self.exit_code = EXIT_STUCK
        self.stopping = True
        with self._lock:
            self.pending.clear()  # their leases go with the verdict below
        if self.record is not None and not self.cut_off:
            try:
                monitor.declare_dead(self.record.pk, "every baking slot stuck")
            except DatabaseError:
                # Its heartbeats stop with it: the monitor's verdict comes at the timeout.
                logger.exception("could not leave the ring name=%s", self.record)

    def hand_back_unanswered_claims(self) -> None:
        if not self._unsure_of_claims or self.record is None or self.cut_off:
            # Cut off, it rejoins by leaving first, which takes back everything the old
            # incarnation held, charged: orders it started and gave up are not unanswered.
            return
        queue.hand_back_unanswered(self.record.pk, self.held_tokens())
        self._unsure_of_claims = False

    # --- leases that expire on their own -------------------------------------------------

    def leases_lapsed(self) -> bool:
        """Whether the leases this worker holds may have run out, by its own monotonic
        clock: no heartbeat has worked for the timeout less a margin. Past that the
        monitor may give its orders to another worker at any moment."""
        timeout = settings.PIZZAQUEUE_HEARTBEAT_TIMEOUT
        return time.monotonic() >= self._renewed_at + timeout * (1 - LEASE_MARGIN)

    def _give_up_leases(self) -> None:
        """Cut off from the database past its leases (a network cut, a stalled server):
        stop baking before anyone else may start the same orders. Handlers stop at
        their next stage report; nothing new starts; the worker rejoins as a new
        incarnation once the database answers (`_rejoin`)."""
        now = time.monotonic()
        # Heartbeats went on after the last good turn: the database answers, but
        # nothing gets done (module docstring, rule 1). Rejoining at once would take
        # the buckets straight back from the workers that can serve them, so the
        # worker stays out for a timeout, twice as long each time it stalls again soon.
        self._stalled = self._beat_ok_at > self._renewed_at + settings.PIZZAQUEUE_HEARTBEAT_INTERVAL
        if self._stalled:
            timeout = settings.PIZZAQUEUE_HEARTBEAT_TIMEOUT
            recent = now - self._registered_at < 2 * timeout + self._stall_backoff
            self._stall_backoff = min(max(self._stall_backoff * 2, timeout), 8 * timeout) if recent else timeout
            self._rejoin_after = now + self._stall_backoff
        else:
            self._rejoin_after = 0.0
        logger.warning(
            "%s for %.1fs: giving up every lease name=%s",
            "no progress" if self._stalled else "no heartbeat",
            now - self._renewed_at,
            self.record,
        )
        self.cut_off = True
        self._left = False
        with self._lock:
            self.pending.clear()  # never started; their leases run out in the database

    def _rejoin(self) -> None:
        """Back in touch after giving its leases up. After an outage (the database or
        the link was away) it carries on as the same worker (`_resume`); after a stall,
        or if a monitor that could see the database declared it dead meanwhile, it
        leaves as the old incarnation (what it held goes back to the queue, if the
        monitor has not done so yet) and joins as a new one."""
        assert self.record is not None  # noqa: S101 - only called with a record
        if not self._stalled and not self._left and self._resume():
            return
        if not self._left:
            why = "no progress past its leases" if self._stalled else "out of touch with the database past its leases"
            monitor.declare_dead(self.record.pk, why)
            self._left = True
        if time.monotonic() < self._rejoin_after:
            return  # out of the ring, holding nothing: no one waits for it
        logger.warning("rejoining after giving up its leases name=%s", self.record)
        self._start_again()

    def _resume(self) -> bool:
        """An outage is not a death (SPEC §4.11): back in touch, the worker is the same
        worker, unless a monitor declared it dead meanwhile (False). What it gave up (the
        claims it had not started, the orders whose handlers stopped) goes back to the
        queue with no attempt charged; what its handlers are still making, it keeps."""
        assert self.record is not None  # noqa: S101 - only called with a record
        sent = time.monotonic()
        self._collect_finished()
        # Results of orders given up are handed back below, uncharged; finished ones are kept.
        self.unflushed = [f for f in self.unflushed if not f.lease_lost]
        with self._lock:
            kept = {c.token for c in self.running.copy().values()} | {f.claim.token for f in self.unflushed}
        try:
            membership.heartbeat(self.record.pk, kept)
        except membership.WorkerLostError:
            return False  # judged by a monitor in touch with the database: a partition, not an outage
        queue.hand_back_unanswered(self.record.pk, kept, reason=queue.INTERRUPTED)
        self.cut_off = False
        self._renewed_at = self._beat_ok_at = self._progressed_at = self._in_touch_since = sent
        self._next_heartbeat = sent + settings.PIZZAQUEUE_HEARTBEAT_INTERVAL
        logger.warning("back in touch name=%s: carrying on as the same worker", self.record)
        return True

    def _reincarnate(self) -> None:
        """Declared dead while alive (paused, partitioned): everything held was
        re-queued by the monitor, so results of in-flight work will be fenced
        off (`lease-lost`); start again as a new incarnation."""
        logger.warning("declared dead while running name=%s; re-registering", self.record)
        with self._lock:
            self.pending.clear()  # their leases are gone with the old incarnation
        self._start_again()

    def _start_again(self) -> None:
        """The next incarnation, unless the worker is stopping anyway."""
        if self.stopping:
            self.record = None
            return
        self.register()

    def monitor_if_due(self) -> None:
        if time.monotonic() < self._next_monitor or self.record is None or self.cut_off:
            return
        self._next_monitor = time.monotonic() + settings.PIZZAQUEUE_MONITOR_INTERVAL
        monitor.tick(self.record.pk, in_touch_for=time.monotonic() - self._in_touch_since)

    def _collect_finished(self) -> None:
        while True:
            try:
                self.unflushed.append(self.finished.get_nowait())
            except stdlib_queue.Empty:
                return

    def flush(self) -> bool:
        """Write every finished order: completions in one batch, failures one by one."""
        self._collect_finished()
        if not self.unflushed or self.record is None:
            return False
        worker_id = self.record.pk
        # Drop each result from `unflushed` only once written, so a database
        # error part-way leaves exactly the unwritten ones for the next turn.
        done = [(f.claim.order.id, f.claim.token) for f in self.unflushed if f.error is None]
        if done:
            queue.complete_many(done, worker_id)
            self.unflushed = [f for f in self.unflushed if f.error is not None]
        while self.unflushed:
            failed = self.unflushed[0]
            held = failed.claim.order.id, failed.claim.token
            if failed.handed_over:
                queue.release([held], worker_id, reason=queue.HANDED_OVER)
            elif not failed.charged:
                queue.release([held], worker_id, reason=queue.INTERRUPTED)
            elif not failed.lease_lost:  # a lost lease was recorded when it was noticed
                queue.fail(*held, failed.error or "", worker_id)
            self.unflushed.pop(0)
        return True

    def fill(self) -> bool:
        """Claim what the policy asks for and start what fits; True if the batch came back full.

        Baking threads take claimed orders themselves, so under load the
        slots keep baking during this thread's round trips and each claim
        tops up everything started meanwhile.
        """
        full = False
        if self.stopping:
            # Unstarted orders go back at once, for live workers to take, not after the grace period.
            self._release_pending()
        elif not self.draining and not self.cut_off and self.record is not None:
            want = self._claim_size()
            if self.max_orders is not None:
                want = min(want, self.max_orders - self.claimed_total)
            if want > 0:
                claims = queue.claim(self.record.pk, want)
                self.claimed_total += len(claims)
                self.pending.extend(claims)
                full = len(claims) == want
                if self.burst and not claims and not self.running and not self.pending:
                    self.begin_stop()
        with self._lock:
            start = 0 if self.stopping else min(len(self.pending), self.concurrency - self._bakers)
            self._bakers += start
        for _ in range(start):
            assert self._executor is not None  # noqa: S101 - set in run()
            self._executor.submit(self._bake_pending)
        return full

    def _claim_size(self) -> int:
        """Orders to claim now (`workers.prefetch`): what will start within the horizon, at least the free slots."""
        with self._lock:
            return self.policy.want(len(self.running), len(self.pending), time.monotonic())

    def _release_pending(self) -> None:
        with self._lock:
            unstarted = list(self.pending)
            self.pending.clear()
        if unstarted and self.record is not None:
            queue.release([(c.order.id, c.token) for c in unstarted], self.record.pk)

    # --- in a baking thread ----------------------------------------------------------

    def _bake_pending(self) -> None:
        """Bake pending orders one after another until none is left (or the worker stops).

        Each handler call is timed for the claim policy, whose rate is the
        slots over the handlers' mean duration.
        """
        baked: float | None = None
        counted = True
        try:
            while True:
                with self._lock:
                    if baked is not None:
                        self.policy.finished(baked)
                    if self.stopping or not self.pending:
                        # Under the lock that `fill` counts free slots with: an order
                        # claimed after this check finds the slot free.
                        self._bakers -= 1
                        counted = False
                        return
                    claim = self.pending.popleft()
                    self.running[claim.order.id] = claim
                started = time.monotonic()
                self._bake(claim)
                baked = time.monotonic() - started
        finally:
            if counted:
                # Left by an error of the loop's own (never a handler's: `_bake` keeps
                # those): the slot is free again, or the worker would lose it for good.
                with self._lock:
                    self._bakers -= 1
                self.wake.set()

    def _bake(self, claim: queue.Claim) -> None:
        """Run the handler on one order and hand its result to the main thread.

        Whatever the handler raises fails the attempt (SPEC §4.12), BaseException
        included: SystemExit, KeyboardInterrupt, a cancelled task. None of them
        can come from a signal to the process, as Python runs signal handlers
        only in the main thread (`_on_signal`), so here they are the handler's
        own and the worker goes on. Only a normal return completes the order.
        """
        worker_id = self.record.pk if self.record is not None else None
        result: Finished | None = None
        alive = [time.monotonic()]
        self.alive_at[claim.order.id] = alive
        _baking.alive = alive
        _baking.stopping = self._stopping
        try:
            self.handler(claim.order, self._progress(claim, worker_id))
            result = Finished(claim, None)
        except LeaseLostError:
            result = Finished(claim, "lease lost", lease_lost=True)
        except HandedOverError:
            logger.info("handing order=%s over to the shop's next process", claim.order.id)
            result = Finished(claim, "handed over", charged=False, handed_over=True)
        except DatabaseUnavailableError as exc:
            logger.warning("database error while baking order=%s; handing it back: %s", claim.order.id, exc)
            result = Finished(claim, storable.error(exc), charged=False)
            connection.close()  # this thread's connection; reopened on next use
        except BaseException as exc:
            result = Finished(claim, storable.error(exc))
            if isinstance(exc, DatabaseError):
                connection.close()  # this thread's connection; reopened on next use
            logger.error("handler failed order=%s: %s", claim.order.id, result.error, exc_info=exc)
        finally:
            if result is None:
                # Recording the failure itself raised: still a failure, never a completion.
                result = Finished(claim, "The handler failed in a way that could not be recorded.")
            _baking.alive = None
            # Result first: the loop must never see the order neither running nor finished.
            self.finished.put(result)
            self.running.pop(claim.order.id, None)
            self.alive_at.pop(claim.order.id, None)
            self.wake.set()

    def _progress(self, claim: queue.Claim, worker_id: int | None) -> Callable[[str], None]:
        def progress(stage: str) -> None:
            still_working()
            if self.cut_off or self.leases_lapsed() or self.record is None or self.record.pk != worker_id:
                # Its lease may be another worker's by now: stop before writing or baking more.
                raise LeaseLostError(str(claim.order.id))
            try:
                reported = queue.report_stage(claim.order.id, claim.token, stage, worker_id)
            except (DataError, IntegrityError) as exc:
                # Refused for what was written, not for how the database is: it would be
                # refused again by every worker, so the attempt is charged, not handed back.
                raise StageRefusedError(f"stage {storable.stage(stage)!r} refused: {exc}") from exc
            except DatabaseError as exc:
                raise DatabaseUnavailableError(f"stage {stage!r} not recorded: {exc}") from exc
            if not reported:
                raise LeaseLostError(str(claim.order.id))

        return progress

    # --- waking up on PostgreSQL NOTIFY ------------------------------------------------

    def _listen(self) -> None:
        """Wake the loop the moment an order becomes claimable; reconnect on errors."""
        import psycopg

        params = listen_params(f"pizzaqueue-listen-{self.name}")
        while not self._closing.is_set():
            try:
                with psycopg.connect(**params, autocommit=True) as conn:
                    conn.execute(sql.queries["listen_orders"])
                    self.wake.set()  # catch up on anything placed while not listening
                    while not self._closing.is_set():
                        for note in conn.notifies(timeout=1.0):
                            record = self.record
                            if for_worker(note.payload, record.pk if record is not None else None):
                                self.wake.set()
            except psycopg.Error:
                logger.warning("listener lost its connection; retrying", exc_info=True)
                self._closing.wait(1.0)
