"""Orders, their events (timeline and outbox) and the menu they are checked against."""

from __future__ import annotations

import uuid
from datetime import datetime

from django.db import models
from django.db.models import Q

from workers.models import Worker


class Size(models.TextChoices):
    SMALL = "small"
    MEDIUM = "medium"
    LARGE = "large"


# How much longer (and dearer) a size is than a medium.
SIZE_FACTOR = {Size.SMALL: 0.8, Size.MEDIUM: 1.0, Size.LARGE: 1.3}


class Pizza(models.Model):
    """A menu entry; orders name pizzas by slug and are validated against this table."""

    slug = models.SlugField(max_length=50, unique=True)
    name = models.CharField(max_length=100)
    description = models.CharField(max_length=300, blank=True)
    price_cents = models.PositiveIntegerField()
    # Seconds a medium one spends in the kitchen at speed 1.0.
    bake_seconds = models.PositiveIntegerField(default=60)
    available = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class OrderQuerySet(models.QuerySet):
    # claimable().owned_by().in_claim_order() is what a kitchen would claim next, for
    # displays: the claim itself runs the SQL text `queue._CLAIMABLE`, and a test
    # holds the two together.

    def claimable(self, now: datetime) -> OrderQuerySet:
        """Queued orders whose `not_before` (or retry backoff) has passed."""
        return self.filter(status=Order.Status.QUEUED, eligible_at__lte=now)

    def in_claim_order(self) -> OrderQuerySet:
        """Effective priority first (priority raised by age), then age: see `queue.rank_for`."""
        return self.order_by("rank", "created_at")

    def owned_by(self, worker_id: int) -> OrderQuerySet:
        """Orders in the worker's buckets or pinned to it."""
        # A pinned (takeaway) order belongs to its shop alone, whoever owns its bucket.
        owned = Q(pinned_worker__isnull=True, bucket__in=models.Subquery(_owned_bucket_numbers(worker_id)))
        owned |= Q(pinned_worker_id=worker_id)
        return self.filter(owned)

    def in_buckets(self, numbers: list[int]) -> OrderQuerySet:
        """Orders routed to any of these buckets."""
        return self.filter(bucket__in=numbers)

    def held_by(self, worker_id: int) -> OrderQuerySet:
        """Orders a worker is preparing right now."""
        return self.filter(status=Order.Status.PREPARING, worker_id=worker_id)

    def expired_leases(self, now: datetime) -> OrderQuerySet:
        """Orders being prepared whose lease ran out without a heartbeat to extend it."""
        return self.filter(status=Order.Status.PREPARING, lease_expires_at__lt=now)

    def finished(self) -> OrderQuerySet:
        """Orders in a final state."""
        return self.filter(status__in=Order.FINAL_STATUSES)


def _owned_bucket_numbers(worker_id: int) -> models.QuerySet:
    from workers.models import Bucket

    return Bucket.objects.filter(owner_id=worker_id).values("number")


class Order(models.Model):
    class Status(models.TextChoices):
        # Confirmed and waiting for a kitchen (possibly until `eligible_at`).
        QUEUED = "queued"
        # Claimed by a worker that holds its lease token.
        PREPARING = "preparing"
        # Completed once, by the lease holder.
        DONE = "done"
        # Attempts exhausted: the dead letter, kept with its last error.
        FAILED = "failed"
        # Withdrawn by the customer, an operator, or the death of its pinned shop.
        CANCELLED = "cancelled"

    class Kind(models.TextChoices):
        # May move to another kitchen when its kitchen dies.
        DELIVERY = "delivery"
        # Pinned to one shop; cancelled if that shop dies.
        TAKEAWAY = "takeaway"

    FINAL_STATUSES = (Status.DONE, Status.FAILED, Status.CANCELLED)
    MIN_PRIORITY = 0
    MAX_PRIORITY = 9

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    status = models.CharField(
        max_length=max(len(s) for s in Status.values), choices=Status.choices, default=Status.QUEUED
    )
    kind = models.CharField(max_length=max(len(k) for k in Kind.values), choices=Kind.choices, default=Kind.DELIVERY)
    items = models.JSONField()
    note = models.TextField(blank=True)
    customer_name = models.CharField(max_length=100, blank=True)
    # The delivery area: the routing key. Empty means "route by the order id".
    area = models.CharField(max_length=64, blank=True)
    bucket = models.PositiveIntegerField()
    pinned_worker = models.ForeignKey(
        Worker, null=True, blank=True, on_delete=models.SET_NULL, related_name="pinned_orders"
    )
    priority = models.SmallIntegerField(default=0)
    # Claim order key in microseconds: smaller goes first (see queue.rank_for).
    rank = models.BigIntegerField()
    eligible_at = models.DateTimeField()
    attempts = models.PositiveSmallIntegerField(default=0)
    max_attempts = models.PositiveSmallIntegerField(default=3)
    worker = models.ForeignKey(Worker, null=True, blank=True, on_delete=models.SET_NULL, related_name="orders")
    lease_token = models.UUIDField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    stage = models.CharField(max_length=20, blank=True)
    estimated_seconds = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    cancel_reason = models.CharField(max_length=200, blank=True)
    # NULL, not "", for "no key": the unique constraint must not treat keyless orders as duplicates.
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001
    # Fingerprint of the request that used the key, to tell a retry from a clash.
    request_hash = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField()
    claimed_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = OrderQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(priority__gte=0, priority__lte=9), name="order_priority_range"),
            models.CheckConstraint(
                condition=Q(attempts__lte=models.F("max_attempts")), name="order_attempts_within_max"
            ),
            models.CheckConstraint(condition=Q(max_attempts__gte=1), name="order_max_attempts_positive"),
            # The fencing token exists exactly while a worker holds the order.
            models.CheckConstraint(
                condition=(
                    Q(status="preparing", lease_token__isnull=False, lease_expires_at__isnull=False)
                    | (~Q(status="preparing") & Q(lease_token__isnull=True))
                ),
                name="order_lease_iff_preparing",
            ),
            models.CheckConstraint(
                condition=Q(pinned_worker__isnull=True) | Q(kind="takeaway"), name="order_only_takeaway_pinned"
            ),
            models.UniqueConstraint(
                fields=["idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="order_unique_idempotency_key",
            ),
        ]
        indexes = [
            # Serves the claim: queued orders walked in (rank, created_at) order, the
            # claim's ORDER BY, so no sort of the backlog; finished rows are not in it.
            models.Index(fields=["rank", "created_at"], condition=Q(status="queued"), name="order_claim_idx"),
            # Serves per-bucket queue depth (board, admin) and moving a bucket's orders.
            models.Index(fields=["bucket"], condition=Q(status="queued"), name="order_queued_bucket_idx"),
            # Serves the cancellation of a dead shop's takeaway orders, and pinned claims.
            models.Index(fields=["pinned_worker"], condition=Q(status="queued"), name="order_queued_pinned_idx"),
            # Serves heartbeat lease extension and re-queueing a dead worker's orders.
            models.Index(fields=["worker"], condition=Q(status="preparing"), name="order_preparing_worker_idx"),
            # Serves expired-lease recovery.
            models.Index(fields=["lease_expires_at"], condition=Q(status="preparing"), name="order_lease_expiry_idx"),
            # Serves status-filtered lists newest first, and purging old finished orders.
            models.Index(fields=["status", "created_at"], name="order_status_created_idx"),
        ]

    def __str__(self) -> str:
        return f"order {self.id} ({self.status})"

    @property
    def is_final(self) -> bool:
        return self.status in self.FINAL_STATUSES


class OrderEvent(models.Model):
    """One step in an order's life, written in the transaction that made it.

    Rows are the customer's timeline and the outbox that live updates are
    read from, in `id` order.
    """

    class Kind(models.TextChoices):
        PLACED = "placed"
        CLAIMED = "claimed"
        STAGE = "stage"
        DONE = "done"
        RETRIED = "retried"
        RELEASED = "released"
        REASSIGNED = "reassigned"
        FAILED = "failed"
        CANCELLED = "cancelled"
        LEASE_LOST = "lease-lost"
        RUSHED = "rushed"

    id = models.BigAutoField(primary_key=True)
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=max(len(k) for k in Kind.values), choices=Kind.choices)
    created_at = models.DateTimeField()
    worker = models.ForeignKey(Worker, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    stage = models.CharField(max_length=20, blank=True)
    message = models.CharField(max_length=500, blank=True)
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            # Serves an order's timeline and a reconnecting client's replay.
            models.Index(fields=["order", "id"], name="event_order_timeline_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.order_id}"
