"""The hand-over: a made order goes from its shop to its customer, and is paid.

After the kitchen (`done`, written exactly once by the lease holder) an order
waits at the shop that made it: a takeaway order on the counter until staff
mark it collected and paid; a delivery order on the shelf until one driver
takes it, then out with that driver until delivered and paid. A made order
never moves to another shop, whatever happens to its kitchen process.

Each step is one transaction writing the change and its event, conditional
on the step it leaves (so a double tap moves one step, and two drivers
cannot both take one order), and a driver's later taps are fenced by the
token `take` issued, as a kitchen's writes are by its lease: a phone whose
token is not the order's (the order was put back on the shelf and taken by
another driver) changes nothing. Refusals return False or None; the caller
says why from the order as it is.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime

from django.core.exceptions import ValidationError
from django.db import transaction

from workers import clock
from workers.models import Order, OrderQuerySet
from workers.queue.outbox import Event, event, record

logger = logging.getLogger(__name__)

Status, Handover = Order.Status, Order.Handover
# What a delivery order put back on the shelf no longer has.
OFF_THE_ROAD = {"handover": Handover.SHELF, "driver": None, "handover_token": None, "out_at": None}


def _method(method: str) -> str:
    if method not in Order.Payment.values:
        raise ValidationError({"method": [f"Must be one of {', '.join(Order.Payment.values)}."]})
    return method


def _seconds(since: datetime | None, now: datetime) -> float | None:
    return None if since is None else round(max((now - since).total_seconds(), 0.0), 3)


def _waiting(among: OrderQuerySet | None) -> OrderQuerySet:
    return (Order.objects.all() if among is None else among).filter(status=Status.DONE)


def take(
    order_id: uuid.UUID, driver_id: int, now: datetime | None = None, among: OrderQuerySet | None = None
) -> uuid.UUID | None:
    """A driver takes a delivery order off its shop's shelf; returns the token that fences
    their later taps, or None when it is not on the shelf (already taken, by them or by
    another driver, or never there). `among` scopes it (the driver's shops' orders)."""
    token = uuid.uuid4()
    with transaction.atomic():
        now = now or clock.now()
        shelf = _waiting(among).filter(pk=order_id, kind=Order.Fulfilment.DELIVERY, handover=Handover.SHELF)
        order = shelf.select_for_update(of=("self",)).only("id", "worker_id", "finished_at").first()
        if order is None:
            return None
        updated = Order.objects.filter(pk=order_id, status=Status.DONE, handover=Handover.SHELF).update(
            handover=Handover.OUT, driver_id=driver_id, handover_token=token, out_at=now
        )
        if updated != 1:  # impossible under the row lock; refuse rather than hand out two tokens
            return None
        shelf_seconds = _seconds(order.finished_at, now)
        record(
            [
                event(
                    order_id,
                    Event.OUT_FOR_DELIVERY,
                    now,
                    worker_id=order.worker_id,
                    actor_id=driver_id,
                    shelf_seconds=shelf_seconds,
                )
            ]
        )
    logger.info("out for delivery order=%s driver=%s", order_id, driver_id)
    return token


def deliver(
    order_id: uuid.UUID, token: uuid.UUID, method: str, now: datetime | None = None, actor_id: int | None = None
) -> bool:
    """The driver holding `token` handed the order over and was paid by `method`; False
    when that token no longer holds it (a stale phone) or it was delivered already."""
    method = _method(method)
    with transaction.atomic():
        now = now or clock.now()
        out = Order.objects.select_for_update().filter(
            pk=order_id, status=Status.DONE, handover=Handover.OUT, handover_token=token
        )
        order = out.only("id", "worker_id", "out_at", "driver_id").first()
        if order is None:
            return False
        Order.objects.filter(pk=order_id, handover=Handover.OUT, handover_token=token).update(
            handover=Handover.DELIVERED, handover_token=None, handed_over_at=now, paid_at=now, payment_method=method
        )
        record(
            [
                event(
                    order_id,
                    Event.DELIVERED,
                    now,
                    worker_id=order.worker_id,
                    actor_id=actor_id or order.driver_id,
                    method=method,
                    delivery_seconds=_seconds(order.out_at, now),
                )
            ]
        )
    return True


def collect(
    order_id: uuid.UUID,
    method: str,
    now: datetime | None = None,
    actor_id: int | None = None,
    among: OrderQuerySet | None = None,
) -> bool:
    """Staff at the counter hand a takeaway order over, paid by `method`; False when it is
    not waiting on the counter (collected already: a double tap moves it once)."""
    method = _method(method)
    with transaction.atomic():
        now = now or clock.now()
        counter = _waiting(among).filter(pk=order_id, kind=Order.Fulfilment.TAKEAWAY, handover=Handover.COUNTER)
        order = counter.select_for_update(of=("self",)).only("id", "worker_id", "finished_at").first()
        if order is None:
            return False
        Order.objects.filter(pk=order_id, status=Status.DONE, handover=Handover.COUNTER).update(
            handover=Handover.COLLECTED, handed_over_at=now, paid_at=now, payment_method=method
        )
        record(
            [
                event(
                    order_id,
                    Event.COLLECTED,
                    now,
                    worker_id=order.worker_id,
                    actor_id=actor_id,
                    method=method,
                    counter_seconds=_seconds(order.finished_at, now),
                )
            ]
        )
    return True


def back_to_shelf(
    order_id: uuid.UUID,
    token: uuid.UUID | None = None,
    now: datetime | None = None,
    actor_id: int | None = None,
    among: OrderQuerySet | None = None,
) -> bool:
    """A delivery order out with a driver goes back on its shop's shelf: the driver gives it
    back (with their `token`), or an operator takes it from a driver who cannot go on
    (no token). The driver's token is revoked, so their phone's later taps change nothing."""
    with transaction.atomic():
        now = now or clock.now()
        out = _waiting(among).filter(pk=order_id, handover=Handover.OUT)
        if token is not None:
            out = out.filter(handover_token=token)
        order = out.select_for_update(of=("self",)).only("id", "worker_id", "driver_id", "handover_token").first()
        if order is None:
            return False
        Order.objects.filter(pk=order_id, handover=Handover.OUT, handover_token=order.handover_token).update(
            **OFF_THE_ROAD
        )
        record(
            [
                event(
                    order_id,
                    Event.BACK_ON_SHELF,
                    now,
                    worker_id=order.worker_id,
                    actor_id=actor_id,
                    driver=order.driver_id,
                )
            ]
        )
    return True
