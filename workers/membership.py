"""A worker's own membership of the ring: joining, heartbeating, draining, leaving.

Each call is one transaction. Joining and leaving change who owns the buckets,
so they take the ring's lock and rebalance in the same transaction
(`monitor.rebalance`), and nobody sees a member without its buckets or a
leaver still owning some.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction

from workers import clock, monitor, queue, recovery
from workers.models import CLOSED, BucketMove, Order, Worker

logger = logging.getLogger(__name__)


class WorkerLostError(Exception):
    """This worker incarnation was declared dead (or stopped) by someone else."""


def register(
    name: str, host: str, pid: int, concurrency: int, now: datetime | None = None, handler: str = ""
) -> Worker:
    """Add a worker to the ring; it gets its share of buckets in the same transaction.

    A worker is one incarnation of a shop (its `name`). A live incarnation of the
    same name whose heartbeat is stale is declared dead first (a restart after a
    crash); a fresh one stays: two processes of one shop side by side are a rolling
    redeploy (start the new one, then stop the old), and the shop's takeaway orders
    are either's to make.
    """
    now = now or clock.now()
    with transaction.atomic():
        monitor.lock_ring()
        previous = Worker.objects.filter(name=name).order_by("-incarnation").first()
        if previous is not None and previous.is_live:
            stale_since = now - timedelta(seconds=settings.PIZZAQUEUE_HEARTBEAT_TIMEOUT)
            if previous.last_heartbeat < stale_since:
                monitor.declare_dead(previous.pk, "replaced by a new incarnation", now)
            else:
                logger.info("a second process of shop %s joins beside incarnation %s", name, previous.incarnation)
        worker = Worker.objects.create(
            name=name,
            host=host[:255],
            pid=pid,
            concurrency=concurrency,
            handler=handler[:200],
            started_at=now,
            last_heartbeat=now,
            incarnation=(previous.incarnation + 1) if previous else 1,
        )
        monitor.rebalance(now, BucketMove.Reason.JOIN)
        queue.notify_work()
    logger.info("registered worker=%s id=%s", worker, worker.pk)
    return worker


def heartbeat(
    worker_id: int,
    tokens: Iterable[uuid.UUID] | Mapping[uuid.UUID, float] = (),
    now: datetime | None = None,
    idle_for: float = 0.0,
) -> str:
    """Say "still making progress" and extend the leases the worker knows it holds (`tokens`).

    Only those: an order claimed by a request whose answer never arrived is
    the worker's in the table but not in its hands, and renewing it would keep
    it from everyone for ever (`queue.hand_back_unanswered` returns it).

    A beat vouches for progress, not for a pulse (SPEC §4.12, `workers.loop`):
    the worker's heartbeat is stamped `idle_for` seconds before `now`, when its
    last good turn began, and each lease runs a timeout from then, or from
    further back when `tokens` maps it to more seconds (its handler went silent
    that long ago). So a kitchen that beats but gets nothing done looks silent
    to the monitor from when it stopped getting things done.

    Returns the worker's status (alive or draining); raises WorkerLostError when it
    was declared dead or stopped meanwhile.
    """
    now = now or clock.now()
    ages = tokens if isinstance(tokens, Mapping) else dict.fromkeys(tokens, 0.0)
    vouched = now - timedelta(seconds=max(idle_for, 0.0))
    # Leases renewed from the same moment (to a tenth of a second) share one UPDATE.
    by_age: dict[float, list[uuid.UUID]] = defaultdict(list)
    for token, age in ages.items():
        by_age[round(max(age, idle_for, 0.0), 1)].append(token)
    with transaction.atomic():
        if not Worker.objects.live().filter(pk=worker_id).update(last_heartbeat=vouched):
            raise WorkerLostError(f"worker {worker_id} is no longer live")
        for age, group in by_age.items():
            expires = now - timedelta(seconds=age) + queue.lease_duration()
            Order.objects.held_under(worker_id, group).update(lease_expires_at=expires)
        return Worker.objects.filter(pk=worker_id).values_list("status", flat=True).get()


def drain(worker_id: int, now: datetime | None = None) -> bool:
    """Ask a worker to finish what it holds and stop (it notices on its next heartbeat).

    It leaves the ring at once, in this transaction: its buckets go to the
    other workers, so their queued orders do not wait for its last one, and it
    takes no new takeaway orders. Its stop is bounded by the shutdown grace.
    """
    now = now or clock.now()
    with transaction.atomic():
        monitor.lock_ring()
        if not Worker.objects.in_ring().filter(pk=worker_id).update(status=Worker.Status.DRAINING):
            return False
        moves = monitor.rebalance(now, BucketMove.Reason.DRAIN)
        recovery.announce_moved_queue(moves, worker_id, now, "closing")
        queue.notify_work()
    return True


def stop(worker_id: int, reason: str = "stopped", now: datetime | None = None) -> monitor.Recovery | None:
    """A clean stop: leave the ring and hand back anything still held.

    Whatever the worker still holds (it overran its grace period) is re-queued
    as a retry. Its shop's takeaway orders stay for the shop's next process (a
    restart, a redeploy), unless the worker stops because an operator closed its
    shop (`reason` CLOSED, after `drain`) and no other process of the shop is up:
    then they are cancelled and their customers told, in the same transaction.
    None if the worker was not live.
    """
    now = now or clock.now()
    with transaction.atomic():
        tally = monitor.leave(worker_id, Worker.Status.STOPPED, reason, BucketMove.Reason.STOP, now)
        if tally is not None and reason == CLOSED:
            name = Worker.objects.filter(pk=worker_id).values_list("name", flat=True).get()
            tally.cancelled += recovery.close_shops(now, [name])
    return tally
