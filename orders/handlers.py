"""Order handlers: what a kitchen does with a claimed order.

Each is a `workers.loop.Handler`: it reports kitchen stages through
`progress(stage)` and fails the attempt by raising. Returning normally means
the order is done (the worker then completes it, fenced by its lease).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import DatabaseError

from workers import queue
from workers.loop import DatabaseUnavailableError, HandedOverError, LeaseLostError, shift_over, still_working

if TYPE_CHECKING:
    from workers.loop import Progress
    from workers.models import Order

# Stages in kitchen order, with each one's share of the order's kitchen time.
STAGES: tuple[tuple[str, float], ...] = (("dough", 0.2), ("sauce", 0.1), ("oven", 0.55), ("boxing", 0.15))
# A staffed kitchen's last stage: tapped "ready", the kitchen process completes the order.
READY = "ready"
# What staff tap on a staffed kitchen's display, in order: (stage it moves to, button).
TAPS: tuple[tuple[str, str], ...] = (
    ("dough", "Start"),
    ("oven", "Into the oven"),
    ("boxing", "Boxed"),
    (READY, "Ready"),
)
# The staffed handler's dotted path: the kitchen display shows tap buttons for kitchens running it.
STAFFED_HANDLER = "orders.handlers.staffed"


def next_tap(stage: str) -> tuple[str, str] | None:
    """The step staff take next from `stage`: (stage, button label); None after the last."""
    stages = ["", *(to for to, _label in TAPS)]
    if stage not in stages or stage == READY:
        return None
    return TAPS[stages.index(stage)]


def customer_may_cancel(order: Order) -> bool:
    """The shop's rule for a customer cancelling an order already in the kitchen: until
    it reaches PIZZAQUEUE_CUSTOMER_CANCEL_UNTIL (the oven, by default), nothing is lost."""
    return may_cancel("preparing", order.stage)


def may_cancel(status: str | None, stage: str) -> bool:
    """Whether a customer may cancel an order in this status and stage: waiting, or in the
    kitchen before PIZZAQUEUE_CUSTOMER_CANCEL_UNTIL. The tracking page's button follows it live."""
    if status == "queued":
        return True
    if status != "preparing":
        return False
    names = [name for name, _share in STAGES]
    until = settings.PIZZAQUEUE_CUSTOMER_CANCEL_UNTIL
    if until not in names:
        return False
    return stage == "" or (stage in names and names.index(stage) < names.index(until))


def operator_may_cancel(order: Order) -> bool:
    """Operators may stop any order in any kitchen (SPEC §4.10)."""
    return True


def _still_held(order: Order) -> str:
    """The order's stage while this kitchen's lease holds it; raises LeaseLostError once
    it was cancelled or moved (the queue records that the kitchen stopped)."""
    assert order.lease_token is not None  # noqa: S101 - a claimed order carries its lease
    still_working()  # each look is this handler's sign of life (SPEC §4.12)
    try:
        stage = queue.check_lease(order.id, order.lease_token, order.worker_id)
    except DatabaseError as exc:
        raise DatabaseUnavailableError(f"lease of order {order.id} not checked: {exc}") from exc
    if stage is None:
        raise LeaseLostError(str(order.id))
    return stage


def _bake_for(order: Order, seconds: float) -> None:
    """Sleep through a simulated stage, looking at the order every check interval, so
    a cancel stops the oven within that and not at the next stage."""
    deadline = time.monotonic() + seconds
    interval = settings.PIZZAQUEUE_KITCHEN_CHECK_INTERVAL
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(interval, left))
        if left > interval:
            _still_held(order)


def kitchen(order: Order, progress: Progress) -> None:
    """Simulate the kitchen: each stage takes its share of the order's estimated time,
    scaled by PIZZAQUEUE_KITCHEN_SPEED (0 makes it instant)."""
    total = order.estimated_seconds * settings.PIZZAQUEUE_KITCHEN_SPEED
    for stage, share in STAGES:
        progress(stage)
        if total > 0:
            _bake_for(order, total * share)


def staffed(order: Order, progress: Progress) -> None:
    """A staffed kitchen (SPEC §7a): people drive the stages from the kitchen display.

    The kitchen process claims the order, heartbeats and holds its lease as
    for any handler; each tap is written by the web process
    (`queue.advance_stage`, fenced by this lease). This only waits, looking at
    its order every PIZZAQUEUE_KITCHEN_CHECK_INTERVAL, and returns once staff
    tapped "ready", so the loop completes the order. A cancelled or moved
    order (its lease revoked) stops it at the next look.

    With PIZZAQUEUE_STAFFED_STANDBY set (the demo sets it), a stand-in cook
    takes a step nobody tapped within that many seconds, through the same
    fenced write as a tap: a ticket nobody works still gets made (the ring
    gives a staffed kitchen its share of delivery orders like any other), and
    a person's tap, or two at once, still moves it one step.

    When its kitchen process stops (a redeploy, SIGTERM), the ticket is handed over
    at the next look rather than held for the shutdown grace: a takeaway ticket
    goes to the shop's next process at its stage, and the staff tap on there.
    """
    interval = settings.PIZZAQUEUE_KITCHEN_CHECK_INTERVAL
    standby = settings.PIZZAQUEUE_STAFFED_STANDBY
    assert order.lease_token is not None  # noqa: S101 - a claimed order carries its lease
    stage, since = _still_held(order), time.monotonic()
    while stage != READY:
        time.sleep(interval)
        if shift_over():
            raise HandedOverError(str(order.id))
        now_at = _still_held(order)
        if now_at != stage:
            stage, since = now_at, time.monotonic()
        elif standby and time.monotonic() - since >= standby:
            step = next_tap(stage)
            if step is not None:
                queue.advance_stage(order.id, order.lease_token, stage, step[0], by="stand-in cook")
            since = time.monotonic()


def noop(order: Order, progress: Progress) -> None:
    """Does nothing: measures the queue itself in benchmarks."""
