"""The queue engine's tables: orders and their events, workers, buckets, the monitor lease.

An order is the engine's task: what it carries (`items`, `note`, …) is the
shop's business, but its status, lease, routing and attempts are the
engine's, and every change to them is written by `workers.queue` (and the monitor's `workers.recovery`) together
with an `OrderEvent`. The rules the queue and the displays share (the claim
order, the fence, heartbeat freshness, depth per bucket, done since a
moment) are written once here, as queryset methods and constants.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Count, Max, Min, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce

# Claimed first is smallest first: effective priority (see `queue.intake.rank_for`), then age.
# The claim's ORDER BY, the index that serves it and the displays all read this.
CLAIM_ORDER = ("rank", "created_at")
# The app the Order model (and its permissions) belong to.
ORDERS_APP = "workers"


class WorkerQuerySet(models.QuerySet["Worker"]):
    def live(self) -> WorkerQuerySet:
        """Workers still running (alive or draining): they heartbeat and hold leases."""
        return self.filter(status__in=Worker.LIVE_STATUSES)

    def up_at(self, name: str) -> WorkerQuerySet:
        """The live processes of the shop `name`: during a restart or a redeploy there may be
        two incarnations, or none for a moment, and its newest may not be the one up."""
        return self.live().filter(name=name)

    def in_ring(self) -> WorkerQuerySet:
        """Workers that own buckets and take new orders: alive, not draining.

        A draining worker only finishes what it holds, so its buckets go to the
        others at once, not when its last order is done.
        """
        return self.filter(status=Worker.Status.ALIVE)

    def open_shop(self, name: str, now: datetime) -> bool:
        """Whether the shop `name` takes takeaway orders (SPEC §4.4): an incarnation of it is in
        the ring, or its newest one left less than PIZZAQUEUE_SHOP_CLOSED_AFTER ago without
        being closed (a restart, a redeploy, the database away). A shop outlives its processes."""
        newest = self.filter(name=name).order_by("-incarnation").values("status", "stopped_at", "stop_reason").first()
        if newest is None:
            return False
        if self.in_ring().filter(name=name).exists():
            return True
        return newest["status"] != Worker.Status.DRAINING and not shop_closed(newest, now)

    def closed_shops(self, names: Iterable[str], now: datetime) -> list[str]:
        """Of the shops `names`, those closed at `now`: no process of theirs up (a closing one
        included), and their newest incarnation closed by an operator or gone past
        PIZZAQUEUE_SHOP_CLOSED_AFTER; a shop that never ran is closed. Two queries for any
        number of shops, for the monitor's round (`recovery.close_shops`)."""
        names = set(names)
        down = names - set(self.live().filter(name__in=names).values_list("name", flat=True))
        if not down:
            return []
        newest_incarnation = self.filter(name=OuterRef("name")).order_by("-incarnation").values("incarnation")[:1]
        newest = {
            row["name"]: row
            for row in self.filter(name__in=down, incarnation=Subquery(newest_incarnation)).values(
                "name", "status", "stopped_at", "stop_reason"
            )
        }
        return sorted(name for name in down if name not in newest or shop_closed(newest[name], now))

    def stale(self, now: datetime, timeout: float) -> WorkerQuerySet:
        """Live workers whose last heartbeat is older than the timeout."""
        return self.live().filter(last_heartbeat__lt=now - timedelta(seconds=timeout))

    def with_load(self) -> WorkerQuerySet:
        """Annotate owned buckets and in-flight orders, as two correlated counts
        (served by the bucket owner FK and the partial `preparing` index), so a
        list of workers costs one query."""
        owned = (
            Bucket.objects.filter(owner=OuterRef("pk")).order_by().values("owner").annotate(n=Count("*")).values("n")
        )
        in_flight = Order.objects.held_by(OuterRef("pk")).order_by().values("worker").annotate(n=Count("*")).values("n")
        return self.annotate(owned_buckets=Coalesce(Subquery(owned), 0), in_flight=Coalesce(Subquery(in_flight), 0))


# Why a worker left when an operator closed its shop (`membership.drain`, then its stop):
# its takeaway customers are told at once, not after PIZZAQUEUE_SHOP_CLOSED_AFTER.
CLOSED = "drained"


def shop_closed(newest: dict[str, Any], now: datetime) -> bool:
    """Whether a shop whose newest incarnation (status, stopped_at, stop_reason) is no
    longer live is closed at `now`: closed by an operator, or gone past the allowance."""
    if newest["status"] in Worker.LIVE_STATUSES:
        return False
    if newest["stop_reason"] == CLOSED:
        return True
    allowance = timedelta(seconds=settings.PIZZAQUEUE_SHOP_CLOSED_AFTER)
    return newest["stopped_at"] is None or newest["stopped_at"] + allowance <= now


class Worker(models.Model):
    """One incarnation of a `manage.py worker` process (a kitchen, to the shop)."""

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
    # The dotted path of the handler it runs: a staffed kitchen's display shows tap buttons.
    handler = models.CharField(max_length=200, blank=True)

    objects = WorkerQuerySet.as_manager()

    class Meta:
        ordering = ["name", "-incarnation"]
        constraints = [
            # Two live incarnations of one name are a rolling redeploy (`membership.register`).
            # Also serves a shop's lookups by name (`open_shop`), newest incarnation first.
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

    @property
    def is_live(self) -> bool:
        return self.status in self.LIVE_STATUSES

    def freshness(self, now: datetime) -> str:
        """How its heartbeat looks: `fresh` (at most one beat missed), `late`, or
        `stale` (past the timeout: the monitor will declare it dead); a worker
        that left the ring is its status (`stopped`, `dead`)."""
        if not self.is_live:
            return self.status
        age = (now - self.last_heartbeat).total_seconds()
        if age <= 2 * settings.PIZZAQUEUE_HEARTBEAT_INTERVAL:
            return "fresh"
        return "late" if age <= settings.PIZZAQUEUE_HEARTBEAT_TIMEOUT else "stale"


class BucketQuerySet(models.QuerySet["Bucket"]):
    def orphaned(self) -> BucketQuerySet:
        """Buckets with no owner, or owned by a worker that is out of the ring."""
        return self.filter(Q(owner__isnull=True) | ~Q(owner__status=Worker.Status.ALIVE))

    def with_depth(self) -> BucketQuerySet:
        """Annotate `queued`: the orders waiting in each bucket, one count per
        bucket served by the partial index `order_queued_bucket_idx`."""
        depth = (
            Order.objects.filter(status=Order.Status.QUEUED, bucket=OuterRef("number"))
            .order_by()
            .values("bucket")
            .annotate(n=Count("*"))
            .values("n")
        )
        return self.annotate(queued=Coalesce(Subquery(depth), 0))


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
        DRAIN = "drain"
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


class OrderQuerySet(models.QuerySet["Order"]):
    def in_claim_order(self) -> OrderQuerySet:
        """Best first: the order the claim takes them in (`CLAIM_ORDER`)."""
        return self.order_by(*CLAIM_ORDER)

    def owned_by(self, worker_id: int) -> OrderQuerySet:
        """Orders in the worker's buckets or pinned to its shop."""
        # A pinned (takeaway) order belongs to its shop alone, whoever owns its bucket.
        owned_buckets = Bucket.objects.filter(owner_id=worker_id).values("number")
        shop = Worker.objects.filter(pk=worker_id).values("name")
        return self.filter(Q(pinned_shop="", bucket__in=Subquery(owned_buckets)) | Q(pinned_shop=Subquery(shop)))

    def in_buckets(self, numbers: list[int]) -> OrderQuerySet:
        """Orders routed to any of these buckets."""
        return self.filter(bucket__in=numbers)

    def held_by(self, worker_id: int | OuterRef) -> OrderQuerySet:
        """Orders a worker is preparing right now."""
        return self.filter(status=Order.Status.PREPARING, worker_id=worker_id)

    def held_under(self, worker_id: int, tokens: Iterable[uuid.UUID]) -> OrderQuerySet:
        """Orders the worker holds under these lease tokens: the ones it knows it has."""
        return self.held_by(worker_id).filter(lease_token__in=list(tokens))

    def leased(self, order_ids: uuid.UUID | list[uuid.UUID], token: uuid.UUID) -> OrderQuerySet:
        """The fence: these orders only while the lease `token` still holds them.

        Every write a worker makes about an order it claimed goes through this
        filter, so a worker whose lease was taken away changes nothing.
        """
        ids = Q(id__in=order_ids) if isinstance(order_ids, list) else Q(id=order_ids)
        return self.filter(ids, status=Order.Status.PREPARING, lease_token=token)

    def expired_leases(self, now: datetime) -> OrderQuerySet:
        """Orders being prepared whose lease ran out without a heartbeat to extend it."""
        return self.filter(status=Order.Status.PREPARING, lease_expires_at__lt=now)

    def awaiting_handover(self) -> OrderQuerySet:
        """Made orders not yet handed over: on a counter, on a shelf or out with a driver
        (served by `order_handover_pending_idx`)."""
        return self.filter(status=Order.Status.DONE, handover__in=Order.HANDOVER_PENDING)

    def at_shop(self, name: str) -> OrderQuerySet:
        """Orders made by the shop (worker) called `name`, any incarnation: a made order stays there."""
        return self.filter(worker__name=name)

    def finished(self) -> OrderQuerySet:
        """Orders in a final state."""
        return self.filter(status__in=Order.FINAL_STATUSES)

    def visible_to(self, user: Any) -> OrderQuerySet:
        """The orders a user may list, read and follow: every order for one who
        `reads_every_order` (operators), only their own for anyone else (so an order
        placed by nobody is the operators' only)."""
        if reads_every_order(user):
            return self
        if not user.is_authenticated:
            return self.none()
        return self.filter(placed_by=user.pk)

    def changeable_by(self, user: Any, session: str = "") -> OrderQuerySet:
        """The orders a user, or a browser `session` (its placing key), may change:
        every order for a user allowed to change orders (an operator), otherwise
        only the ones this user or this browser placed."""
        if user.is_active and user.has_perm(f"{ORDERS_APP}.change_order"):
            return self
        mine = Q(pk__in=[])
        if user.is_authenticated:
            mine |= Q(placed_by=user.pk)
        if session:
            mine |= Q(placed_by_session=session)
        return self.filter(mine)


def reads_every_order(user: Any) -> bool:
    """The one rule for reading (SPEC §9): a user may read, list and follow every order,
    and see what is the operators' business (who did what, where kitchens run), when
    a permission says so: to view orders, or to change them (whoever may change every
    order may read it, as Django's admin has it). `is_staff` alone grants nothing but
    the admin site's door; the permissions decide what is behind it too."""
    if not (user.is_active and user.is_authenticated):
        return False
    return bool(user.has_perm(f"{ORDERS_APP}.view_order") or user.has_perm(f"{ORDERS_APP}.change_order"))


class Order(models.Model):
    class Status(models.TextChoices):
        # Confirmed and waiting for a worker (possibly until `eligible_at`).
        QUEUED = "queued"
        # Claimed by a worker that holds its lease token.
        PREPARING = "preparing"
        # Completed once, by the lease holder.
        DONE = "done"
        # Attempts exhausted: the dead letter, kept with its last error.
        FAILED = "failed"
        # Withdrawn by the customer, an operator, or the closing of the shop it was pinned to.
        CANCELLED = "cancelled"

    class Fulfilment(models.TextChoices):
        # May move to another worker when its worker dies.
        DELIVERY = "delivery"
        # Pinned to one shop (any incarnation of it); cancelled if that shop closes.
        TAKEAWAY = "takeaway"

    class Handover(models.TextChoices):
        # After the kitchen (`done`): where the made order is on its way to the customer.
        # Not made yet, failed or cancelled; or made before hand-overs were recorded.
        NONE = "", "not handed over"
        # A takeaway order waits on its shop's counter to be collected and paid.
        COUNTER = "counter"
        # A delivery order waits on its shop's shelf for a driver.
        SHELF = "shelf"
        # One driver took it (holding `handover_token`) and is on the way.
        OUT = "out"
        # The driver handed it over and was paid: the end of a delivery order's life.
        DELIVERED = "delivered"
        # Collected at the counter and paid: the end of a takeaway order's life.
        COLLECTED = "collected"

    class Payment(models.TextChoices):
        CASH = "cash"
        CARD = "card"

    # Made and waiting at its shop, or on the way: the hand-over is not over.
    HANDOVER_PENDING = (Handover.COUNTER, Handover.SHELF, Handover.OUT)
    HANDED_OVER = (Handover.DELIVERED, Handover.COLLECTED)
    FINAL_STATUSES = (Status.DONE, Status.FAILED, Status.CANCELLED)
    MIN_PRIORITY = 0
    MAX_PRIORITY = 9

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    status = models.CharField(
        max_length=max(len(s) for s in Status.values), choices=Status.choices, default=Status.QUEUED
    )
    kind = models.CharField(
        max_length=max(len(k) for k in Fulfilment.values), choices=Fulfilment.choices, default=Fulfilment.DELIVERY
    )
    items = models.JSONField()
    # What the customer pays, priced by the shop when the order was placed (its items carry
    # their unit prices), in the installation's one currency; never taken from a client.
    total = models.DecimalField(max_digits=10, decimal_places=2, default=Decimal("0"), db_default=Decimal("0"))
    delivery_fee = models.DecimalField(max_digits=7, decimal_places=2, default=Decimal("0"), db_default=Decimal("0"))
    note = models.TextField(blank=True)
    customer_name = models.CharField(max_length=100, blank=True)
    # Where a delivery order goes and whom the driver calls: personal data, shown only to the
    # order's owner and the shop's people (docs/security.md), gone when the order is purged.
    address = models.CharField(max_length=200, blank=True, default="", db_default="")
    phone = models.CharField(max_length=20, blank=True, default="", db_default="")
    # The delivery area: the routing key. Empty means "route by the order id".
    area = models.CharField(max_length=64, blank=True)
    bucket = models.PositiveIntegerField()
    # A takeaway order's shop: the name its kitchens run under, whichever incarnation is up.
    pinned_shop = models.CharField(max_length=100, blank=True, default="", db_default="")
    priority = models.SmallIntegerField(default=0)
    # Claim order key in microseconds: smaller goes first (see `queue.intake.rank_for`).
    rank = models.BigIntegerField()
    eligible_at = models.DateTimeField()
    attempts = models.PositiveSmallIntegerField(default=0)
    max_attempts = models.PositiveSmallIntegerField(default=3)
    worker = models.ForeignKey(Worker, null=True, blank=True, on_delete=models.SET_NULL, related_name="orders")
    lease_token = models.UUIDField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    stage = models.CharField(max_length=20, blank=True)
    # When the current stage was reported; NULL until the first report (the claim's time counts then).
    stage_started_at = models.DateTimeField(null=True, blank=True)
    # A worker that overran a stage of this order: every other worker may take it
    # first, for one heartbeat timeout (the `claimable` statement); then the usual owner again.
    avoid_worker = models.ForeignKey(Worker, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    estimated_seconds = models.PositiveIntegerField(default=0)
    # When its customer is promised it: quoted at placing (PIZZAQUEUE_QUOTE, the shop's to say),
    # revised with a `promised` event (`queue.revise_promises`). NULL: placed before quotes.
    promised_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    cancel_reason = models.CharField(max_length=200, blank=True)
    # NULL, not "", for "no key": the unique constraint must not treat keyless orders as duplicates.
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001
    # Fingerprint of the request that used the key, to tell a retry from a clash.
    request_hash = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField()
    claimed_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Who placed it: an API user, and/or a browser's placing key (a random string kept in
    # its session, not the session key itself, which is a credential and changes on login).
    # An order with neither (placed before owners were recorded, or by `rush`) is staff-only.
    placed_by = models.ForeignKey(
        # No index of its own: `order_placed_by_idx` leads with it.
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
    )
    placed_by_session = models.CharField(max_length=64, blank=True)
    # The hand-over, after the kitchen: set to the counter or the shelf by the completion,
    # then changed only by `workers.queue.handover`, each step fenced like a kitchen's.
    handover = models.CharField(
        max_length=max(len(h) for h in Handover.values),
        choices=Handover.choices,
        blank=True,
        default=Handover.NONE,
        db_default=Handover.NONE,
    )
    # The person (a driver) who took a delivery order off the shelf, and the token that fences
    # their later taps: a phone whose token is not the order's changes nothing.
    driver = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )
    handover_token = models.UUIDField(null=True, blank=True)
    out_at = models.DateTimeField(null=True, blank=True)
    handed_over_at = models.DateTimeField(null=True, blank=True)
    paid_at = models.DateTimeField(null=True, blank=True)
    payment_method = models.CharField(
        max_length=max(len(p) for p in Payment.values), choices=Payment.choices, blank=True, default="", db_default=""
    )

    objects = OrderQuerySet.as_manager()

    class Meta:
        # The table kept its name when the model moved from the shop to the engine.
        db_table = "orders_order"
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(priority__gte=0, priority__lte=9), name="order_priority_range"),
            models.CheckConstraint(
                condition=Q(attempts__lte=models.F("max_attempts")), name="order_attempts_within_max"
            ),
            models.CheckConstraint(condition=Q(max_attempts__gte=1), name="order_max_attempts_positive"),
            models.CheckConstraint(condition=Q(total__gte=0, delivery_fee__gte=0), name="order_money_not_negative"),
            # A hand-over begins only once the kitchen has made the order (exactly once: `done`).
            models.CheckConstraint(condition=Q(handover="") | Q(status="done"), name="order_handover_only_when_done"),
            # A takeaway order goes over the counter, a delivery order off the shelf and out.
            models.CheckConstraint(
                condition=Q(handover__in=["", "counter", "collected"], kind="takeaway")
                | Q(handover__in=["", "shelf", "out", "delivered"], kind="delivery"),
                name="order_handover_matches_kind",
            ),
            # The hand-over's fence exists exactly while one driver has the order (whose
            # account may be deleted meanwhile: the token still fences the phone).
            models.CheckConstraint(
                condition=Q(handover="out", handover_token__isnull=False)
                | (~Q(handover="out") & Q(handover_token__isnull=True)),
                name="order_handover_token_iff_out",
            ),
            # Handed over means paid, and only that.
            models.CheckConstraint(
                condition=(Q(handover__in=["delivered", "collected"], paid_at__isnull=False) & ~Q(payment_method=""))
                | (~Q(handover__in=["delivered", "collected"]) & Q(paid_at__isnull=True, payment_method="")),
                name="order_paid_iff_handed_over",
            ),
            # The fencing token exists exactly while a worker holds the order.
            models.CheckConstraint(
                condition=(
                    Q(status="preparing", lease_token__isnull=False, lease_expires_at__isnull=False)
                    | (~Q(status="preparing") & Q(lease_token__isnull=True))
                ),
                name="order_lease_iff_preparing",
            ),
            models.CheckConstraint(condition=Q(pinned_shop="") | Q(kind="takeaway"), name="order_only_takeaway_pinned"),
            models.UniqueConstraint(
                fields=["idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="order_unique_idempotency_key",
            ),
        ]
        indexes = [
            # Serves the claim: queued orders walked in claim order, the claim's
            # ORDER BY, so no sort of the backlog; finished rows are not in it.
            models.Index(fields=CLAIM_ORDER, condition=Q(status="queued"), name="order_claim_idx"),
            # Serves per-bucket queue depth (board, admin, API) and moving a bucket's orders.
            models.Index(fields=["bucket"], condition=Q(status="queued"), name="order_queued_bucket_idx"),
            # Serves pinned claims, and the closing of a shop (`recovery.close_shops`).
            models.Index(
                fields=["pinned_shop"],
                condition=Q(status="queued") & ~Q(pinned_shop=""),
                name="order_queued_pinned_idx",
            ),
            # Serves heartbeat lease extension and re-queueing a dead worker's orders.
            models.Index(fields=["worker"], condition=Q(status="preparing"), name="order_preparing_worker_idx"),
            # Serves expired-lease recovery.
            models.Index(fields=["lease_expires_at"], condition=Q(status="preparing"), name="order_lease_expiry_idx"),
            # Serves each shop's counter, shelf and drivers out (hand-over pages, the board,
            # `/metrics`); orders handed over, and all before it, are not in it.
            models.Index(
                fields=["worker", "handover"],
                condition=Q(handover__in=["counter", "shelf", "out"]),
                name="order_handover_pending_idx",
            ),
            # Serves status-filtered lists newest first, and purging old finished orders.
            models.Index(fields=["status", "created_at"], name="order_status_created_idx"),
            # Serves an API user's own lists (`visible_to`), newest first per status as the
            # unfiltered list merges them; orders nobody placed through the API are not in it.
            models.Index(
                fields=["placed_by", "status", "created_at"],
                condition=Q(placed_by__isnull=False),
                name="order_placed_by_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"order {self.id} ({self.status})"

    @property
    def is_final(self) -> bool:
        return self.status in self.FINAL_STATUSES

    @property
    def claim_key(self) -> tuple[Any, ...]:
        """This order's place in `CLAIM_ORDER`, for sorting claimed rows in Python."""
        return tuple(getattr(self, name) for name in CLAIM_ORDER)


class OrderEventQuerySet(models.QuerySet["OrderEvent"]):
    def done_since(self, cutoff: datetime) -> int:
        """Orders finished since `cutoff`, counted over the newest events only.

        Events have no time index, but ids grow with time, so the first id at or
        after the cutoff is found by bisecting the primary key (a few dozen point
        reads, even with millions of rows); only the events after it are counted.
        """
        bounds = self.aggregate(low=Min("id"), high=Max("id"))
        low, high = bounds["low"], bounds["high"]
        if high is None:
            return 0
        newest = self.values_list("created_at", flat=True).get(pk=high)
        if newest < cutoff:
            return 0
        first, upper = high, high  # `first` has created_at >= cutoff; search [low, upper) for an earlier one
        while low < upper:
            middle = (low + upper) // 2
            found_id, created_at = self.filter(id__gte=middle).order_by("id").values_list("id", "created_at")[0]
            if created_at >= cutoff:
                first, upper = min(first, found_id), middle
            else:
                low = found_id + 1
        return self.filter(id__gte=first, kind=OrderEvent.Kind.DONE, created_at__gte=cutoff).count()


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
        # Its priority was raised while it waited (the shop's "Rush" button).
        PRIORITY_RAISED = "priority-raised"
        # Its promised time was revised (`data`: `by`, `was`, `why`); nothing else changed.
        PROMISED = "promised"
        # The hand-over (`workers.queue.handover`): a driver took it off the shelf,
        # gave it back, delivered it and was paid; or it was collected and paid.
        OUT_FOR_DELIVERY = "out-for-delivery"
        BACK_ON_SHELF = "back-on-shelf"
        DELIVERED = "delivered"
        COLLECTED = "collected"

    id = models.BigAutoField(primary_key=True)
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=max(len(k) for k in Kind.values), choices=Kind.choices)
    created_at = models.DateTimeField()
    worker = models.ForeignKey(Worker, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    stage = models.CharField(max_length=20, blank=True)
    message = models.CharField(max_length=500, blank=True)
    data = models.JSONField(default=dict, blank=True)
    # The person who made the change (an operator, or the customer's own account), if one did.
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )

    objects = OrderEventQuerySet.as_manager()

    class Meta:
        db_table = "orders_orderevent"
        ordering = ["id"]
        indexes = [
            # Serves an order's timeline and a reconnecting client's replay.
            models.Index(fields=["order", "id"], name="event_order_timeline_idx"),
            # Serves an audit of one person's actions, and clearing a deleted user; tiny,
            # as only people's actions are in it (not the workers' and the monitor's).
            models.Index(fields=["actor"], condition=Q(actor__isnull=False), name="event_actor_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.order_id}"
