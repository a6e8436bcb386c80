"""Admin for operators: orders (read-only, changed only through queue actions), their
events (read-only), and the menu (editable).

Every changelist stays fast with a million orders (`workers.admin.FastChangeList`):
no full-table COUNT, no facet counts, no DISTINCT scans for filter choices,
and related rows joined in the page query.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from orders import deadlines
from orders.handlers import operator_may_cancel
from orders.models import DeliveryFee, Driver, KitchenStaff, Pizza
from orders.money import money
from orders.receipts import pizza_names, receipt_lines
from orders.timeline import KIND_LABELS
from workers import clock, queue
from workers.admin import FastChangeList, ReadOnlyAdmin, age, format_duration
from workers.models import Order, OrderEvent

# An action touches each order in its own transaction; "select all" over a
# million rows must not turn into a million transactions from one click.
MAX_ACTION_ORDERS = 500


SHORT_ID = re.compile(r"#?([0-9a-f]{4,32})", re.IGNORECASE)


def id_range(prefix: str) -> tuple[uuid.UUID, uuid.UUID]:
    """The ids starting with `prefix` (hex digits) as a range, so the primary key's index
    answers it on every database (a prefix `LIKE` would cast every id to text)."""
    prefix = prefix.lower()
    return uuid.UUID(prefix.ljust(32, "0")), uuid.UUID(prefix.ljust(32, "f"))


def search_by_uuid(queryset: QuerySet, term: str, field: str = "pk") -> QuerySet:
    """Search by id: a whole UUID, or the short id every page shows (`#372e0100`,
    at least 4 hex digits), each an index range; anything else finds nothing."""
    term = term.strip()
    if not term:
        return queryset
    try:
        return queryset.filter(**{field: uuid.UUID(term)})
    except ValueError:
        pass
    short = SHORT_ID.fullmatch(term)
    if short is None:
        return queryset.none()
    low, high = id_range(short.group(1))
    return queryset.filter(**{f"{field}__gte": low, f"{field}__lte": high})


def search_orders(queryset: QuerySet, term: str) -> QuerySet:
    """An operator's search box: an order's id or short id (each an index range), else the
    customer's name (its start, any case) or the delivery area (whole, any case). Names and
    areas are read along the list's own index order, newest first, so a page of matches
    comes at once; a name that is also hex ("Beef") is tried as a short id first."""
    term = term.strip()
    if not term:
        return queryset
    by_id = search_by_uuid(queryset, term)
    if SHORT_ID.fullmatch(term) is not None and by_id.exists():
        return by_id
    try:
        uuid.UUID(term)
    except ValueError:
        return queryset.filter(Q(customer_name__istartswith=term) | Q(area__iexact=term))
    return by_id


class KindFilter(admin.SimpleListFilter):
    """Event kinds in the site's words (rushed, moved, kitchen stopped), fixed choices."""

    title = "what"
    parameter_name = "kind"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return list(KIND_LABELS.items())

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        return queryset.filter(kind=value) if value in KIND_LABELS else queryset


class PriorityFilter(admin.SimpleListFilter):
    """Fixed choices: the default filter would scan every order for its distinct values."""

    title = "priority"
    parameter_name = "priority"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [(str(p), str(p)) for p in range(Order.MAX_PRIORITY, Order.MIN_PRIORITY - 1, -1)]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        return queryset.filter(priority=int(value)) if value and value.isascii() and value.isdigit() else queryset


def who(event: OrderEvent) -> str:
    """Who made an event happen: the person (an operator, a customer's account), else the
    role the queue recorded (`by`: staff at a display, an operator), else the kitchen or
    the customer the reason names; the monitor otherwise."""
    if event.actor_id is not None and event.actor is not None:
        return event.actor.get_username()
    by = event.data.get("by") if isinstance(event.data, dict) else None
    if by:
        return f"{by} at {event.worker.name}" if by == "staff" and event.worker is not None else str(by)
    if event.kind == OrderEvent.Kind.CANCELLED and "customer" in event.message:
        return "customer"
    if event.kind == OrderEvent.Kind.PLACED:
        return "customer"
    if event.worker is not None and event.kind in (
        OrderEvent.Kind.CLAIMED,
        OrderEvent.Kind.STAGE,
        OrderEvent.Kind.DONE,
        OrderEvent.Kind.FAILED,
        OrderEvent.Kind.LEASE_LOST,
        OrderEvent.Kind.RELEASED,
    ):
        return f"kitchen {event.worker.name}"
    return "monitor"


class OrderEventInline(admin.TabularInline):
    model = OrderEvent
    fields = ("id", "created_at", "kind_label", "stage", "worker", "who", "message")
    readonly_fields = fields
    ordering = ("id",)
    extra = 0
    can_delete = False
    show_change_link = False

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("worker", "actor")

    @admin.display(description="what")
    def kind_label(self, event: OrderEvent) -> str:
        return KIND_LABELS.get(event.kind, event.kind)

    @admin.display(description="by")
    def who(self, event: OrderEvent) -> str:
        return who(event)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Order)
class OrderAdmin(FastChangeList, ReadOnlyAdmin):
    # Narrow columns, so the list fits a 1280 px screen: the short id every page shows, not the UUID.
    list_display = (
        "short_id",
        "status",
        "stage",
        "shop",
        "customer_name",
        "area",
        "order_age",
        "priority",
        "kind",
        "total_readable",
        "attempts_used",
    )
    list_display_links = ("short_id",)
    list_filter = ("status", "handover", "kind", PriorityFilter, "worker")

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return clock.with_db_now(super().get_queryset(request))

    list_select_related = ("worker",)
    # Waiting orders first (queued, preparing, failed, done, cancelled), newest
    # first within each: the order of `order_status_created_idx`, so a page is
    # an index range scan at any table size. Sorting by other columns would be
    # a sort of the whole table, so the column headers do not sort.
    ordering = ("-status", "-created_at")
    sortable_by = ()
    search_fields = ("=id",)
    search_help_text = "An order's short id (#372e0100) or full id, the customer's name, or the delivery area."
    actions = ["requeue_orders", "cancel_orders", "raise_priority_of_orders", "put_back_on_the_shelf"]
    inlines = [OrderEventInline]
    fieldsets = [
        (None, {"fields": ("id", "status", "stage", "kind", "items_readable", "note")}),
        ("Customer (personal data)", {"fields": ("customer_name", "address", "phone")}),
        ("Routing", {"fields": ("area", "bucket", "pinned_shop", "priority", "rank", "eligible_at")}),
        (
            "Kitchen",
            {
                "fields": (
                    "worker",
                    "lease_token",
                    "lease_expires_at",
                    "attempts",
                    "max_attempts",
                    "estimated_seconds",
                    "last_error",
                    "cancel_reason",
                )
            },
        ),
        ("Intake", {"fields": ("idempotency_key", "request_hash", "created_at", "claimed_at", "finished_at")}),
        (
            "Hand-over",
            {"fields": ("handover", "driver", "out_at", "handed_over_at", "paid_at", "payment_method", "total")},
        ),
    ]

    # Read-only: every change of state goes through an action calling `workers.queue`.
    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f.name for f in Order._meta.fields] + ["items_readable"]

    def has_operate_permission(self, request: HttpRequest) -> bool:
        """Operators who may change orders may act on them (through the queue)."""
        return request.user.has_perm("workers.change_order")

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str) -> tuple[QuerySet, bool]:
        return search_orders(queryset, search_term), False

    @admin.display(description="order")
    def short_id(self, order: Order) -> str:
        return f"#{str(order.pk)[:8]}"

    @admin.display(description="kitchen")
    def shop(self, order: Order) -> str:
        return order.worker.name if order.worker is not None else "—"

    @admin.display(description="items")
    def items_readable(self, order: Order) -> str:
        """One line per item at the price it was ordered at, the delivery fee and the total."""
        lines = receipt_lines(order, pizza_names())
        return format_html_join(
            "\n", "<div>{}: {}</div>", ((line, money(amount)) for line, amount in lines)
        ) + format_html("<div><strong>Total: {}</strong></div>", money(order.total))

    @admin.display(description="total")
    def total_readable(self, order: Order) -> str:
        return money(order.total)

    @admin.display(description="lease left")
    def lease_left(self, order: Order) -> str:
        if order.status != Order.Status.PREPARING or order.lease_expires_at is None:
            return "—"
        left = (order.lease_expires_at - order.db_now).total_seconds()  # type: ignore[attr-defined]
        return format_duration(left) if left >= 0 else f"expired {format_duration(-left)} ago"

    @admin.display(description="attempts")
    def attempts_used(self, order: Order) -> str:
        return f"{order.attempts}/{order.max_attempts}"

    @admin.display(description="age")
    def order_age(self, order: Order) -> str:
        return age(order.created_at, order.db_now)  # type: ignore[attr-defined]

    def _apply(
        self, request: HttpRequest, queryset: QuerySet, operation: Callable[[uuid.UUID], object], done: str
    ) -> None:
        """Run a queue operation per order, reporting each failure by order id."""
        ids = list(queryset.order_by().values_list("pk", flat=True)[: MAX_ACTION_ORDERS + 1])
        if len(ids) > MAX_ACTION_ORDERS:
            self.message_user(
                request,
                f"Select at most {MAX_ACTION_ORDERS} orders per action (filter the list first).",
                messages.ERROR,
            )
            return
        succeeded = 0
        for order_id in ids:
            try:
                operation(order_id)
            except (queue.InvalidTransitionError, queue.OrderNotFoundError) as exc:
                self.message_user(request, f"Order #{str(order_id)[:8]}: {exc}", messages.WARNING)
            except ValidationError as exc:
                self.message_user(request, f"Order #{str(order_id)[:8]}: {' '.join(exc.messages)}", messages.WARNING)
            else:
                succeeded += 1
        if succeeded:
            self.message_user(request, f"{succeeded} order{'s' if succeeded != 1 else ''} {done}.", messages.SUCCESS)

    @admin.action(description="Requeue selected orders (failed, or stuck in a kitchen)", permissions=["operate"])
    def requeue_orders(self, request: HttpRequest, queryset: QuerySet) -> None:
        # The operator is the event's actor; the reason is what the customer reads.
        actor = request.user.pk

        self._apply(
            request,
            queryset,
            lambda order_id: deadlines.requeue(order_id, "requeued by an operator", actor_id=actor),
            "requeued",
        )

    @admin.action(
        description="Cancel selected orders (waiting, or in a kitchen: it stops at its next step)",
        permissions=["operate"],
    )
    def cancel_orders(self, request: HttpRequest, queryset: QuerySet) -> None:
        actor = request.user.pk
        self._apply(
            request,
            queryset,
            lambda order_id: queue.cancel(
                order_id, "cancelled by an operator", if_held=operator_may_cancel, actor_id=actor
            ),
            "cancelled",
        )

    @admin.action(description="Rush selected queued orders (top priority)", permissions=["operate"])
    def raise_priority_of_orders(self, request: HttpRequest, queryset: QuerySet) -> None:
        actor = request.user.pk
        self._apply(request, queryset, lambda order_id: queue.raise_priority(order_id, actor_id=actor), "rushed")

    @admin.action(description="Put selected orders out for delivery back on their shelf", permissions=["operate"])
    def put_back_on_the_shelf(self, request: HttpRequest, queryset: QuerySet) -> None:
        """A driver who cannot go on: the order goes back on its shop's shelf for another, and
        the driver's phone changes nothing any more (its token is revoked)."""
        actor = request.user.pk

        def back(order_id: uuid.UUID) -> None:
            if not queue.back_to_shelf(order_id, actor_id=actor):
                raise queue.InvalidTransitionError("Not out for delivery.")

        self._apply(request, queryset, back, "put back on the shelf")


@admin.register(OrderEvent)
class OrderEventAdmin(FastChangeList, ReadOnlyAdmin):
    """The timeline and outbox: written only by the queue, so read-only here."""

    list_display = ("id", "order_link", "kind_label", "created_at", "worker", "who", "stage", "message")
    list_filter = (KindFilter,)
    list_select_related = ("worker", "actor")

    @admin.display(description="what")
    def kind_label(self, event: OrderEvent) -> str:
        return KIND_LABELS.get(event.kind, event.kind)

    @admin.display(description="by")
    def who(self, event: OrderEvent) -> str:
        return who(event)

    search_fields = ("=order__id",)
    search_help_text = "An order's exact id (UUID)."
    ordering = ("-id",)

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str) -> tuple[QuerySet, bool]:
        return search_by_uuid(queryset, search_term, "order_id"), False

    @admin.display(description="order")
    def order_link(self, event: OrderEvent) -> str:
        # The id alone, so the page needs no join to the orders table.
        url = reverse("admin:workers_order_change", args=[event.order_id])
        return format_html('<a href="{}">#{}</a>', url, str(event.order_id)[:8])


@admin.register(Pizza)
class PizzaAdmin(admin.ModelAdmin):
    """The menu: operators edit it; orders are checked against it at intake."""

    list_display = ("name", "slug", "price_small", "price_medium", "price_large", "bake_seconds", "available")
    list_editable = ("available",)
    list_filter = ("available",)
    search_fields = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}


@admin.register(DeliveryFee)
class DeliveryFeeAdmin(admin.ModelAdmin):
    """Delivery areas with a fee of their own; every other area pays PIZZAQUEUE_DELIVERY_FEE."""

    list_display = ("area", "fee")
    search_fields = ("area",)


@admin.register(Driver)
class DriverAdmin(admin.ModelAdmin):
    """Who drives for which shop: a member of the `drivers` group works these shops' shelves only."""

    list_display = ("user", "shop")
    list_select_related = ("user",)
    search_fields = ("=user__username", "=shop")
    raw_id_fields = ("user",)


@admin.register(KitchenStaff)
class KitchenStaffAdmin(admin.ModelAdmin):
    """Who staffs which kitchen: a member of the `kitchen staff` group works these shops' displays only."""

    list_display = ("user", "shop")
    list_select_related = ("user",)
    search_fields = ("=user__username", "=shop")
    raw_id_fields = ("user",)
