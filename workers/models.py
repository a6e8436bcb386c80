"""The kitchens: worker registrations, bucket ownership and the monitor lease."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import models
from django.db.models import Count, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce


class WorkerQuerySet(models.QuerySet):
    def live(self) -> WorkerQuerySet:
        """Workers that count as members of the ring (alive or draining)."""
        return self.filter(status__in=Worker.LIVE_STATUSES)

    def stale(self, now: datetime, timeout: float) -> WorkerQuerySet:
        """Live workers whose last heartbeat is older than the timeout."""
        return self.live().filter(last_heartbeat__lt=now - timedelta(seconds=timeout))

    def with_load(self) -> WorkerQuerySet:
        """Annotate owned buckets and in-flight orders, as two correlated counts
        (served by the bucket owner FK and the partial `preparing` index), so a
        list of workers costs one query."""
        from orders.models import (
            Order,  # orders depends on workers: import at call time
        )

        owned = (
            Bucket.objects.filter(owner=OuterRef("pk")).order_by().values("owner").annotate(n=Count("*")).values("n")
        )
        in_flight = (
            Order.objects.filter(worker=OuterRef("pk"), status=Order.Status.PREPARING)
            .order_by()
            .values("worker")
            .annotate(n=Count("*"))
            .values("n")
        )
        return self.annotate(owned_buckets=Coalesce(Subquery(owned), 0), in_flight=Coalesce(Subquery(in_flight), 0))


class Worker(models.Model):
    """One incarnation of a `manage.py worker` process (a kitchen)."""

    class Status(models.TextChoices):
        # Claiming and baking; heartbeating.
        ALIVE = "alive"
        # Asked to stop: finishes what it holds, claims nothing new.
        DRAINING = "draining"
        # Stopped cleanly; its unstarted orders were released.
        STOPPED = "stopped"
        # Missed its heartbeats; the monitor re-queued its orders.
        DEAD = "dead"

    LIVE_STATUSES = (Status.ALIVE, Status.DRAINING)

    name = models.CharField(max_length=100)
    incarnation = models.PositiveIntegerField(default=1)
    host = models.CharField(max_length=255, blank=True)
    pid = models.PositiveIntegerField(null=True, blank=True)
    status = models.CharField(
        max_length=max(len(s) for s in Status.values), choices=Status.choices, default=Status.ALIVE
    )
    concurrency = models.PositiveIntegerField(default=1)
    started_at = models.DateTimeField()
    last_heartbeat = models.DateTimeField()
    stopped_at = models.DateTimeField(null=True, blank=True)
    stop_reason = models.CharField(max_length=200, blank=True)

    objects = WorkerQuerySet.as_manager()

    class Meta:
        ordering = ["name", "-incarnation"]
        constraints = [
            # Two live kitchens with one name would make takeaway pinning ambiguous.
            models.UniqueConstraint(
                fields=["name"], condition=Q(status__in=["alive", "draining"]), name="worker_unique_live_name"
            ),
            models.UniqueConstraint(fields=["name", "incarnation"], name="worker_unique_incarnation"),
        ]
        indexes = [
            # Serves Worker.objects.stale(): the monitor's dead-worker sweep.
            models.Index(
                fields=["last_heartbeat"],
                condition=Q(status__in=["alive", "draining"]),
                name="worker_live_heartbeat_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name}#{self.incarnation}"

    @property
    def ring_key(self) -> str:
        """The worker's identity on the hash ring: one per incarnation."""
        return str(self.pk)


class BucketQuerySet(models.QuerySet):
    def orphaned(self) -> BucketQuerySet:
        """Buckets with no owner, or owned by a worker that is no longer live."""
        return self.filter(Q(owner__isnull=True) | ~Q(owner__status__in=Worker.LIVE_STATUSES))


class Bucket(models.Model):
    """A slice of the routing-key space, owned by at most one live worker."""

    number = models.PositiveIntegerField(primary_key=True)
    owner = models.ForeignKey(Worker, null=True, blank=True, on_delete=models.SET_NULL, related_name="buckets")
    # Bumped on every change of owner, so a move is visible to anyone holding an old view.
    epoch = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    objects = BucketQuerySet.as_manager()

    class Meta:
        ordering = ["number"]

    def __str__(self) -> str:
        return f"bucket {self.number}"


class BucketMove(models.Model):
    """One bucket changing hands, for operators to audit rebalancing."""

    class Reason(models.TextChoices):
        JOIN = "join"
        STOP = "stop"
        DEATH = "death"
        REBALANCE = "rebalance"

    bucket = models.PositiveIntegerField()
    from_worker = models.ForeignKey(Worker, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    to_worker = models.ForeignKey(Worker, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    epoch = models.PositiveIntegerField()
    reason = models.CharField(max_length=max(len(r) for r in Reason.values), choices=Reason.choices)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"bucket {self.bucket}: {self.from_worker_id} -> {self.to_worker_id} ({self.reason})"


class MonitorLease(models.Model):
    """The single row whose holder runs the monitor duty (the election)."""

    name = models.CharField(max_length=50, primary_key=True)
    holder = models.ForeignKey(Worker, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    expires_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name}: {self.holder_id} until {self.expires_at}"
