"""The monitor duty: one elected worker at a time finds dead kitchens,
recovers expired leases and keeps every bucket owned.

Election is a lease row (`MonitorLease`) taken with a conditional UPDATE, so
it works the same on PostgreSQL and SQLite: the holder renews it every tick,
and when the holder dies anyone may take it once it expires. The lease lasts
one heartbeat timeout, so even when the monitor itself dies, its own death is
noticed within heartbeat_timeout + one monitor tick.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from orders import queue
from workers.buckets import lock_ring, rebalance
from workers.models import Bucket, BucketMove, MonitorLease, Worker

logger = logging.getLogger(__name__)

LEASE_NAME = "monitor"


@dataclass
class MonitorReport:
    dead: list[int] = field(default_factory=list)
    requeued: int = 0
    failed: int = 0
    cancelled: int = 0
    moved_buckets: int = 0


def acquire(worker_id: int, now: datetime | None = None) -> bool:
    """Take or renew the monitor lease; True when this worker holds it."""
    now = now or timezone.now()
    expires = now + timedelta(seconds=settings.PIZZAQUEUE_HEARTBEAT_TIMEOUT)
    held_elsewhere = MonitorLease.objects.filter(name=LEASE_NAME, expires_at__gte=now).exclude(holder_id=worker_id)
    if held_elsewhere.exclude(holder__isnull=True).exists():
        # Most rounds end here, with a read: no write transaction (and, on
        # SQLite, no write lock) for the workers that are not the monitor.
        return False
    with transaction.atomic():
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


def resign(worker_id: int) -> None:
    """Hand the duty on at once on a clean stop, instead of letting the lease run out."""
    MonitorLease.objects.filter(name=LEASE_NAME, holder_id=worker_id).update(holder=None)


def tick(worker_id: int, now: datetime | None = None) -> MonitorReport | None:
    """One monitor round, if this worker holds the election; None otherwise.

    1. Declare dead every live worker whose heartbeat is older than the timeout
       (re-queueing its orders and moving its buckets, in one transaction each).
    2. Re-queue orders whose lease expired under a worker still deemed alive.
    3. Give any ownerless bucket an owner (e.g. after the last worker left and
       a new one joined, or a bucket count change).
    """
    now = now or timezone.now()
    if not acquire(worker_id, now):
        return None
    report = MonitorReport()
    for dead in Worker.objects.stale(now, settings.PIZZAQUEUE_HEARTBEAT_TIMEOUT).values_list("pk", flat=True):
        recovery = queue.declare_dead(dead, "missed heartbeats", now)
        if recovery is not None:
            report.dead.append(dead)
            report.requeued += len(recovery.requeued)
            report.failed += len(recovery.failed)
            report.cancelled += len(recovery.cancelled)
            report.moved_buckets += recovery.moved_buckets
    expired = queue.recover_expired_leases(now)
    report.requeued += len(expired.requeued)
    report.failed += len(expired.failed)
    if Bucket.objects.orphaned().exists() or Bucket.objects.count() < settings.PIZZAQUEUE_BUCKETS:
        with transaction.atomic():
            lock_ring()
            report.moved_buckets += len(rebalance(now, BucketMove.Reason.REBALANCE))
    if report.dead or report.requeued or report.failed or report.moved_buckets:
        logger.warning(
            "monitor worker=%s dead=%s requeued=%d failed=%d cancelled=%d moved=%d",
            worker_id,
            report.dead,
            report.requeued,
            report.failed,
            report.cancelled,
            report.moved_buckets,
        )
    return report
