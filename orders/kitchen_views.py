"""A staffed kitchen's taps, and a takeaway customer's one-click order at another shop.

Both write only through the queue operations: a tap is `queue.advance_stage`,
fenced by the lease token the display was rendered with; a re-order is
`queue.place` with an idempotency key made of the cancelled order and the
chosen shop, so a double click places one order. Plain forms with
POST-redirect-GET work without JavaScript; htmx requests get the partial.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpResponse, HttpResponseBadRequest, HttpResponseForbidden, HttpResponseNotFound
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from orders import customers
from orders.handlers import next_tap
from orders.intake import ITEM_FIELDS, clean_order_request
from orders.redirection import can_reorder, reorder_context, reorder_key
from orders.timeline import stage_label
from orders.views import HtmxHttpRequest, _render_kitchen, changeable, kitchen_staff_required
from workers import queue
from workers.models import Bucket, Order, OrderEvent


def _uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


@require_POST
@kitchen_staff_required
def tap(request: HtmxHttpRequest, name: str) -> HttpResponse:
    """One tap on a ticket's next-step button: the order, its lease token and the stage the
    display showed. A ticket whose lease moved on changes nothing, and the notice says where it went."""
    order_id, token = _uuid(request.POST.get("order", "")), _uuid(request.POST.get("lease", ""))
    shown = request.POST.get("stage", "")
    for field, value in (("order", order_id), ("lease", token)):
        if value is None:
            return HttpResponseBadRequest(f"{field}: Must be a UUID.", content_type="text/plain")
    step = next_tap(shown)
    if step is None:
        return HttpResponseBadRequest(f"stage: No next step after {shown!r}.", content_type="text/plain")
    assert order_id is not None and token is not None  # noqa: S101 - checked above
    order = Order.objects.select_related("worker").filter(pk=order_id).first()
    if order is None or not is_ticket_of(order, name):
        # Another shop's order, or none: the same answer, so a tap learns nothing of it.
        return HttpResponseNotFound("order: Not a ticket of this kitchen.", content_type="text/plain")
    notice, level = "", messages.SUCCESS
    if not queue.advance_stage(order_id, token, shown, step[0], actor_id=request.user.pk):
        order.refresh_from_db()
        notice, level = why_not(order, token, name), messages.WARNING
    if request.htmx:
        return _render_kitchen(request, name, notice=notice)
    if notice:
        messages.add_message(request, level, notice)
    return redirect("kitchen", name=name)


def is_ticket_of(order: Order, shop: str) -> bool:
    """Whether a shop's display may tap the order, and be told about it: a kitchen of that
    name has claimed it (any incarnation; its `claimed` events say so, read by the order's
    timeline index), or it is pinned to that shop. Any other order, even with its lease
    token, is another shop's business."""
    if order.pinned_shop == shop:
        return True
    return OrderEvent.objects.filter(order_id=order.pk, kind=OrderEvent.Kind.CLAIMED, worker__name=shop).exists()


def why_not(order: Order, token: uuid.UUID, shop: str) -> str:
    """What a display says when its tap changed nothing: a double tap, or where the order went.
    Only ever said about one of the shop's own tickets (`is_ticket_of`)."""
    short = f"#{str(order.id)[:8]}"
    if order.lease_token == token:
        return f"{short} is already at “{stage_label(order.status, order.stage)}”."
    if order.status == Order.Status.CANCELLED:
        return f"{short} was cancelled ({order.cancel_reason or 'no reason given'}): stop making it."
    if order.status == Order.Status.DONE:
        return f"{short} is already done."
    if order.status == Order.Status.FAILED:
        return f"{short} could not be made: {order.last_error or 'no more attempts'}."
    if order.status == Order.Status.PREPARING and order.worker is not None:
        if order.worker.name == shop:
            return f"{short} came back to this kitchen as a new ticket: tap it there."
        return f"{short} moved to {order.worker.name}, which is making it now: nothing changed here."
    if order.pinned_shop:
        name = order.pinned_shop
    else:
        bucket = Bucket.objects.select_related("owner").filter(number=order.bucket).first()
        name = bucket.owner.name if bucket is not None and bucket.owner is not None else ""
    return f"{short} went back to the queue{f' for {name}' if name else ''}: nothing changed here."


# --- Takeaway customers whose shop closed ------------------------------------------


@require_http_methods(["GET", "POST"])
def reorder(request: HtmxHttpRequest, order_id: uuid.UUID) -> HttpResponse:
    """GET: the offer (a partial, fetched live when the shop closes). POST: the same order,
    pinned to the shop chosen, placed once (SPEC §7b)."""
    order = get_object_or_404(Order, pk=order_id)
    mine = changeable(request).filter(pk=order.pk).exists()
    if request.method == "GET":
        return render(request, "orders/_reorder.html", reorder_context(order, mine))
    if not mine:
        return HttpResponseForbidden(
            "Only the browser that placed this order can order it again.", content_type="text/plain"
        )
    if not can_reorder(order):
        return _refused(request, order, "Only a takeaway order whose shop closed can be ordered again here.")
    shop = request.POST.get("shop", "").strip()
    if not shop or len(shop) > 100 or "\x00" in shop:
        return HttpResponseBadRequest("shop: Choose one of the open shops.", content_type="text/plain")
    data: dict[str, Any] = {
        # What was ordered, priced again at the new shop's menu as every order is.
        "items": [{k: v for k, v in item.items() if k in ITEM_FIELDS} for item in order.items],
        "kind": Order.Fulfilment.TAKEAWAY,
        "shop": shop,
        "priority": order.priority,
        "note": order.note,
        "customer_name": order.customer_name,
        "phone": order.phone,
        "area": order.area,
    }
    try:
        placed, _created = queue.place(
            clean_order_request(data), idempotency_key=reorder_key(order, shop), owner=customers.owner(request)
        )
    except ValidationError as exc:
        errors = exc.message_dict
        return _refused(request, order, " ".join(errors.get("shop") or sum(errors.values(), [])))
    except queue.IdempotencyConflictError as exc:
        return _refused(request, order, str(exc))
    return redirect("track-order", order_id=placed.id)


def _refused(request: HtmxHttpRequest, order: Order, why: str) -> HttpResponse:
    context = {**reorder_context(order, changeable=True), "why": why}
    return render(request, "orders/reorder_refused.html", context, status=409)
