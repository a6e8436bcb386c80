"""Writing an order's events: the timeline, and the outbox live updates are read from.

An event is written only inside the transaction that made its change, so it
commits with the change or not at all; on PostgreSQL the same transaction
sends the NOTIFYs that wake the relays (and, when work became claimable, the
workers), which are delivered only on commit.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime

from django.db import connection

from workers import sql, storable
from workers.models import OrderEvent

Event = OrderEvent.Kind


def event(
    order_id: uuid.UUID,
    kind: str,
    now: datetime,
    *,
    worker_id: int | None = None,
    stage: str = "",
    message: str = "",
    actor_id: int | None = None,
    **data: object,
) -> OrderEvent:
    """An unsaved event: its `kind` and `data` say what happened; `message` carries
    only what a person or a handler wrote (a reason, an error), never the shop's words."""
    return OrderEvent(
        order_id=order_id,
        kind=kind,
        created_at=now,
        worker_id=worker_id,
        stage=storable.stage(stage),
        message=storable.message(message),
        actor_id=actor_id,
        data=data,
    )


def _notify(statement: str) -> None:
    """Wake listeners once this transaction commits (PostgreSQL only; NOTIFY is transactional)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(statement)


def notify_work() -> None:
    """Wake the workers once this transaction commits: an order became claimable."""
    _notify(sql.queries["notify_orders"])


def record(events: Iterable[OrderEvent], *, work: bool = False) -> None:
    """Write events inside the caller's transaction and wake the live-update relays
    (and, with `work`, the workers: the change made an order claimable)."""
    events = list(events)
    if not events:
        return
    OrderEvent.objects.bulk_create(events)
    _notify(sql.queries["notify_events_and_orders"] if work else sql.queries["notify_events"])
