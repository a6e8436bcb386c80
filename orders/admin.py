"""Admin for operators: orders (read-only, changed only through queue actions), their
events (read-only), and the menu (editable).

Every changelist stays fast with a million orders (`workers.admin.FastChangeList`):
no full-table COUNT, no facet counts, no DISTINCT scans for filter choices,
and related rows joined in the page query.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from orders.handlers import operator_may_cancel
from orders.models import KitchenStaff, Pizza
from workers import clock, queue
from workers.admin import FastChangeList, ReadOnlyAdmin, age, format_duration
from workers.models import Order, OrderEvent

# An action touches each order in its own transaction; "select all" over a
# million rows must not turn into a million transactions from one click.
MAX_ACTION_ORDERS = 500


def search_by_uuid(queryset: QuerySet, term: str, field: str = "pk") -> QuerySet:
    """Exact-id search: an index lookup, never `icontains` over a cast of every id."""
    term = term.strip()
    if not term:
        return queryset
    try:
        return queryset.filter(**{field: uuid.UUID(term)})
    except ValueError:
        return queryset.none()


class PriorityFilter(admin.SimpleListFilter):
    """Fixed choices: the default filter would scan every order for its distinct values."""

    title = "priority"
    parameter_name = "priority"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [(str(p), str(p)) for p in range(Order.MAX_PRIORITY, Order.MIN_PRIORITY - 1, -1)]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        return queryset.filter(priority=int(value)) if value and value.isascii() and value.isdigit() else queryset


class OrderEventInline(admin.TabularInline):
    model = OrderEvent
    fields = ("id", "created_at", "kind", "stage", "worker", "actor", "message", "data")
    readonly_fields = fields
    ordering = ("id",)
    extra = 0
    can_delete = False
    show_change_link = False

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("worker", "actor")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Order)
class OrderAdmin(FastChangeList, ReadOnlyAdmin):
    list_display = ("id", "status", "stage", "worker", "lease_left", "attempts_used", "order_age", "priority", "kind")
    list_filter = ("status", "kind", PriorityFilter, "worker")

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
    search_help_text = "An order's exact id (UUID)."
    actions = ["requeue_orders", "cancel_orders", "raise_priority_of_orders"]
    inlines = [OrderEventInline]
    fieldsets = [
        (None, {"fields": ("id", "status", "stage", "kind", "items", "note", "customer_name")}),
        ("Routing", {"fields": ("area", "bucket", "pinned_worker", "priority", "rank", "eligible_at")}),
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
    ]

    # Read-only: every change of state goes through an action calling `workers.queue`.
    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f.name for f in Order._meta.fields]

    def has_operate_permission(self, request: HttpRequest) -> bool:
        """Operators who may change orders may act on them (through the queue)."""
        return request.user.has_perm("workers.change_order")

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str) -> tuple[QuerySet, bool]:
        return search_by_uuid(queryset, search_term), False

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
                self.message_user(request, f"Order {order_id}: {exc}", messages.WARNING)
            except ValidationError as exc:
                self.message_user(request, f"Order {order_id}: {' '.join(exc.messages)}", messages.WARNING)
            else:
                succeeded += 1
        if succeeded:
            self.message_user(request, f"{succeeded} order{'s' if succeeded != 1 else ''} {done}.", messages.SUCCESS)

    @admin.action(description="Requeue selected orders (failed, cancelled or preparing)", permissions=["operate"])
    def requeue_orders(self, request: HttpRequest, queryset: QuerySet) -> None:
        # The operator is the event's actor; the reason is what the customer reads.
        actor = request.user.pk
        self._apply(
            request,
            queryset,
            lambda order_id: queue.requeue(order_id, "requeued by an operator", actor_id=actor),
            "requeued",
        )

    @admin.action(description="Cancel selected queued orders", permissions=["operate"])
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


@admin.register(OrderEvent)
class OrderEventAdmin(FastChangeList, ReadOnlyAdmin):
    """The timeline and outbox: written only by the queue, so read-only here."""

    list_display = ("id", "order_link", "kind", "created_at", "worker", "actor", "stage", "message")
    list_filter = ("kind",)
    list_select_related = ("worker", "actor")
    search_fields = ("=order__id",)
    search_help_text = "An order's exact id (UUID)."
    ordering = ("-id",)

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str) -> tuple[QuerySet, bool]:
        return search_by_uuid(queryset, search_term, "order_id"), False

    @admin.display(description="order")
    def order_link(self, event: OrderEvent) -> str:
        # The id alone, so the page needs no join to the orders table.
        url = reverse("admin:workers_order_change", args=[event.order_id])
        return format_html('<a href="{}">{}</a>', url, event.order_id)


@admin.register(Pizza)
class PizzaAdmin(admin.ModelAdmin):
    """The menu: operators edit it; orders are checked against it at intake."""

    list_display = ("name", "slug", "price_cents", "bake_seconds", "available")
    list_editable = ("available",)
    list_filter = ("available",)
    search_fields = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}


@admin.register(KitchenStaff)
class KitchenStaffAdmin(admin.ModelAdmin):
    """Who staffs which kitchen: a member of the `kitchen staff` group works these shops' displays only."""

    list_display = ("user", "shop")
    list_select_related = ("user",)
    search_fields = ("=user__username", "=shop")
    raw_id_fields = ("user",)
