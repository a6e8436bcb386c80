"""After the kitchen: the counter's and the drivers' taps, and a driver's shelf.

Each tap writes only through `workers.queue.handover`, fenced like a kitchen's:
the counter's "collected and paid" by the step the order is at, so a double
tap hands it over once; a driver's "take" by the shelf, so two phones cannot
both take one order; a driver's "delivered and paid" by the token their take
was given, so a phone whose order went back on the shelf (and out with
another driver) changes nothing. A refused tap changes nothing and says why.
Plain forms with POST-redirect-GET work without JavaScript; htmx requests
get the partial.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from orders import roles
from orders.money import money
from orders.receipts import item_line, pizza_names
from orders.shops import display_name
from orders.views import HtmxHttpRequest, _render_kitchen, kitchen_staff_required
from workers import queue
from workers.models import Order, OrderQuerySet

Handover = Order.Handover


def _uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def _short(order_id: object) -> str:
    return f"#{str(order_id)[:8]}"


def driver_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """The shop's own drivers, or an operator; anyone else is sent to log in (or refused once logged in)."""

    @wraps(view)
    def checked(request: HtmxHttpRequest, name: str, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not roles.drives_for(request.user, name):
            raise PermissionDenied("You do not drive for this shop.")
        return view(request, name, *args, **kwargs)

    return checked


def waiting_at(name: str) -> OrderQuerySet:
    """The shop's made orders not yet handed over: what its counter and shelf may act on."""
    return Order.objects.awaiting_handover().at_shop(name)


# --- The counter (on the kitchen display) -------------------------------------------


@require_POST
@kitchen_staff_required
def counter_collect(request: HtmxHttpRequest, name: str) -> HttpResponse:
    """A takeaway order handed over at the counter and paid (by the method on the button pressed)."""
    order_id, method = _uuid(request.POST.get("order", "")), request.POST.get("method", "")
    if order_id is None:
        return HttpResponseBadRequest("order: Must be a UUID.", content_type="text/plain")
    if method not in Order.Payment.values:
        return HttpResponseBadRequest(
            f"method: Must be one of {', '.join(Order.Payment.values)}.", content_type="text/plain"
        )
    notice = ""
    if not queue.collect(order_id, method, actor_id=request.user.pk, among=Order.objects.at_shop(name)):
        order = Order.objects.at_shop(name).filter(pk=order_id).first()
        if order is not None and order.handover == Handover.COLLECTED:
            notice = f"{_short(order_id)} was already collected and paid: nothing changed."
        else:
            notice = f"{_short(order_id)} is not on this counter: nothing changed."
    if request.htmx:
        return _render_kitchen(request, name, notice=notice)
    if notice:
        messages.warning(request, notice)
    return redirect("kitchen", name=name)


# --- A driver's shelf ----------------------------------------------------------------


@require_GET
@driver_required
def shelf(request: HtmxHttpRequest, name: str) -> HttpResponse:
    return _render_shelf(request, name)


def _render_shelf(request: HtmxHttpRequest, name: str, notice: str = "") -> HttpResponse:
    names = pizza_names()
    here = waiting_at(name).filter(kind=Order.Fulfilment.DELIVERY).select_related("driver")
    on_shelf = list(here.filter(handover=Handover.SHELF).order_by("finished_at")[:50])
    out = list(here.filter(handover=Handover.OUT).order_by("out_at")[:50])
    order: Any  # each row carries what the shelf shows
    for order in on_shelf + out:
        order.item_lines = [item_line(item, names) for item in order.items]
        order.total_text = money(order.total)
    context = {
        "shop": name,
        "shop_name": display_name(name),
        "on_shelf": on_shelf,
        "mine": [o for o in out if o.driver_id == request.user.pk],
        "others": [o for o in out if o.driver_id != request.user.pk],
        "payments": Order.Payment.choices,
        "notice": notice,
    }
    return render(request, "orders/_shelf.html" if request.htmx else "orders/shelf.html", context)


def _answer(request: HtmxHttpRequest, name: str, notice: str) -> HttpResponse:
    if request.htmx:
        return _render_shelf(request, name, notice=notice)
    if notice:
        messages.warning(request, notice)
    return redirect("shelf", name=name)


@require_POST
@driver_required
def take(request: HtmxHttpRequest, name: str) -> HttpResponse:
    """The driver takes an order off the shelf: one driver per order, whoever taps second is told."""
    order_id = _uuid(request.POST.get("order", ""))
    if order_id is None:
        return HttpResponseBadRequest("order: Must be a UUID.", content_type="text/plain")
    notice = ""
    driver = request.user.pk
    assert driver is not None  # noqa: S101 - a driver is logged in (driver_required)
    if queue.take(order_id, driver, among=waiting_at(name)) is None:
        order = Order.objects.at_shop(name).filter(pk=order_id).first()
        if order is None:
            notice = f"{_short(order_id)} is not on this shelf: nothing changed."
        elif order.handover == Handover.OUT and order.driver_id == request.user.pk:
            notice = f"{_short(order_id)} is already out with you."
        elif order.handover == Handover.OUT:
            notice = f"{_short(order_id)} was taken by another driver a moment ago: nothing changed."
        else:
            notice = f"{_short(order_id)} is no longer on the shelf ({order.get_handover_display()}): nothing changed."
    return _answer(request, name, notice)


def _token_and_order(request: HtmxHttpRequest) -> tuple[uuid.UUID | None, uuid.UUID | None]:
    return _uuid(request.POST.get("order", "")), _uuid(request.POST.get("token", ""))


@require_POST
@driver_required
def deliver(request: HtmxHttpRequest, name: str) -> HttpResponse:
    """Delivered and paid (by the method on the button pressed), fenced by the token this
    phone's take was given: a stale phone changes nothing and is told why."""
    order_id, token = _token_and_order(request)
    method = request.POST.get("method", "")
    for field, value in (("order", order_id), ("token", token)):
        if value is None:
            return HttpResponseBadRequest(f"{field}: Must be a UUID.", content_type="text/plain")
    if method not in Order.Payment.values:
        return HttpResponseBadRequest(
            f"method: Must be one of {', '.join(Order.Payment.values)}.", content_type="text/plain"
        )
    assert order_id is not None and token is not None  # noqa: S101 - checked above
    notice = ""
    # The token is the fence: only the phone that took the order holds it.
    if not queue.deliver(order_id, token, method, actor_id=request.user.pk):
        notice = _why_not_delivered(order_id, token, name)
    return _answer(request, name, notice)


def _why_not_delivered(order_id: uuid.UUID, token: uuid.UUID, name: str) -> str:
    order = Order.objects.at_shop(name).filter(pk=order_id).first()
    short = _short(order_id)
    if order is None:
        return f"{short} is not this shop's: nothing changed."
    if order.handover == Handover.DELIVERED:
        return f"{short} is already delivered and paid."
    if order.handover == Handover.OUT and order.handover_token != token:
        return f"This phone's {short} is out of date: it went back on the shelf and another driver has it now. Nothing changed."
    if order.handover == Handover.SHELF:
        return f"{short} went back on the shelf: nothing changed."
    return f"{short} is not out with you: nothing changed."


@require_POST
@driver_required
def give_back(request: HtmxHttpRequest, name: str) -> HttpResponse:
    """The driver puts an order back on the shelf (fenced by their token), for another driver."""
    order_id, token = _token_and_order(request)
    if order_id is None or token is None:
        return HttpResponseBadRequest("order, token: Must be UUIDs.", content_type="text/plain")
    notice = ""
    if not queue.back_to_shelf(order_id, token, actor_id=request.user.pk, among=waiting_at(name)):
        notice = f"{_short(order_id)} is not out with this phone: nothing changed."
    return _answer(request, name, notice)
