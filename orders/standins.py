"""Stand-ins for the people after the kitchen, so a demo or a benchmark runs every order to its end.

A made order waits for people: counter staff hand a takeaway order over, a
driver takes a delivery order off the shelf and delivers it. A demo nobody
works, or a benchmark, would pile its orders up there. The stand-ins are the
staffed kitchen's stand-in cook for the hand-over: they take a step a person
has not taken within `standby` seconds, through the same fenced steps
(`workers.queue.handover`), so a person's tap always wins and a stand-in's
refused tap changes nothing:

- the counter hands a takeaway order over once it has waited `standby`
  seconds, and at least PIZZAQUEUE_COLLECTION_SECONDS (when its customer comes);
- the stand-in driver takes a delivery order that has waited `standby`
  seconds on its shelf, drives for the area's delivery time
  (`promises.handover_seconds`) and is paid at the door.

Payments alternate between card and cash by the order's id, as customers do.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import User

from orders.promises import handover_seconds
from workers import clock, queue
from workers.models import Order

logger = logging.getLogger(__name__)

# The stand-in driver's account: the board and admin name it beside the people.
DRIVER_USERNAME = "stand-in-driver"
# Orders each kind of step takes at most per pass (the next pass takes the rest).
BATCH = 100


@dataclass(frozen=True)
class Pass:
    """What one pass did."""

    collected: int = 0
    taken: int = 0
    delivered: int = 0


def stand_in_driver() -> User:
    """The stand-in driver's account, made on first use; nobody can log in as it."""
    user, created = User.objects.get_or_create(
        username=DRIVER_USERNAME, defaults={"first_name": "Stand-in", "last_name": "driver"}
    )
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user


def payment(order_id: object) -> str:
    return Order.Payment.CARD if int(str(order_id)[-1], 16) % 3 else Order.Payment.CASH


def step(standby: float, now: datetime | None = None, driver: User | None = None) -> Pass:
    """One pass over every shop's counter, shelf and the stand-in driver's round."""
    now = now or clock.now()
    driver = driver or stand_in_driver()
    waiting = Order.objects.filter(status=Order.Status.DONE)
    collect_after = max(standby, settings.PIZZAQUEUE_COLLECTION_SECONDS)
    counter = waiting.filter(
        kind=Order.Fulfilment.TAKEAWAY,
        handover=Order.Handover.COUNTER,
        finished_at__lte=now - timedelta(seconds=collect_after),
    ).values_list("id", flat=True)
    collected = sum(queue.collect(pk, payment(pk), now=now, actor_id=driver.pk) for pk in counter[:BATCH])
    shelf = waiting.filter(
        kind=Order.Fulfilment.DELIVERY,
        handover=Order.Handover.SHELF,
        finished_at__lte=now - timedelta(seconds=standby),
    ).values_list("id", flat=True)
    taken = sum(queue.take(pk, driver.pk, now=now) is not None for pk in shelf[:BATCH])
    delivered = 0
    out = (
        waiting.filter(handover=Order.Handover.OUT, driver=driver)
        .order_by("out_at")
        .values_list("id", "handover_token", "area", "kind", "out_at")
    )
    for pk, token, area, kind, out_at in out[:BATCH]:
        if token is not None and out_at is not None and out_at + timedelta(seconds=handover_seconds(kind, area)) <= now:
            delivered += queue.deliver(pk, token, payment(pk), now=now, actor_id=driver.pk)
    done = Pass(collected, taken, delivered)
    if collected or taken or delivered:
        logger.info("stand-ins collected=%d taken=%d delivered=%d", collected, taken, delivered)
    return done
