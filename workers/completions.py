"""Telling a completion that committed from one that lost its lease.

A kitchen's completion can commit and its answer be lost on the way back
(the connection drops). The kitchen then writes the same completion again,
finds the order no longer under its lease, and would record `lease-lost`
for an order it did complete, inflating that metric and telling the
order's timeline a story that did not happen. The order's `done` event
says who completed it: if it was this worker (this incarnation's id), the
retry is an echo, not a lost lease.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from workers.models import OrderEvent


def not_done_by(order_ids: Sequence[uuid.UUID], worker_id: int | None) -> list[uuid.UUID]:
    """The orders among `order_ids` that `worker_id` did not complete: the ones whose lease it really lost."""
    if not order_ids or worker_id is None:
        return list(order_ids)
    done = set(
        OrderEvent.objects.filter(
            order_id__in=list(order_ids), kind=OrderEvent.Kind.DONE, worker_id=worker_id
        ).values_list("order_id", flat=True)
    )
    return [order_id for order_id in order_ids if order_id not in done]
