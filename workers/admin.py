"""Admin for operators: workers (heartbeats, load; drain and declare-dead actions),
bucket ownership with queue depth, and the audit of bucket moves. All read-only:
these rows are written by workers and the monitor, and operators act through
`workers.membership` and `workers.monitor`.

Every changelist stays fast with a million rows (`FastChangeList`, shared
with the shop's admin of orders): no full-table COUNT, no facet counts.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from django.contrib import admin, messages
from django.core.paginator import Paginator
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.functional import cached_property
from django.utils.html import format_html

from workers import clock, membership, monitor
from workers.models import Bucket, BucketMove, BucketQuerySet, MonitorLease, Worker, WorkerQuerySet

# A kitchen's status in the words the site uses (docs/glossary.md; the shop's pages read
# `orders.timeline.SHOP_STATUS_LABELS`, which the engine does not import).
SHOP_WORDS = {"alive": "open", "draining": "closing", "stopped": "closed", "dead": "down"}


def format_duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d {seconds % 86400 // 3600}h"


def age(moment: datetime | None, now: datetime) -> str:
    """How long ago, by the database's clock (`now`: the row's `db_now`, see `clock.with_db_now`)."""
    return "—" if moment is None else format_duration((now - moment).total_seconds())


class ReadOnlyAdmin(admin.ModelAdmin):
    """For system-written tables: rows are looked at, never edited by hand."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class CappedCountPaginator(Paginator):
    """A Django paginator whose count stops at `cap` rows.

    Admin calls `count` on every changelist load; a plain COUNT(*) over a
    million orders is a full scan. Counting through `LIMIT cap` costs at most
    `cap` index entries, and pages past the cap are reached by filtering or
    searching, which is what operators do with a big queue anyway.
    """

    cap = 10_000

    @cached_property
    def count(self) -> int:
        if isinstance(self.object_list, models.QuerySet):
            return self.object_list.order_by()[: self.cap].count()
        return min(len(self.object_list), self.cap)


class FastChangeList(admin.ModelAdmin):
    """What every big table's admin shares: bounded counts, no facets."""

    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    paginator = CappedCountPaginator


@admin.register(Worker)
class WorkerAdmin(FastChangeList, ReadOnlyAdmin):
    list_display = (
        "name",
        "incarnation",
        "shop_status",
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

    class Media:
        css = {"all": ["workers/admin.css"]}

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        # Counts as correlated subqueries in the page query: no query per row.
        return clock.with_db_now(cast(WorkerQuerySet, super().get_queryset(request)).with_load())

    def has_operate_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("workers.change_worker")

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        # The site calls them kitchens (docs/glossary.md); the table keeps the engine's name.
        return super().changelist_view(request, {"title": "Kitchens", **(extra_context or {})})

    @admin.display(description="status")
    def shop_status(self, worker: Worker) -> str:
        return SHOP_WORDS.get(worker.status, worker.status)

    @admin.display(description="heartbeat age", ordering="last_heartbeat")
    def heartbeat(self, worker: Worker) -> str:
        # Coloured by `Worker.freshness` in workers/admin.css: green, amber, red; grey once it left the ring.
        now = worker.db_now  # type: ignore[attr-defined]  # annotated by `clock.with_db_now`
        state = worker.freshness(now)
        return format_html(
            '<span class="freshness freshness-{}" title="{}">{}</span>', state, state, age(worker.last_heartbeat, now)
        )

    @admin.display(description="owned buckets", ordering="owned_buckets")
    def owned_buckets(self, worker: Any) -> int:  # annotated by `with_load`
        return worker.owned_buckets

    @admin.display(description="in flight", ordering="in_flight")
    def in_flight(self, worker: Any) -> int:
        return worker.in_flight

    @admin.action(description="Close (drain): finish what it holds, take no more, stop", permissions=["operate"])
    def drain_workers(self, request: HttpRequest, queryset: QuerySet) -> None:
        for worker in queryset.order_by("pk"):
            if membership.drain(worker.pk):
                self.message_user(request, f"{worker} is closing.", messages.SUCCESS)
            else:
                self.message_user(
                    request,
                    f"{worker} is {SHOP_WORDS.get(worker.status, worker.status)}; only an open kitchen can close.",
                    messages.WARNING,
                )

    @admin.action(description="Declare down: move its orders to open kitchens now", permissions=["operate"])
    def declare_workers_dead(self, request: HttpRequest, queryset: QuerySet) -> None:
        reason = f"declared dead by operator {request.user.get_username()}"
        for worker in queryset.order_by("pk"):
            recovery = monitor.declare_dead(worker.pk, reason=reason, actor_id=request.user.pk)
            if recovery is None:
                self.message_user(
                    request,
                    f"{worker} is {SHOP_WORDS.get(worker.status, worker.status)}; it is not open.",
                    messages.WARNING,
                )
                continue
            self.message_user(
                request,
                f"{worker} declared down: {len(recovery.requeued)} requeued, {len(recovery.failed)} failed, "
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
        return cast(BucketQuerySet, super().get_queryset(request)).with_depth()

    @admin.display(description="queued", ordering="queued")
    def queued(self, bucket: Any) -> int:  # annotated by `with_depth`
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
