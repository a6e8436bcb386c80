"""The monitor: one elected worker at a time finds dead workers, recovers
expired leases and keeps every bucket owned.

Read top to bottom: `tick` is one round, then each of its steps (the
election, declaring a worker dead, recovering expired leases, rebalancing
the buckets), with the queue operations they call for the orders.

Election is a lease row (`MonitorLease`) taken with a conditional UPDATE, so
it works the same on PostgreSQL and SQLite: the holder renews it every tick,
and when the holder dies anyone may take it once it expires. The lease lasts
one heartbeat timeout, so even when the monitor itself dies, its own death is
noticed within heartbeat_timeout + one monitor tick.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import OperationalError, connection, transaction
from django.db.models import Count, F, Max, Q
from django.utils.module_loading import import_string

from workers import clock, queue, recovery, rerouting, ring, sql
from workers.models import Bucket, BucketMove, MonitorLease, Order, OrderEvent, Worker

logger = logging.getLogger(__name__)

LEASE_NAME = "monitor"
# Arbitrary constant naming the advisory lock that serialises rebalancing on PostgreSQL.
RING_LOCK_KEY = 0x70697A7A  # "pizz"


@dataclass
class Recovery:
    """What a round, a worker's leaving or a lease sweep did, for logs, admin and tests."""

    dead: list[int] = field(default_factory=list)
    requeued: list[uuid.UUID] = field(default_factory=list)
    failed: list[uuid.UUID] = field(default_factory=list)
    cancelled: list[uuid.UUID] = field(default_factory=list)
    moved_buckets: int = 0

    def add(self, other: Recovery) -> None:
        self.dead += other.dead
        self.requeued += other.requeued
        self.failed += other.failed
        self.cancelled += other.cancelled
        self.moved_buckets += other.moved_buckets

    def __bool__(self) -> bool:
        return bool(self.dead or self.requeued or self.failed or self.cancelled or self.moved_buckets)


def tick(worker_id: int, now: datetime | None = None, in_touch_for: float = float("inf")) -> Recovery | None:
    """One monitor round, if this worker holds the election; None otherwise.

    1. Declare dead every live worker whose heartbeat is older than the timeout
       (re-queueing its orders and moving its buckets, in one transaction each).
    2. Re-queue orders whose lease expired under a worker still deemed alive, and
       cancel the takeaway orders of shops that closed (`close_closed_shops`).
    Both only once this monitor has itself been in touch with the database for
    a whole timeout (`in_touch_for`, seconds, by its own monotonic clock): a
    heartbeat missed while the database was away (a restart, a failover, a cut
    link) is the database's silence, not the worker's death, and every worker
    that is alive heartbeats again within that time.
    3. Give any ownerless bucket an owner (e.g. after the last worker left and
       a new one joined), and follow a change of PIZZAQUEUE_BUCKETS
       (`resize_buckets`). Once the table matches, this step only reads.
    4. With PIZZAQUEUE_STAGE_RETRY, give orders whose stage overran its limit to
       another worker (`retry_overdue_stages`).
    5. Run the application's own duty (PIZZAQUEUE_MONITOR_DUTY, a function of the
       time): the shop keeps its customers' promises there (`run_duty`).
    """
    now = now or clock.now()
    # The walk of a resize this process made, whether or not it holds the election.
    rerouting.continue_walk(settings.PIZZAQUEUE_BUCKETS)
    if not acquire(worker_id, now):
        return None
    report = Recovery()
    judging = in_touch_for >= settings.PIZZAQUEUE_HEARTBEAT_TIMEOUT
    stale = Worker.objects.stale(now, settings.PIZZAQUEUE_HEARTBEAT_TIMEOUT).order_by("last_heartbeat")
    for pk in stale.values_list("pk", flat=True) if judging else []:
        try:
            # The verdict is checked again inside its transaction (still stale, still
            # our election): this list may be old by then if this process was paused.
            tally = declare_dead(pk, "missed heartbeats", now, monitor_id=worker_id)
        except OperationalError as exc:
            # A lock held by a paused process (`lock_timeout`): the others must not wait on it.
            logger.warning("monitor skipped worker=%s this round: %s", pk, exc)
            continue
        if tally is not None:
            report.add(tally)
    if judging:
        report.add(recover_expired_leases(now, monitor_id=worker_id))
        report.cancelled += close_closed_shops(now, monitor_id=worker_id)
    count = settings.PIZZAQUEUE_BUCKETS
    stranded = Order.objects.filter(status=Order.Status.QUEUED, bucket__gte=count)
    if Bucket.objects.orphaned().exists() or not buckets_are(count) or stranded.exists():
        try:
            with transaction.atomic():
                lock_ring(wait=monitor_lock_wait())
                if holds_election(worker_id, now):
                    report.moved_buckets += len(rebalance(now, BucketMove.Reason.REBALANCE))
        except OperationalError as exc:
            logger.warning("monitor skipped rebalancing this round: %s", exc)
    if settings.PIZZAQUEUE_STAGE_RETRY:
        report.requeued += retry_overdue_stages(now, monitor_id=worker_id)
    run_duty(settings.PIZZAQUEUE_MONITOR_DUTY, now)
    if report:
        logger.warning(
            "monitor worker=%s dead=%s requeued=%d failed=%d cancelled=%d moved=%d",
            worker_id,
            report.dead,
            len(report.requeued),
            len(report.failed),
            len(report.cancelled),
            report.moved_buckets,
        )
    return report


def run_duty(path: str, now: datetime) -> None:
    """The application's duty for this round, by its dotted path ("" for none), at the
    database's time. It is the application's code: whatever it raises is logged and the
    round goes on, so a fault in it never keeps the monitor from recovering orders."""
    if not path:
        return
    try:
        import_string(path)(now)
    except Exception:
        logger.exception("monitor duty %s failed this round", path)


# --- The election ------------------------------------------------------------------


def acquire(worker_id: int, now: datetime | None = None) -> bool:
    """Take or renew the monitor lease; True when this worker holds it."""
    now = now or clock.now()
    expires = now + timedelta(seconds=settings.PIZZAQUEUE_HEARTBEAT_TIMEOUT)
    held_elsewhere = MonitorLease.objects.filter(name=LEASE_NAME, expires_at__gte=now).exclude(holder_id=worker_id)
    if held_elsewhere.exclude(holder__isnull=True).exists():
        # Most rounds end here, with a read: no write transaction (and, on
        # SQLite, no write lock) for the workers that are not the monitor.
        return False
    try:
        with transaction.atomic():
            # A monitor paused mid-verdict holds this row: wait a tick for it, not the pause.
            give_up_on_locks_after(monitor_lock_wait())
            lease, created = MonitorLease.objects.get_or_create(
                name=LEASE_NAME, defaults={"holder_id": worker_id, "expires_at": expires}
            )
            if created:
                return True
            return bool(
                MonitorLease.objects.filter(name=LEASE_NAME)
                .filter(Q(holder_id=worker_id) | Q(holder__isnull=True) | Q(expires_at__lt=now))
                .update(holder_id=worker_id, expires_at=expires)
            )
    except OperationalError as exc:
        logger.warning("monitor election not decided this round: %s", exc)
        return False


def resign(worker_id: int) -> None:
    """Hand the duty on at once on a clean stop, instead of letting the lease run out."""
    MonitorLease.objects.filter(name=LEASE_NAME, holder_id=worker_id).update(holder=None)


def holds_election(worker_id: int, now: datetime) -> bool:
    """Inside a transaction: this worker still holds the monitor lease at `now`,
    and keeps it until commit (the row is locked, so no one takes it meanwhile)."""
    return (
        MonitorLease.objects.select_for_update()
        .filter(name=LEASE_NAME, holder_id=worker_id, expires_at__gte=now)
        .exists()
    )


def monitor_lock_wait() -> float:
    """How long a monitor's statement waits for a lock before it gives up for this
    round: one tick, at most a second, so a row locked by a paused process delays
    the others' verdicts by that much, not for as long as the pause lasts."""
    return min(1.0, settings.PIZZAQUEUE_MONITOR_INTERVAL)


# --- A worker leaves the ring ----------------------------------------------------------


def declare_dead(
    worker_id: int,
    reason: str = "missed heartbeats",
    now: datetime | None = None,
    monitor_id: int | None = None,
    actor_id: int | None = None,
) -> Recovery | None:
    """The monitor's (or an operator's) verdict on a silent worker; None if it was not live.

    From the monitor (`monitor_id`), the verdict stands only if, inside its
    transaction, the worker is still stale and the monitor still holds the
    election; its statements give up on a lock after `monitor_lock_wait()`.

    1. Mark it dead, unless something else already took it out of the ring.
    2. Rebalance: its buckets go to live workers.
    3. Tell the customers of the queued delivery orders in its buckets which worker
       has them now. Its shop's takeaway orders stay: they are the shop's, not this
       process's, and wait for its next one (`recovery.close_shops` says when not).
    4. Re-queue the orders it was preparing (an attempt spent), naming the worker
       whose bucket they now sit in (a takeaway order goes back to its shop);
       dead-letter those out of attempts.
    All in one transaction, so nobody sees a dead worker still owning buckets.
    An operator's verdict (`actor_id`) is recorded on every order it moved.
    """
    tally = leave(
        worker_id, Worker.Status.DEAD, reason, BucketMove.Reason.DEATH, now or clock.now(), monitor_id, actor_id
    )
    if tally is not None:
        tally.dead.append(worker_id)
    return tally


def leave(
    worker_id: int,
    status: str,
    reason: str,
    move_reason: str,
    now: datetime,
    monitor_id: int | None = None,
    actor_id: int | None = None,
) -> Recovery | None:
    """Take a live worker out of the ring (dead or stopped), with `declare_dead`'s four steps."""
    with transaction.atomic():
        leaving = Worker.objects.live().filter(pk=worker_id)
        if monitor_id is not None:
            lock_ring(wait=monitor_lock_wait())
            if not holds_election(monitor_id, now):
                return None
            stale_before = now - timedelta(seconds=settings.PIZZAQUEUE_HEARTBEAT_TIMEOUT)
            leaving = leaving.filter(last_heartbeat__lt=stale_before)
        else:
            lock_ring()
        left = leaving.update(status=status, stopped_at=now, stop_reason=reason[:200])
        if not left:
            return None
        moves = rebalance(now, move_reason)
        tally = Recovery(moved_buckets=len(moves))
        why = "died" if status == Worker.Status.DEAD else "stopped"
        # Before its held orders join them in the queue: those get their own `reassigned` events.
        recovery.announce_moved_queue(moves, worker_id, now, why)
        held = list(Order.objects.select_for_update().held_by(worker_id).values_list("id", "attempts", "max_attempts"))
        tally.requeued, tally.failed = recovery.take_back(
            held,
            worker_id,
            now,
            f"worker {why} on the last attempt",
            recovery.reassigned_events(worker_id, now, why, actor_id),
            actor_id,
        )
        queue.notify_work()  # its buckets' queued orders have new owners: wake them
    logger.warning(
        "worker left id=%s status=%s reason=%s requeued=%d failed=%d cancelled=%d",
        worker_id,
        status,
        reason,
        len(tally.requeued),
        len(tally.failed),
        len(tally.cancelled),
    )
    return tally


# --- Expired leases --------------------------------------------------------------------


def recover_expired_leases(now: datetime | None = None, monitor_id: int | None = None) -> Recovery:
    """Re-queue orders whose lease ran out while their worker still looks alive
    (a worker too slow to heartbeat); its late writes will be fenced off.

    From the monitor (`monitor_id`), only while it still holds the election."""
    now = now or clock.now()
    tally = Recovery()
    with transaction.atomic():
        if monitor_id is not None and not holds_election(monitor_id, now):
            return tally
        expired = list(
            Order.objects.select_for_update(skip_locked=True)
            .expired_leases(now)
            .values_list("id", "attempts", "max_attempts")[:1000]
        )
        tally.requeued, tally.failed = recovery.take_back(
            expired, None, now, "lease expired on the last attempt", recovery.lease_expired_events(now)
        )
    return tally


# --- Shops that closed ------------------------------------------------------------------


def close_closed_shops(now: datetime, monitor_id: int | None = None) -> list[uuid.UUID]:
    """Tell the takeaway customers of every shop that closed (`recovery.close_shops`);
    from the monitor, only while it still holds the election."""
    with transaction.atomic():
        if monitor_id is not None and not holds_election(monitor_id, now):
            return []
        return recovery.close_shops(now)


# --- Stages that overran their limit ----------------------------------------------------


def retry_overdue_stages(now: datetime, monitor_id: int | None = None) -> list[uuid.UUID]:
    """Give every order whose current stage has made no progress for longer than its
    limit to another worker (`recovery.retry_overdue`); returns the ids retried.

    The limit is the shop's to say (the app built on the engine): PIZZAQUEUE_STAGE_LIMIT names a function of
    the order that returns seconds (or None: no limit). Takeaway orders stay with
    their worker (only flagged), and so does an order whose worker is the only
    one in the ring. Each retry is its own transaction, fenced by the order's
    token and stage, and made only while this monitor holds the election.
    """
    limit_of = import_string(settings.PIZZAQUEUE_STAGE_LIMIT)
    held = (
        Order.objects.filter(status=Order.Status.PREPARING, pinned_shop="")
        .exclude(worker__isnull=True)
        .order_by("claimed_at")[:1000]
    )
    ring_members = set(Worker.objects.in_ring().values_list("pk", flat=True))
    retried = []
    for order in held:
        limit = limit_of(order)
        since = order.stage_started_at or order.claimed_at
        if limit is None or since is None or since + timedelta(seconds=limit) >= now:
            continue
        if not ring_members - {order.worker_id}:
            continue  # nowhere else to go: the boards flag it
        assert order.lease_token is not None  # noqa: S101 - a preparing order holds a lease
        with transaction.atomic():
            if monitor_id is not None and not holds_election(monitor_id, now):
                break
            if recovery.retry_overdue(order.id, order.lease_token, order.stage, limit, now) == OrderEvent.Kind.RETRIED:
                retried.append(order.id)
    return retried


# --- Rebalancing: the hash ring applied to the Bucket table ------------------------------


def lock_ring(wait: float | None = None) -> None:
    """Serialise membership changes for the rest of the current transaction.

    With `wait` (seconds), this and every later statement of the transaction
    gives up on a lock after that long (PostgreSQL's `lock_timeout`), raising
    OperationalError. SQLite needs nothing: its IMMEDIATE transactions already
    hold the one write lock.
    """
    if connection.vendor == "postgresql":
        if wait is not None:
            give_up_on_locks_after(wait)
        with connection.cursor() as cursor:
            cursor.execute(sql.queries["lock_ring"], [RING_LOCK_KEY])


def give_up_on_locks_after(seconds: float) -> None:
    """For the rest of this transaction, a statement that waits longer than this
    for a lock raises OperationalError (PostgreSQL's `lock_timeout`; SQLite's
    busy timeout is set per connection)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(sql.queries["lock_timeout"], [f"{round(seconds * 1000)}ms"])


def buckets_are(count: int) -> bool:
    """Whether the table holds exactly buckets 0 to count - 1."""
    table = Bucket.objects.aggregate(rows=Count("number"), top=Max("number"))
    return bool(table["rows"] == count and table["top"] == count - 1)


def resize_buckets(count: int) -> bool:
    """Make the table exactly buckets 0 to count - 1, for a changed PIZZAQUEUE_BUCKETS;
    True if it changed.

    The first batch of unfinished orders is re-routed in the same transaction,
    the rest in batches of their own (`workers.rerouting`), so a large backlog
    never holds the ring's lock for long; orders stranded in a bucket that no
    longer exists are swept a batch per monitor round until none is left. Runs
    under the ring's lock, inside `rebalance`'s transaction: a membership change
    and the resize commit together or not at all.
    """
    if buckets_are(count):
        return False
    Bucket.objects.filter(number__gte=count).delete()
    Bucket.objects.bulk_create([Bucket(number=n) for n in range(count)], ignore_conflicts=True)
    moved = rerouting.start_walk(count)
    logger.warning("buckets resized count=%d rerouted=%d (first batch)", count, moved)
    return True


def rebalance(now: datetime, reason: str) -> list[tuple[int, int | None, int]]:
    """Give every bucket a live owner, moving as few as the ring allows.

    `workers.ring` decides who should own what from the live membership; this
    writes the difference. Must run inside the transaction that changed the
    membership, after `lock_ring()`, so a change and its rebalancing commit
    together. Returns the moves as (bucket, from worker id, to worker id).
    """
    count = settings.PIZZAQUEUE_BUCKETS
    resize_buckets(count)
    # Placed by a process still configured with more buckets, or left by a shrink: into
    # one that exists, a batch at a time (the monitor's next round sees any left).
    rerouting.reroute(count, stranded_only=True)
    live = [str(pk) for pk in Worker.objects.in_ring().values_list("pk", flat=True)]
    current = {
        number: (str(owner) if owner is not None else None)
        for number, owner in Bucket.objects.filter(number__lt=count).values_list("number", "owner_id")
    }
    if not live:
        # Nobody to own anything: orphan the buckets so no dead worker appears to own them.
        Bucket.objects.filter(owner__isnull=False).update(owner=None, epoch=F("epoch") + 1)
        return []
    assignment = ring.assign(count, live, current, settings.PIZZAQUEUE_RING_EPSILON)
    moved = ring.moves(current, assignment)
    if not moved:
        return []
    by_target: dict[str, list[int]] = defaultdict(list)
    for number, _source, target in moved:
        by_target[target].append(number)
    for target, numbers in by_target.items():
        Bucket.objects.filter(number__in=numbers).update(owner_id=int(target), epoch=F("epoch") + 1, updated_at=now)
    epochs = dict(Bucket.objects.filter(number__in=[m[0] for m in moved]).values_list("number", "epoch"))
    BucketMove.objects.bulk_create(
        BucketMove(
            bucket=number,
            # Owner ids come from a SET_NULL foreign key, so a source always exists.
            from_worker_id=int(source) if source is not None else None,
            to_worker_id=int(target),
            epoch=epochs[number],
            reason=reason,
            created_at=now,
        )
        for number, source, target in moved
    )
    logger.info("rebalanced reason=%s moved=%d workers=%d", reason, len(moved), len(live))
    return [(n, int(s) if s is not None else None, int(t)) for n, s, t in moved]
