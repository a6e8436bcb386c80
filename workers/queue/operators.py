"""People's actions on orders: a customer's or an operator's cancel, an operator's
requeue, a raised priority, and purging old finished orders.

Each reads the order and writes its change conditionally on what it read, so
an action racing a worker (or another person) either lands whole or is
refused with `InvalidTransitionError`, never half-applied. `actor_id` is the
person, recorded on the order's timeline.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F

from workers import clock
from workers.models import Order, OrderQuerySet, Worker
from workers.queue.intake import rank_for
from workers.queue.leases import BACK_IN_QUEUE, LEASE_CLEARED
from workers.queue.outbox import Event, event, record

Status = Order.Status


class OrderNotFoundError(Exception):
    pass


class InvalidTransitionError(Exception):
    """The order is not in a state that allows this (e.g. cancelling a finished order)."""


def _get(order_id: uuid.UUID | str, among: OrderQuerySet | None = None, lock: bool = False) -> Order:
    try:
        found = Order.objects.all() if among is None else among
        return (found.select_for_update(of=("self",)) if lock else found).get(pk=order_id)
    except (Order.DoesNotExist, ValidationError, ValueError):
        raise OrderNotFoundError(str(order_id)) from None


def _shop_open(name: str, now: datetime) -> bool:
    """Whether a pinned order's shop is open (`WorkerQuerySet.open_shop`), so an order put
    back in the queue for it will be made. One that closes as this commits leaves no order
    waiting for nobody: the monitor's next round cancels what is queued for a closed shop."""
    return Worker.objects.open_shop(name, now)


def cancel(
    order_id: uuid.UUID | str,
    reason: str = "",
    now: datetime | None = None,
    *,
    if_held: Callable[[Order], bool] | None = None,
    among: OrderQuerySet | None = None,
    actor_id: int | None = None,
) -> Order:
    """Cancel an order that is not finished (SPEC §4.10).

    A queued order, always. One already held by a worker only where `if_held`
    allows it (the shop's rule: operators always, customers until a stage):
    its lease is revoked in this transaction, so the worker's next stage
    report is refused (it stops there) and its completion can never land.
    `among` scopes the lookup (e.g. `Order.objects.changeable_by(user)`): an
    order outside it is OrderNotFoundError, as an unknown id is. `reason` is
    the person's, kept on the order and its event.
    """
    with transaction.atomic():
        order = _get(order_id, among, lock=True)
        now = now or clock.now()
        if order.status == Status.QUEUED:
            # A queued order may carry a handed-over ticket's stage: a cancel ends it too.
            Order.objects.filter(id=order.id, status=Status.QUEUED).update(
                status=Status.CANCELLED, cancel_reason=reason[:200], finished_at=now, **LEASE_CLEARED
            )
            record([event(order.id, Event.CANCELLED, now, message=reason, actor_id=actor_id)])
        elif order.status == Status.PREPARING and order.lease_token is not None and if_held is not None:
            if not if_held(order):
                raise InvalidTransitionError(f"Too late to cancel: the order is at the {order.stage or 'start'}.")
            Order.objects.leased(order.id, order.lease_token).update(
                status=Status.CANCELLED, cancel_reason=reason[:200], finished_at=now, **LEASE_CLEARED
            )
            record(
                [
                    event(
                        order.id,
                        Event.CANCELLED,
                        now,
                        worker_id=order.worker_id,
                        message=reason,
                        stage=order.stage,
                        actor_id=actor_id,
                    )
                ]
            )
        else:
            raise InvalidTransitionError(f"Order is {order.status}; only a queued order can be cancelled.")
    order.refresh_from_db()
    return order


def requeue(
    order_id: uuid.UUID | str,
    reason: str = "",
    now: datetime | None = None,
    actor_id: int | None = None,
) -> Order:
    """An operator's second chance: a failed or cancelled order goes back in the queue
    with fresh attempts; a preparing one is taken from its worker (its lease
    token is revoked, so that worker can no longer complete it)."""
    now = now or clock.now()
    with transaction.atomic():
        order = _get(order_id)
        if order.pinned_shop and not _shop_open(order.pinned_shop, now):
            # Nobody else may make a pinned order: back in the queue it would only be cancelled.
            raise InvalidTransitionError("Its shop is closed; a takeaway order can only be made by its own shop.")
        order = Order.objects.select_for_update(no_key=True).get(pk=order.pk)
        if order.status in (Status.FAILED, Status.CANCELLED):
            updated = Order.objects.filter(id=order.id, status=order.status).update(
                status=Status.QUEUED,
                attempts=0,
                eligible_at=now,
                rank=rank_for(now, order.priority),
                finished_at=None,
                cancel_reason="",
            )
        elif order.status == Status.PREPARING and order.lease_token is not None:
            updated = Order.objects.leased(order.id, order.lease_token).update(
                **BACK_IN_QUEUE, eligible_at=now, attempts=F("attempts") - 1
            )
        else:
            raise InvalidTransitionError(
                f"Order is {order.status}; only failed, cancelled or preparing orders can be requeued."
            )
        if updated != 1:
            raise InvalidTransitionError("Order changed meanwhile; try again.")
        record([event(order.id, Event.RETRIED, now, message=reason, actor_id=actor_id, by="operator")], work=True)
    order.refresh_from_db()
    return order


def raise_priority(
    order_id: uuid.UUID | str,
    priority: int = Order.MAX_PRIORITY,
    now: datetime | None = None,
    actor_id: int | None = None,
    among: OrderQuerySet | None = None,
) -> Order:
    """Raise a queued order's priority (the shop's "Rush" button); `among` scopes
    the lookup, as in `cancel`. The order keeps its place in time."""
    now = now or clock.now()
    if not Order.MIN_PRIORITY <= priority <= Order.MAX_PRIORITY:
        raise ValidationError({"priority": [f"Must be between {Order.MIN_PRIORITY} and {Order.MAX_PRIORITY}."]})
    with transaction.atomic():
        order = _get(order_id, among)
        order = Order.objects.select_for_update(no_key=True).get(pk=order.pk)
        if order.status != Status.QUEUED:
            raise InvalidTransitionError(f"Order is {order.status}; only a queued order's priority can be raised.")
        if priority <= order.priority:
            raise InvalidTransitionError(f"Order already has priority {order.priority}; this only raises it.")
        # The rank is rebuilt from when it became eligible.
        updated = Order.objects.filter(id=order.id, status=Status.QUEUED, priority=order.priority).update(
            priority=priority, rank=rank_for(order.eligible_at, priority)
        )
        if updated != 1:
            raise InvalidTransitionError("Order changed meanwhile; try again.")
        record([event(order.id, Event.PRIORITY_RAISED, now, actor_id=actor_id, priority=priority)])
    order.refresh_from_db()
    return order


def purge(before: datetime, limit: int) -> int:
    """Delete up to `limit` orders finished before `before`, with their events; returns how many.

    One short transaction per call, so purging millions of rows never holds a
    long lock; one path on both engines. The batch's rows are locked as they
    are read (PostgreSQL re-checks "finished before the cutoff" against a row
    changed meanwhile and leaves it out; SQLite's IMMEDIATE transaction holds
    the one write lock), so an order an operator requeues meanwhile is kept.
    """
    with transaction.atomic():
        ids = list(
            Order.objects.finished()
            .filter(finished_at__lt=before)
            .select_for_update(skip_locked=True)
            .values_list("id", flat=True)[:limit]
        )
        if ids:
            Order.objects.filter(id__in=ids).delete()
    return len(ids)
