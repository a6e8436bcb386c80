"""Holding a shop open for the rest of a transaction.

A takeaway order is pinned to its shop: only that shop may bake it, and when
the shop leaves the ring (`monitor.leave`) its unfinished takeaway orders are
cancelled in the same transaction. An operation that puts a pinned order
(back) in the queue must therefore know the shop is still in the ring *and*
keep it there until it commits; otherwise a shop dying between the check and
the commit would leave the order queued for a shop that will never claim it,
and that nothing sweeps.
"""

from __future__ import annotations

from workers.models import Worker


def hold_open(worker_id: int) -> bool:
    """Whether the shop is in the ring, holding its row until this transaction ends.

    FOR NO KEY UPDATE conflicts with the UPDATE that takes a worker out of the
    ring, so whichever comes second waits for the first: a leaving that comes
    second sees the order this transaction queued and cancels it; one that
    came first has already committed the shop's status, which this read, made
    after the wait, sees (READ COMMITTED re-checks a row it waited for). On
    SQLite the IMMEDIATE transaction already holds the only write lock.
    """
    return Worker.objects.in_ring().filter(pk=worker_id).select_for_update(no_key=True).exists()
