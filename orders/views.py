"""Customer pages, the kitchen display and the operations board.

Small function views that read with the indexed queries of `orders/models.py`
and change orders only through `orders.queue`. Pages work without JavaScript;
htmx requests get the page's partial template, and live updates come over the
WebSockets of `orders/consumers.py`.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import wraps
from typing import Any, cast

from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, Q
from django.http import Http404, HttpRequest, HttpResponse, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST
from django_htmx.middleware import HtmxDetails
from rest_framework.throttling import SimpleRateThrottle

from orders import clients, customers, logins, navigation, roles
from orders.deadlines import late_orders, overdue, overdue_stages, promised_at, ready_seconds
from orders.forms import OrderForm
from orders.handlers import STAFFED_HANDLER, customer_may_cancel, next_tap, operator_may_cancel
from orders.money import money
from orders.receipts import item_line, pizza_names, receipt_lines
from orders.redirection import reorder_context
from orders.shops import display_name
from orders.timeline import (
    SHOP_STATUS_LABELS,
    customer_message,
    event_message,
    handover_line,
    progress,
    public_timeline,
    shop_closed_line,
    stage_label,
)
from workers import clock, queue, recovery
from workers.models import Bucket, Order, OrderEvent, OrderQuerySet, Worker, reads_every_order
from workers.queue import leases

# Tickets shown on a kitchen display, per column.
TICKETS_SHOWN = 30
# The board lists workers that left within this window, next to the live ones.
RECENTLY_GONE = timedelta(minutes=10)
RECENT_EVENTS = 25


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


def staff_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Operators only: anyone else is sent to log in, and a logged-in person whose job is
    elsewhere to their own page with a sentence saying why (never back to the login form)."""

    @wraps(view)
    def checked(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        why = navigation.refusal(request.user, request.path)
        if why is not None:
            messages.warning(request, why)
            return redirect(navigation.home_for(request.user))
        return view(request, *args, **kwargs)

    return checked


class LoginView(logins.ThrottledLoginView):
    """The login form; each role lands on its own page (`orders.navigation.home_for`), and
    a `next` page that is not theirs is replaced by their own, with a sentence saying why."""

    def get_success_url(self) -> str:
        wanted = self.get_redirect_url()  # empty unless safe (same host)
        user = self.request.user
        if wanted:
            why = navigation.refusal(user, wanted)
            if why is None:
                return wanted
            messages.info(self.request, why)
        return navigation.home_for(user)


# --- Customers -------------------------------------------------------------------


def menu_context(form: OrderForm) -> dict[str, Any]:
    """The menu page's context: the form and the total of what it holds."""
    total, fee, _count = form.quote()
    return {"form": form, "quote_total": money(total), "quote_fee": money(fee) if fee else ""}


@require_GET
def menu(request: HtmxHttpRequest) -> HttpResponse:
    form = OrderForm.for_menu(initial={"token": uuid.uuid4()})
    return render(request, "orders/menu.html", menu_context(form))


@require_GET
def quote(request: HtmxHttpRequest) -> HttpResponse:
    """The live total of the order form (htmx sends the form's fields): priced by the server,
    from the menu, exactly as placing the order will price it."""
    form = OrderForm.for_menu(request.GET)
    return render(request, "orders/_total_amount.html", menu_context(form))


class FormIntakeThrottle(SimpleRateThrottle):
    """Orders one client address may place through the form (SPEC §9), with
    DRF's rate machinery: `REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["order-form"]`.

    The address believes X-Forwarded-For only from the configured proxies
    (`orders.clients`): DRF's own reading takes the whole header as the
    client when NUM_PROXIES is unset, so a new header per request would be a
    new client each time.
    """

    scope = "order-form"

    def get_cache_key(self, request: Any, view: Any) -> str:
        return self.cache_format % {"scope": self.scope, "ident": clients.request_client(request)}


@require_POST
def place_order(request: HtmxHttpRequest) -> HttpResponse:
    """Place the order from the form; a resubmitted form (same token) finds its first order."""
    throttle = FormIntakeThrottle()
    # DRF's rate machinery reads only the client address and the cache here, so it serves a plain Django view too.
    if not throttle.allow_request(request, None):  # type: ignore[arg-type]
        wait = throttle.wait() or 60
        form = OrderForm.for_menu(request.POST)
        form.is_valid()
        form.errors.clear()
        form.add_error(None, f"Too many orders from here; try again in {wait:.0f} seconds.")
        response = render(request, "orders/menu.html", menu_context(form), status=429)
        response["Retry-After"] = f"{wait:.0f}"
        return response
    form = OrderForm.for_menu(request.POST)
    status = 400
    if form.is_valid():
        assert form.order_request is not None  # noqa: S101 - set by a valid form
        try:
            order, _created = queue.place(
                form.order_request, idempotency_key=f"form:{form.cleaned_data['token']}", owner=customers.owner(request)
            )
        except queue.IdempotencyConflictError:
            form.add_error(
                None, "This form was already sent with a different order. Check your order and send it again."
            )
            status = 409
        except ValidationError as exc:  # e.g. the takeaway shop closed meanwhile
            form.add_intake_errors(exc)
        else:
            return redirect("track-order", order_id=order.id)
    # A fresh token, so correcting the errors does not collide with anything sent before.
    data = cast(QueryDict, form.data).copy()
    data["token"] = str(uuid.uuid4())
    form.data = data
    return render(request, "orders/menu.html", menu_context(form), status=status)


@require_GET
def track_order(request: HtmxHttpRequest, order_id: uuid.UUID) -> HttpResponse:
    order = get_object_or_404(Order.objects.select_related("worker"), pk=order_id)
    # The timeline index (order, id) serves this.
    rows = list(order.events.select_related("worker").order_by("id"))
    messages_ = [m for m in map(customer_message, rows) if m is not None]
    mine = changeable(request).filter(pk=order.pk).exists()  # this browser's order, or an operator
    promise = promised_at(order)
    timeline = public_timeline(messages_)
    context = {
        "order": order,
        "timeline": timeline,
        # The last event this page was rendered from (private ones too), read in the same
        # query: the stream resumes after it, so an event committed since is sent, not lost.
        "last_event_id": rows[-1].id if rows else 0,
        "status_label": stage_label(order.status, order.stage, order.handover),
        "progress": progress(order.status, order.stage),
        **handover_context(order),
        "promised_at": promise,
        # The promise is the customer's until the order is made (a delivery order: at their door), or stopped.
        "promise_open": (promise_open := queue.promise_kept(order)),
        "late": promise_open and order.eligible_at <= (now := clock.now()) and promise < now,
        "shop_unavailable": order.cancel_reason == recovery.SHOP_UNAVAILABLE,
        "shop_name": display_name(order.pinned_shop),
        "items": item_lines(order, pizza_names()),
        "total": money(order.total),
        "mine": mine,
        # Name, address and phone: for the placing browser and the shop's people, never the link alone.
        "sees_customer": mine or roles.sees_customer(request.user, order),
        "can_cancel": mine
        and (
            order.status == Order.Status.QUEUED
            or (order.status == Order.Status.PREPARING and customer_may_cancel(order))
        ),
        **reorder_context(order, mine),
        "moved_to": next((e["text"] for e in reversed(timeline) if e["to_shop"] is not None), "")
        if not order.is_final
        else "",
    }
    return render(request, "orders/track.html", context)


@require_GET
def receipt(request: HtmxHttpRequest, order_id: uuid.UUID) -> HttpResponse:
    """The order's receipt: each item at the price it was ordered at, the delivery fee, the
    total and whether (and how) it was paid. Like the tracking page, the link is the key;
    nothing personal is on it."""
    order = get_object_or_404(Order.objects.select_related("worker"), pk=order_id)
    made_by = order.pinned_shop or (order.worker.name if order.worker is not None else "")
    context = {
        "order": order,
        "lines": [(line, money(amount)) for line, amount in receipt_lines(order, pizza_names())],
        "total": money(order.total),
        "shop_name": display_name(made_by),
    }
    return render(request, "orders/receipt.html", context)


def handover_context(order: Order) -> dict[str, Any]:
    """The tracking page's hand-over: the line under a made order's status, the line it shows
    when the kitchen's `done` arrives live (where this order waits), and, while it waits at
    a shop that went down or closed, what happens to it (it is not moved)."""
    made_at = order.pinned_shop or (order.worker.name if order.worker is not None else "")
    shop_name = display_name(made_at)
    waits_at = Order.Handover.COUNTER if order.kind == Order.Fulfilment.TAKEAWAY else Order.Handover.SHELF
    closed = ""
    waiting = order.status == Order.Status.DONE and order.handover in (Order.Handover.COUNTER, Order.Handover.SHELF)
    # Down means no live process of the shop: during a redeploy the newest may not be the one up.
    if waiting and made_at and shop(made_at) is not None and not Worker.objects.up_at(made_at).exists():
        closed = shop_closed_line(order, shop_name)
    return {
        # Still on its way to the customer: a page without JavaScript keeps refreshing.
        "on_its_way": not order.is_final or order.handover in Order.HANDOVER_PENDING,
        "handover_line": handover_line(order.handover, shop_name),
        "ready_line": handover_line(waits_at, shop_name),
        "shop_closed": closed,
    }


def changeable(request: HttpRequest) -> OrderQuerySet:
    """The orders this request may change: its browser's, its user's, or any for an operator."""
    return Order.objects.changeable_by(request.user, customers.placing_key(request))


@require_POST
def cancel_order(request: HtmxHttpRequest, order_id: uuid.UUID) -> HttpResponse:
    """Cancel from the tracking page: only the browser that placed the order, or an operator.

    Anyone with the link may follow the order, so a refusal here says so
    (403) rather than pretending the order does not exist.
    """
    by_operator = request.user.has_perm(roles.CHANGE_ORDERS)
    try:
        queue.cancel(
            order_id,
            reason="cancelled by an operator" if by_operator else "cancelled by customer",
            if_held=operator_may_cancel if by_operator else customer_may_cancel,
            among=changeable(request),
            actor_id=request.user.pk,
        )
    except queue.OrderNotFoundError:
        if Order.objects.filter(pk=order_id).exists():
            raise PermissionDenied("Only the browser that placed this order can cancel it.") from None
        raise Http404("No such order.") from None
    except queue.InvalidTransitionError:
        messages.warning(request, "Too late to cancel: the kitchen is making your order.")
    return redirect("track-order", order_id=order_id)


def item_lines(order: Order, names: dict[str, str]) -> list[str]:
    return [item_line(item, names) for item in order.items]


# --- The kitchen display ---------------------------------------------------------


def kitchen_staff_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """The shop's own kitchen staff, or an operator; anyone else is sent to log in (or refused once logged in)."""

    @wraps(view)
    def checked(request: HtmxHttpRequest, name: str, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not roles.works_kitchen(request.user, name):
            raise PermissionDenied("You do not staff this kitchen.")
        return view(request, name, *args, **kwargs)

    return checked


@require_GET
@kitchen_staff_required
def kitchen(request: HtmxHttpRequest, name: str) -> HttpResponse:
    return _render_kitchen(request, name)


@require_POST
@kitchen_staff_required
def raise_order_priority(request: HtmxHttpRequest, name: str, order_id: uuid.UUID) -> HttpResponse:
    """The display's "Rush" button: top priority for a waiting order of this shop."""
    notice = ""
    try:
        # Only a ticket this display shows: another shop's order is not this staff's to rush.
        queue.raise_priority(order_id, actor_id=request.user.pk, among=shop_orders(name))
    except queue.OrderNotFoundError:
        raise Http404("No such order.") from None
    except queue.InvalidTransitionError as exc:
        notice = str(exc)
    if request.htmx:
        return _render_kitchen(request, name, notice=notice)
    if notice:
        messages.warning(request, notice)
    return redirect("kitchen", name=name)


def shop(name: str) -> Worker | None:
    """The shop as it is now: its newest incarnation (served by the (name, incarnation) unique index)."""
    if "\x00" in name:
        return None  # no name holds a NUL, and PostgreSQL refuses to even compare one
    return Worker.objects.filter(name=name).order_by("-incarnation").first()


def shop_orders(name: str) -> OrderQuerySet:
    """What the shop's display may act on: the orders it would claim, or pinned to it."""
    worker = shop(name)
    if worker is None or not worker.is_live:
        return Order.objects.none()
    return Order.objects.owned_by(worker.pk)


def _render_kitchen(request: HtmxHttpRequest, name: str, notice: str = "") -> HttpResponse:
    worker = shop(name)
    if worker is None:
        raise Http404("No such shop.")
    now = clock.now()
    preparing: list[Order] = []
    waiting: list[Order] = []
    if worker.is_live:
        # Every live process of the shop's tickets: in a redeploy the old one's stay on
        # the display until it hands them over to the new one.
        processes = Worker.objects.up_at(worker.name)
        held = Order.objects.filter(status=Order.Status.PREPARING, worker__in=processes)
        preparing = list(held.order_by("claimed_at")[:TICKETS_SHOWN])
        # What its kitchen would claim next, by the claim's own rule and order.
        next_up = leases.claimable_ids(worker.pk, now, TICKETS_SHOWN)
        by_id = Order.objects.in_bulk(next_up)
        waiting = [by_id[i] for i in next_up if i in by_id]
    names = pizza_names()
    staffed = worker.handler == STAFFED_HANDLER
    order: Any  # each ticket carries what the display shows
    for order in preparing + waiting:
        order.promise_seconds = ready_seconds(order)
        order.item_lines = item_lines(order, names)
        order.total_text = money(order.total)
        order.stage_label = stage_label(order.status, order.stage)
        order.overdue = overdue(order, now)
        order.next_tap = next_tap(order.stage) if staffed and order.status == Order.Status.PREPARING else None
    # After the kitchen: the takeaway orders on its counter, and how many wait on its shelf.
    waiting_here = Order.objects.awaiting_handover().at_shop(worker.name)
    counter = list(waiting_here.filter(handover=Order.Handover.COUNTER).order_by("finished_at")[:TICKETS_SHOWN])
    for order in counter:
        order.item_lines = item_lines(order, names)
        order.total_text = money(order.total)
    context = {
        "staffed": staffed,
        "worker": worker,
        "counter": counter,
        "payments": Order.Payment.choices,
        "on_shelf": waiting_here.filter(handover=Order.Handover.SHELF).count(),
        # Cooks read their shop's name and whether it is open; hosts, pids and incarnations are the board's.
        "shop_name": display_name(worker.name),
        "status_label": SHOP_STATUS_LABELS.get(worker.status, worker.status),
        "is_staff": reads_every_order(request.user),
        "preparing": preparing,
        "waiting": waiting,
        "notice": notice,
        "tickets_shown": TICKETS_SHOWN,
    }
    template = "orders/_tickets.html" if request.htmx else "orders/kitchen.html"
    return render(request, template, context)


# --- The operations board --------------------------------------------------------


@require_GET
@staff_required
def board(request: HtmxHttpRequest) -> HttpResponse:
    context = _board_panels(clock.now())
    if request.htmx:
        return render(request, "orders/_board_panels.html", context)
    recent = list(OrderEvent.objects.select_related("worker").order_by("-id")[:RECENT_EVENTS])
    context["events"] = [event_message(e) for e in recent]
    context["last_event_id"] = recent[0].id if recent else 0
    return render(request, "orders/board.html", context)


def _board_panels(now: datetime) -> dict[str, Any]:
    """Workers, bucket ownership, queue depth and throughput, without a full-table count:
    the order aggregates read only queued or preparing orders, through their partial
    indexes, and throughput reads only the last minute's events (`done_since`)."""
    workers = list(
        Worker.objects.filter(Q(status__in=Worker.LIVE_STATUSES) | Q(stopped_at__gte=now - RECENTLY_GONE)).order_by(
            "-started_at"
        )[:50]
    )
    # One row per shop: its newest incarnation. A restarted shop's earlier ones are history (admin keeps them).
    newest: dict[str, Worker] = {}
    for w in workers:
        if w.name not in newest or w.incarnation > newest[w.name].incarnation:
            newest[w.name] = w
    workers = sorted(newest.values(), key=lambda w: (not w.is_live, w.name))
    buckets_by_owner: dict[int | None, int] = defaultdict(int)
    queued_by_owner: dict[int | None, int] = defaultdict(int)
    depths: Any = Bucket.objects.with_depth()  # `queued` is an annotation the type checker cannot see
    for owner, queued in depths.values_list("owner", "queued"):
        buckets_by_owner[owner] += 1
        queued_by_owner[owner] += queued
    preparing_by_worker = dict(
        Order.objects.filter(status=Order.Status.PREPARING).values_list("worker").annotate(n=Count("pk")).order_by()
    )
    rows = [
        {
            "worker": w,
            "heartbeat_age": (now - w.last_heartbeat).total_seconds(),
            "freshness": w.freshness(now),
            "status_label": SHOP_STATUS_LABELS.get(w.status, w.status),
            "buckets": buckets_by_owner.get(w.pk, 0) if w.is_live else 0,
            "queued": queued_by_owner.get(w.pk, 0) if w.is_live else 0,
            "preparing": preparing_by_worker.get(w.pk, 0),
        }
        for w in workers
    ]
    queued_orders = Order.objects.filter(status=Order.Status.QUEUED)
    depth_by_priority = sorted(queued_orders.values_list("priority").annotate(n=Count("pk")).order_by(), reverse=True)
    return {
        "now": now,
        "workers": rows,
        "orphaned_buckets": Bucket.objects.orphaned().count(),
        "total_buckets": sum(buckets_by_owner.values()),
        "depth_by_priority": depth_by_priority,
        "queued_total": sum(n for _priority, n in depth_by_priority),
        "preparing_total": sum(preparing_by_worker.values()),
        "done_last_minute": OrderEvent.objects.done_since(now - timedelta(minutes=1)),
        **_handover_panel(),
        "overdue": overdue_stages(now)[:20],
        "late": _with_promises(late_orders(now, limit=20)),
    }


def _handover_panel() -> dict[str, Any]:
    """Each shop's counter, shelf and drivers out: only orders awaiting their hand-over are
    read (`order_handover_pending_idx`), never the table."""
    waiting = Order.objects.awaiting_handover()
    by_shop: dict[str, dict[str, Any]] = {}
    for name, step, count in waiting.values_list("worker__name", "handover").annotate(n=Count("pk")).order_by():
        row = by_shop.setdefault(name or "—", {"shop": name or "—", "counter": 0, "shelf": 0, "out": 0})
        row[step] = count
    drivers_out = list(
        waiting.filter(handover=Order.Handover.OUT).select_related("driver", "worker").order_by("out_at")[:20]
    )
    return {"handover": sorted(by_shop.values(), key=lambda row: row["shop"]), "drivers_out": drivers_out}


def _with_promises(orders: list[Order]) -> list[Order]:
    order: Any  # each row carries its promised time
    for order in orders:
        order.promised_at = promised_at(order)
    return orders
