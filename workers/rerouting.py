"""Re-routing orders after PIZZAQUEUE_BUCKETS changed, in bounded batches.

A bucket-count change gives every unfinished order the bucket its routing
key hashes to among the new count (`queue.reroute` does it all at once).
On a large backlog "all at once" is one transaction under the ring's lock,
which can outlast the heartbeat timeout and hold up every membership change
meanwhile. So the work is cut into batches of at most BATCH orders, each
its own short transaction:

- the transaction that resizes the table (`monitor.resize_buckets`, under
  the ring's lock) re-routes only the first batch, and the process that made
  it walks the rest on its next monitor rounds (`continue_walk`), a few
  batches per round, whether or not it holds the election: a batch only
  moves orders to where their key hashes, so it is right whoever runs it;
- the orders a shrink strands in a bucket that no longer exists (where no
  kitchen could claim them) are found by an index range
  (`order_queued_bucket_idx`), and every monitor round re-routes a batch of
  them until none is left, whoever resized. Should the walking process die,
  only the per-area ordering of the rest waits; no order is stranded.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from dataclasses import dataclass

from django.db import transaction

from workers import ring
from workers.models import Order

logger = logging.getLogger(__name__)

# Orders re-routed per transaction.
BATCH = 1000
# Batches a monitor round walks, so a round stays short too.
BATCHES_PER_ROUND = 5


@dataclass
class Walk:
    """Where this process's walk over the unfinished orders stands."""

    count: int
    after: uuid.UUID


_walk: Walk | None = None


def reroute(count: int, *, stranded_only: bool = False, after: uuid.UUID | None = None) -> tuple[int, uuid.UUID | None]:
    """Re-route one batch inside the caller's transaction; returns (orders moved,
    the last id read when more may follow in id order, else None).

    With `stranded_only`, the queued orders in a bucket numbered `count` or above
    (each batch takes the first ones left); otherwise the unfinished orders after
    `after`, by id. Only the bucket changes: a lease or the rank is untouched.
    """
    if stranded_only:
        orders = Order.objects.filter(status=Order.Status.QUEUED, bucket__gte=count)
    else:
        orders = Order.objects.filter(status__in=[Order.Status.QUEUED, Order.Status.PREPARING]).order_by("id")
        if after is not None:
            orders = orders.filter(id__gt=after)
    rows = list(orders.values_list("id", "area", "bucket")[:BATCH])
    to_bucket: dict[int, list[uuid.UUID]] = defaultdict(list)
    for order_id, area, bucket in rows:
        target = ring.bucket_for(area or str(order_id), count)
        if target != bucket:
            to_bucket[target].append(order_id)
    for target, ids in to_bucket.items():
        Order.objects.filter(id__in=ids).update(bucket=target)
    more = len(rows) == BATCH and not stranded_only
    return sum(len(ids) for ids in to_bucket.values()), (rows[-1][0] if more else None)


def start_walk(count: int) -> int:
    """The first batch after a resize, inside the resizing transaction; the rest is
    left to `continue_walk`. Returns how many orders moved."""
    global _walk
    moved, last = reroute(count)
    _walk = Walk(count, last) if last is not None else None
    return moved


def continue_walk(count: int) -> int:
    """A few more batches of this process's walk, each its own transaction; returns how
    many orders moved. A walk for a count that changed again is dropped (the new
    resize starts its own)."""
    global _walk
    moved = 0
    for _ in range(BATCHES_PER_ROUND):
        if _walk is None or _walk.count != count:
            _walk = None
            break
        with transaction.atomic():
            batch, last = reroute(count, after=_walk.after)
        moved += batch
        _walk = Walk(count, last) if last is not None else None
    if moved:
        logger.info("rerouted count=%d moved=%d more=%s", count, moved, _walk is not None)
    return moved
