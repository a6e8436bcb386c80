"""Promises: an order's promised time, and each revision of it with the event that tells its customer.

When an order is promised is the shop's to say (PIZZAQUEUE_QUOTE quotes it at
placing, in the order's own row; the shop's monitor duty revises it). The
engine keeps it on the order and writes a revision and its `promised` event in
one transaction, so the timeline never disagrees with the order, and a
revision is fenced by the promise it replaces: two revisers that read the same
promise revise it once.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.db.models import Q

from workers import clock
from workers.models import Order, OrderEvent
from workers.queue.outbox import Event, event, record

# Orders whose promise is still ahead of them: unfinished ones, and made delivery orders
# on their way (the promise is the customer's door). A takeaway order's ends at the
# counter, and a delivered, collected, failed or cancelled order's is history.
PROMISE_KEPT = Q(status__in=(Order.Status.QUEUED, Order.Status.PREPARING)) | Q(
    status=Order.Status.DONE, kind=Order.Fulfilment.DELIVERY, handover__in=(Order.Handover.SHELF, Order.Handover.OUT)
)


def promise_kept(order: Order) -> bool:
    """`PROMISE_KEPT` for an order in hand: whether its customer still waits on its promise."""
    on_the_way = order.kind == Order.Fulfilment.DELIVERY and order.handover in (
        Order.Handover.SHELF,
        Order.Handover.OUT,
    )
    return order.status in (Order.Status.QUEUED, Order.Status.PREPARING) or (
        order.status == Order.Status.DONE and on_the_way
    )


@dataclass(frozen=True)
class Revision:
    """A new promise for an order: `by`, replacing `was` (as the reviser read it), because `why`."""

    order_id: uuid.UUID
    was: datetime | None
    by: datetime
    why: str


def revise_promises(revisions: Iterable[Revision], now: datetime | None = None) -> list[uuid.UUID]:
    """Write each revision with its `promised` event (data: `by`, `was`, `why`), in one
    transaction; returns the orders revised. An order handed over meanwhile, or whose
    promise changed since it was read, is left as it is; so is one a kitchen holds
    locked this moment (its claim or completion): the next round revises it.

    A few statements whatever the count: the orders read and locked at once, skipping
    locked ones (with the lock a non-key UPDATE takes, which an event's foreign-key
    check does not conflict with), one bulk UPDATE, the events in one INSERT. The
    keeper once revised a draining queue's thousands of promises one UPDATE at a
    time, in a transaction that held their rows for most of a second while the
    kitchens' claims skipped them, and a kitchen drained 870 orders/s instead of
    9,500 (docs/performance.md, "Promises").
    """
    now = now or clock.now()
    wanted = {revision.order_id: revision for revision in revisions}
    if not wanted:
        return []
    with transaction.atomic():
        held = (
            Order.objects.select_for_update(skip_locked=True, no_key=True, of=("self",))
            .filter(PROMISE_KEPT, id__in=wanted)
            .only("id", "promised_at")
        )
        revised = [order for order in held if order.promised_at == wanted[order.id].was]
        for order in revised:
            order.promised_at = wanted[order.id].by
        Order.objects.bulk_update(revised, ["promised_at"], batch_size=1000)
        record(_told(wanted[order.id], now) for order in revised)
    return [order.id for order in revised]


def _told(revision: Revision, now: datetime) -> OrderEvent:
    """The `promised` event of a revision: what the customer reads."""
    was = revision.was.isoformat() if revision.was else None
    return event(revision.order_id, Event.PROMISED, now, by=revision.by.isoformat(), was=was, why=revision.why)
