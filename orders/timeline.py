"""What customers and staff read about an order: labels, progress and the JSON message per event.

The relay (`workers.relay`) publishes each committed event through
`event_message`; the pages render their first view with the same functions,
so a page and its live updates never disagree.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.utils import timezone
from django.utils.dateparse import parse_datetime

from orders.handlers import READY, STAGES, may_cancel
from orders.shops import display_name
from workers import recovery
from workers.models import Order, OrderEvent
from workers.queue import leases

STAGE_LABELS = {
    "dough": "Stretching the dough",
    "sauce": "Sauce and toppings",
    "oven": "In the oven",
    "boxing": "Boxing it up",
    READY: "Ready",
}
STATUS_LABELS: dict[str, str] = {
    Order.Status.QUEUED: "In the queue",
    Order.Status.PREPARING: "In the kitchen",
    Order.Status.DONE: "Ready",
    Order.Status.FAILED: "Could not be made",
    Order.Status.CANCELLED: "Cancelled",
}
# A made order's hand-over as the status line names it (`Order.handover`).
HANDOVER_LABELS: dict[str, str] = {
    # Made and waiting at the shop: "Ready", as the kitchen's `done` says it live; the line
    # under it says where (`handover_line`).
    Order.Handover.COUNTER: "Ready",
    Order.Handover.SHELF: "Ready",
    Order.Handover.OUT: "Out for delivery",
    Order.Handover.DELIVERED: "Delivered",
    Order.Handover.COLLECTED: "Collected",
}
# Each hand-over event's step: the order's `handover` right after it.
HANDOVER_AFTER: dict[str, str] = {
    OrderEvent.Kind.OUT_FOR_DELIVERY: Order.Handover.OUT,
    OrderEvent.Kind.BACK_ON_SHELF: Order.Handover.SHELF,
    OrderEvent.Kind.DELIVERED: Order.Handover.DELIVERED,
    OrderEvent.Kind.COLLECTED: Order.Handover.COLLECTED,
}
# A shop's state as every page, admin and the docs name it (docs/glossary.md): the
# engine's kitchen statuses in the shop's words.
SHOP_STATUS_LABELS: dict[str, str] = {
    "alive": "open",
    "draining": "closing",
    "stopped": "closed",
    "dead": "down",
}
# Each event kind in the shop's words (docs/glossary.md), for the board and admin.
KIND_LABELS: dict[str, str] = {
    OrderEvent.Kind.PLACED: "placed",
    OrderEvent.Kind.CLAIMED: "started",
    OrderEvent.Kind.STAGE: "stage",
    OrderEvent.Kind.DONE: "made",
    OrderEvent.Kind.RETRIED: "requeued",
    OrderEvent.Kind.RELEASED: "handed back",
    OrderEvent.Kind.REASSIGNED: "moved",
    OrderEvent.Kind.FAILED: "failed",
    OrderEvent.Kind.CANCELLED: "cancelled",
    OrderEvent.Kind.LEASE_LOST: "kitchen stopped",
    OrderEvent.Kind.PRIORITY_RAISED: "rushed",
    OrderEvent.Kind.PROMISED: "promise revised",
    OrderEvent.Kind.OUT_FOR_DELIVERY: "out for delivery",
    OrderEvent.Kind.BACK_ON_SHELF: "back on the shelf",
    OrderEvent.Kind.DELIVERED: "delivered",
    OrderEvent.Kind.COLLECTED: "collected",
}
LEASE_LOST_LINE = "The kitchen stopped making it: the order was cancelled or moved."
# The order's status right after an event of each kind (None: unchanged).
STATUS_AFTER: dict[str, str | None] = {
    OrderEvent.Kind.PLACED: Order.Status.QUEUED,
    OrderEvent.Kind.CLAIMED: Order.Status.PREPARING,
    OrderEvent.Kind.STAGE: Order.Status.PREPARING,
    OrderEvent.Kind.DONE: Order.Status.DONE,
    OrderEvent.Kind.RETRIED: Order.Status.QUEUED,
    OrderEvent.Kind.RELEASED: Order.Status.QUEUED,
    OrderEvent.Kind.REASSIGNED: Order.Status.QUEUED,
    OrderEvent.Kind.FAILED: Order.Status.FAILED,
    OrderEvent.Kind.CANCELLED: Order.Status.CANCELLED,
    OrderEvent.Kind.LEASE_LOST: None,
    OrderEvent.Kind.PRIORITY_RAISED: None,
    OrderEvent.Kind.PROMISED: None,
    **dict.fromkeys(HANDOVER_AFTER, Order.Status.DONE),
}
# Kitchen-internal events that customers do not need to see.
PRIVATE_KINDS = {OrderEvent.Kind.LEASE_LOST}


def _stage_progress() -> dict[str, int]:
    """Each stage's point on the progress bar: its middle, within the 10-100 % the kitchen covers."""
    points, done = {}, 0.0
    for stage, share in STAGES:
        points[stage] = round(10 + 90 * (done + share / 2))
        done += share
    return points


STAGE_PROGRESS = _stage_progress()
# A staffed kitchen's last tap: done as soon as its kitchen process has looked.
STAGE_PROGRESS[READY] = 100


def progress(status: str | None, stage: str = "") -> int | None:
    """Percentage for the progress bar; None where the status says nothing about it."""
    if status == Order.Status.QUEUED:
        return 5
    if status == Order.Status.PREPARING:
        return STAGE_PROGRESS.get(stage, 10)
    if status == Order.Status.DONE:
        return 100
    return None


def stage_label(status: str, stage: str = "", handover: str = "") -> str:
    if status == Order.Status.PREPARING and stage:
        return STAGE_LABELS.get(stage, stage.capitalize())
    if status == Order.Status.DONE and handover:
        return HANDOVER_LABELS.get(handover, handover)
    return STATUS_LABELS.get(status, status)


def handover_line(handover: str, shop: str = "") -> str:
    """The sentence under a made order's status at a hand-over step: where it is and how it
    is paid, with the display name of the `shop` where it waits. A made order stays there."""
    at = f"{shop}'s" if shop else "the shop's"
    lines: dict[str, str] = {
        Order.Handover.COUNTER: f"Ready at {at} counter: pay when you collect it.",
        Order.Handover.SHELF: f"Ready on {at} shelf, waiting for a driver: pay the driver when it arrives.",
        Order.Handover.OUT: "Out for delivery: pay the driver when it arrives.",
        Order.Handover.DELIVERED: "Delivered and paid — enjoy!",
        Order.Handover.COLLECTED: "Collected and paid — enjoy!",
    }
    return lines.get(handover, "Ready — enjoy!")


def shop_closed_line(order: Order, shop: str) -> str:
    """What the customer of a made order waiting at a shop that went down or closed reads:
    the order is not moved (a made pizza is where it was made), and what happens next."""
    name = shop or "Your shop"
    if order.kind == Order.Fulfilment.TAKEAWAY:
        return f"{name} is not open just now. Your order was made and waits there; collect it when it opens again."
    return (
        f"{name} is not open just now. Your order was made and stays there, not moved to another shop; "
        "a driver brings it from there as soon as they can."
    )


# Why an order went back to the queue, by the `reason` its event records.
BACK_IN_QUEUE_BECAUSE = {
    leases.STOPPING: "The kitchen closed before starting it; back in the queue, no attempt charged.",
    leases.INTERRUPTED: "The kitchen lost its database connection; back in the queue, no attempt charged.",
    leases.UNANSWERED: "Claimed by a request whose answer was lost; back in the queue, no attempt charged.",
    leases.HANDED_OVER: "Handed over by a stopping kitchen process to the shop's next one, no attempt charged.",
    recovery.LEASE_EXPIRED: "The kitchen's lease expired; back in the queue.",
}
# What a kitchen that lost an order tried to do, by a `lease-lost` event's `action`.
LOST_ACTION = {
    "stage": "report a stage of",
    "continue": "go on with",
    "complete": "complete",
    "fail": "fail",
    "release": "hand back",
}


def describe(event: OrderEvent, worker: str | None) -> str:
    """The customer's line for an event: the engine records what happened (its kind
    and data), and these are the shop's words for it."""
    kind, data = event.kind, event.data
    if kind == OrderEvent.Kind.PLACED:
        return "Order confirmed."
    if kind == OrderEvent.Kind.CLAIMED:
        if event.stage:  # handed over mid-ticket: the shop goes on where it was
            return f"{display_name(worker) or 'Your shop'} carries on with your order."
        return f"{display_name(worker) or 'A kitchen'} started on your order."
    if kind == OrderEvent.Kind.STAGE:
        return STAGE_LABELS.get(event.stage, event.stage.capitalize()) + "."
    if kind == OrderEvent.Kind.DONE:
        return "Ready!"
    if kind == OrderEvent.Kind.RETRIED and data.get("reason") == recovery.STAGE_OVERDUE:
        return "The kitchen was taking too long; another kitchen will make it."
    if kind == OrderEvent.Kind.RELEASED and data.get("reason") == leases.HANDED_OVER:
        return "Your shop is changing over its kitchen's system; your order stays where it was."
    if kind in (OrderEvent.Kind.RETRIED, OrderEvent.Kind.RELEASED):
        return "Back in the queue for another go."
    if kind == OrderEvent.Kind.REASSIGNED:
        return moved_line(event, worker)
    if kind == OrderEvent.Kind.FAILED:
        return "Sorry, the kitchen could not make your order."
    if kind == OrderEvent.Kind.CANCELLED:
        if data.get("reason") == recovery.SHOP_UNAVAILABLE:
            shop = display_name(worker or data.get("shop")) or "Your shop"
            return f"{shop} {shop_gone(event)}, so your takeaway order was cancelled."
        return f"Order cancelled ({event.message})." if event.message else "Order cancelled."
    if kind == OrderEvent.Kind.PRIORITY_RAISED:
        return "Rushed: your order moves up the queue."
    if kind == OrderEvent.Kind.PROMISED:
        return promise_line(event)
    if kind == OrderEvent.Kind.OUT_FOR_DELIVERY:
        return "Out for delivery: a driver is on the way."
    if kind == OrderEvent.Kind.BACK_ON_SHELF:
        return "Back on the shelf: the next driver takes it."
    if kind in (OrderEvent.Kind.DELIVERED, OrderEvent.Kind.COLLECTED):
        paid = f" ({data['method']})" if data.get("method") else ""
        return f"{'Delivered' if kind == OrderEvent.Kind.DELIVERED else 'Collected'} and paid{paid}. Enjoy!"
    if kind == OrderEvent.Kind.LEASE_LOST:
        return f"A kitchen that lost this order tried to {LOST_ACTION.get(data.get('action', ''), 'go on with')} it; ignored."
    return event.message or kind


def promise_line(event: OrderEvent) -> str:
    """A revised promise in the customer's words: later ("Running late: now by 19:40."), or sooner."""
    by = promised_by(event)
    was = parse_datetime(event.data.get("was") or "")
    if by is None:
        return "Your order's promised time changed."
    when = timezone.localtime(by).strftime("%H:%M:%S")
    if was is not None and by < was:
        return f"Good news: now by {when}."
    if event.data.get("why") == "due":
        return f"Your order is due now: by {when}."
    return f"Running late: now by {when}."


def promised_by(event: OrderEvent) -> datetime | None:
    """The new promised time a `promised` event carries."""
    by = event.data.get("by") if isinstance(event.data, dict) else None
    return parse_datetime(by) if isinstance(by, str) else None


def shop_gone(event: OrderEvent) -> str:
    """How the event's shop left: it "went down" (silent: a crash, a power cut, declared
    dead) or "closed" (stopped or drained by its people)."""
    why = event.data.get("why") if isinstance(event.data, dict) else None
    if why:  # the engine's own record of it, where it keeps one
        return "went down" if why == "died" else "is closing" if why == "closing" else "closed"
    return "went down" if event.worker is not None and event.worker.status == "dead" else "closed"


def moved_line(event: OrderEvent, worker: str | None) -> str:
    """The one line a customer reads when the order moved to another shop: which shop went
    down or closed, which one makes the order now, and, if it was already in the kitchen,
    that it starts again there (why the bar went back)."""
    leaving = display_name(worker) or "Your shop"
    gone = shop_gone(event)
    to_shop = display_name(event.data.get("to_shop")) or "the next free shop"
    if event.data.get("queued"):
        return f"{leaving} {gone}; {to_shop} will make your order."
    return f"{leaving} {gone} while making your order; {to_shop} makes it again from the start."


def public_timeline(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events a customer reads, one line per happening: a move announced twice in a row
    (its queue's move, then its kitchen's hand-back to the same shop) is told once."""
    shown: list[dict[str, Any]] = []
    for message in messages:
        if not message["public"]:
            continue
        if shown and repeats(shown[-1], message):
            continue
        shown.append(message)
    return shown


def repeats(previous: dict[str, Any], message: dict[str, Any]) -> bool:
    """Whether `message` says again what the line before it said (the same move)."""
    return (
        message["kind"] == previous["kind"] == OrderEvent.Kind.REASSIGNED and message["to_shop"] == previous["to_shop"]
    )


def staff_line(event: OrderEvent, worker: str | None) -> str:
    """The board's line for an event: a failure's or a retry's own reason (the kitchen's error),
    a calm sentence for a kitchen that stopped, and otherwise what the customer read."""
    if event.kind in (OrderEvent.Kind.FAILED, OrderEvent.Kind.RETRIED, OrderEvent.Kind.RELEASED) and event.message:
        return event.message
    if (
        event.kind in (OrderEvent.Kind.RETRIED, OrderEvent.Kind.RELEASED)
        and event.data.get("reason") in BACK_IN_QUEUE_BECAUSE
    ):
        return BACK_IN_QUEUE_BECAUSE[event.data["reason"]]
    if event.kind == OrderEvent.Kind.LEASE_LOST:
        return LEASE_LOST_LINE
    return describe(event, worker)


def operator_note(event: OrderEvent) -> str:
    """What staff read beside an event (the API's `message`): the person's reason or the
    handler's error, or the shop's line where the engine recorded only what happened."""
    return event.message or staff_line(event, event.worker.name if event.worker_id and event.worker else None)


def customer_message(event: OrderEvent) -> dict[str, Any] | None:
    """What an order's customer is sent about an event: nothing about a kitchen's
    lost lease, and the customer's words (`text`) without the raw `message`,
    which may hold a kitchen's error or an operator's note."""
    if event.kind in PRIVATE_KINDS:
        return None
    message = event_message(event)
    del message["message"]
    del message["staff_text"]
    message["worker"] = display_name(message["worker"]) or None  # the shop's name, never the kitchen's
    message["to_shop"] = display_name(message["to_shop"]) or message["to_shop"]
    return message


def event_message(event: OrderEvent) -> dict[str, Any]:
    """The JSON message for one event, as staff see it. Read events with `select_related("worker")`."""
    worker = event.worker.name if event.worker_id and event.worker else None
    status = STATUS_AFTER.get(event.kind)
    return {
        "type": "event",
        "id": event.id,
        "order": str(event.order_id),
        "kind": event.kind,
        "stage": event.stage,
        "worker": worker,
        "created_at": event.created_at.isoformat(),
        "message": operator_note(event),
        "text": describe(event, worker),
        "kind_label": KIND_LABELS.get(event.kind, event.kind),
        # What the board says: the customer's line, or the kitchen's error or reason where there is one.
        "staff_text": staff_line(event, worker),
        # The "ready" tap is followed at once by `done`, which says it to the customer.
        "public": event.kind not in PRIVATE_KINDS
        and not (event.kind == OrderEvent.Kind.STAGE and event.stage == READY),
        "status": status,
        "status_label": stage_label(status, event.stage, HANDOVER_AFTER.get(event.kind, "")) if status else None,
        # The hand-over step the order is at after this event (None: not a hand-over event).
        "handover": HANDOVER_AFTER.get(event.kind),
        "handover_line": handover_line(HANDOVER_AFTER[event.kind]) if event.kind in HANDOVER_AFTER else None,
        # The kitchen made it: where it waits now, by the order's kind (the page knows which),
        # at the shop that made it (an order placed for any shop learns which only now).
        "ready_lines": {
            Order.Fulfilment.TAKEAWAY: handover_line(Order.Handover.COUNTER, display_name(worker)),
            Order.Fulfilment.DELIVERY: handover_line(Order.Handover.SHELF, display_name(worker)),
        }
        if event.kind == OrderEvent.Kind.DONE
        else None,
        "progress": progress(status, event.stage),
        # A takeaway order whose shop closed: the tracking page offers it at an open shop.
        "shop_unavailable": event.kind == OrderEvent.Kind.CANCELLED
        and event.data.get("reason") == recovery.SHOP_UNAVAILABLE,
        # A delivery order moved to another shop (SPEC §7b): the shop that makes it now.
        "to_shop": event.data.get("to_shop") if event.kind == OrderEvent.Kind.REASSIGNED else None,
        # A revised promise (ISO time): the tracking page's "Promised by" follows it.
        "promised_at": event.data.get("by") if event.kind == OrderEvent.Kind.PROMISED else None,
        # Whether the customer may still cancel the order after this event (until the oven).
        "may_cancel": may_cancel(status, event.stage) if status else None,
    }
