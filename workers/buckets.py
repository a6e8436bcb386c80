"""Applying the hash ring to the `Bucket` table.

`workers.ring` decides who should own what from the live membership; this
module writes that decision, and is called inside the transaction of every
membership change (join, stop, death) so a change and its rebalancing commit
together.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import datetime

from django.conf import settings
from django.db import connection
from django.db.models import F

from workers import ring
from workers.models import Bucket, BucketMove, Worker

logger = logging.getLogger(__name__)

# Arbitrary constant naming the advisory lock that serialises rebalancing on PostgreSQL.
_RING_LOCK_KEY = 0x70697A7A  # "pizz"


def lock_ring() -> None:
    """Serialise membership changes for the rest of the current transaction.

    SQLite needs nothing: its IMMEDIATE transactions already hold the one write lock.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_RING_LOCK_KEY])


def ensure_buckets(count: int) -> None:
    if Bucket.objects.count() < count:
        Bucket.objects.bulk_create([Bucket(number=n) for n in range(count)], ignore_conflicts=True)


def rebalance(now: datetime, reason: str) -> list[tuple[int, int | None, int]]:
    """Give every bucket a live owner, moving as few as the ring allows.

    Must run inside the transaction that changed the membership, after
    `lock_ring()`. Returns the moves as (bucket, from worker id, to worker id).
    """
    count = settings.PIZZAQUEUE_BUCKETS
    ensure_buckets(count)
    live = [str(pk) for pk in Worker.objects.live().values_list("pk", flat=True)]
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
