"""Admin for operators: kitchens (heartbeats, load; drain and declare-dead actions),
bucket ownership with queue depth, and the audit of bucket moves. All read-only:
these rows are written by workers and the monitor, and operators act through
`orders.queue`.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin, messages
from django.db.models import Count, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html

from orders import queue
from orders.admin import FastChangeList, ReadOnlyAdmin, age
from orders.models import Order
from workers.models import Bucket, BucketMove, MonitorLease, Worker

HEARTBEAT_COLOURS = {"fresh": "#1a7f37", "late": "#b58105", "stale": "#cf222e", "gone": "#6e7781"}


def heartbeat_state(worker: Worker) -> str:
    """fresh (green) within a third of the timeout, late (amber) before it, stale (red) past it."""
    if worker.status not in Worker.LIVE_STATUSES:
        return "gone"
    seconds = (timezone.now() - worker.last_heartbeat).total_seconds()
    timeout = settings.PIZZAQUEUE_HEARTBEAT_TIMEOUT
    if seconds < timeout / 3:
        return "fresh"
    return "late" if seconds < timeout else "stale"


@admin.register(Worker)
class WorkerAdmin(FastChangeList, ReadOnlyAdmin):
    list_display = (
        "name",
        "incarnation",
        "status",
        "heartbeat",
        "owned_buckets",
        "in_flight",
        "concurrency",
        "host",
        "pid",
        "started_at",
    )
    list_filter = ("status",)
    search_fields = ("name",)
    ordering = ("-id",)
    actions = ["drain_workers", "declare_workers_dead"]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        # Counts as correlated subqueries in the page query: no query per row.
        return super().get_queryset(request).with_load()

    def has_operate_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("workers.change_worker")

    @admin.display(description="heartbeat age", ordering="last_heartbeat")
    def heartbeat(self, worker: Worker) -> str:
        state = heartbeat_state(worker)
        return format_html(
            '<span style="color: {}; font-weight: bold" title="{}">{}</span>',
            HEARTBEAT_COLOURS[state],
            state,
            age(worker.last_heartbeat),
        )

    @admin.display(description="owned buckets", ordering="owned_buckets")
    def owned_buckets(self, worker: Worker) -> int:
        return worker.owned_buckets

    @admin.display(description="in flight", ordering="in_flight")
    def in_flight(self, worker: Worker) -> int:
        return worker.in_flight

    @admin.action(description="Drain: finish in-flight orders, claim no more, stop", permissions=["operate"])
    def drain_workers(self, request: HttpRequest, queryset: QuerySet) -> None:
        for worker in queryset.order_by("pk"):
            if queue.drain_worker(worker.pk):
                self.message_user(request, f"{worker} is draining.", messages.SUCCESS)
            else:
                self.message_user(
                    request, f"{worker} is {worker.status}; only an alive worker can be drained.", messages.WARNING
                )

    @admin.action(description="Declare dead: re-queue its orders now", permissions=["operate"])
    def declare_workers_dead(self, request: HttpRequest, queryset: QuerySet) -> None:
        reason = f"declared dead by operator {request.user.get_username()}"
        for worker in queryset.order_by("pk"):
            recovery = queue.declare_dead(worker.pk, reason=reason)
            if recovery is None:
                self.message_user(request, f"{worker} is {worker.status}; it is not in the ring.", messages.WARNING)
                continue
            self.message_user(
                request,
                f"{worker} declared dead: {len(recovery.requeued)} requeued, {len(recovery.failed)} failed, "
                f"{len(recovery.cancelled)} takeaway orders cancelled, {recovery.moved_buckets} buckets moved.",
                messages.SUCCESS,
            )


@admin.register(Bucket)
class BucketAdmin(FastChangeList, ReadOnlyAdmin):
    list_display = ("number", "owner", "epoch", "queued", "updated_at")
    list_select_related = ("owner",)
    list_filter = ("owner",)
    search_fields = ("=number",)

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        # One count per bucket on the page, each served by the partial index order_queued_bucket_idx.
        depth = (
            Order.objects.filter(status=Order.Status.QUEUED, bucket=OuterRef("number"))
            .order_by()
            .values("bucket")
            .annotate(n=Count("*"))
            .values("n")
        )
        return super().get_queryset(request).annotate(queued=Coalesce(Subquery(depth), 0))

    @admin.display(description="queued", ordering="queued")
    def queued(self, bucket: Bucket) -> int:
        return bucket.queued


@admin.register(BucketMove)
class BucketMoveAdmin(FastChangeList, ReadOnlyAdmin):
    list_display = ("id", "created_at", "bucket", "from_worker", "to_worker", "epoch", "reason")
    list_filter = ("reason",)
    list_select_related = ("from_worker", "to_worker")


@admin.register(MonitorLease)
class MonitorLeaseAdmin(ReadOnlyAdmin):
    list_display = ("name", "holder", "expires_at")
    list_select_related = ("holder",)
