"""The REST API's shapes: what an order, a kitchen and a bucket look like to integrators.

Output serializers are read-only. The input serializer (`OrderCreateSerializer`)
only *describes* an order request for the OpenAPI schema: the API never calls
its `is_valid()`. The one validation source for every intake is
`orders.intake.clean_order_request`, so the API, the web form and `rush`
accept and refuse exactly the same requests.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from orders import money
from orders.deadlines import promised_at
from orders.models import Size
from orders.timeline import operator_note
from workers import clock
from workers.models import Bucket, Order, OrderEvent, Worker, reads_every_order

MONEY_HELP = "An amount in the shop's one currency (`currency`), as a string with two decimals."


def _money(value: Decimal | None) -> str | None:
    return None if value is None else f"{money.amount(value):.2f}"


class OrderItemSerializer(serializers.Serializer):
    pizza = serializers.SlugField(max_length=50, help_text="A pizza's slug from the menu.")
    size = serializers.ChoiceField(choices=Size.choices, default=Size.MEDIUM)
    price = serializers.DecimalField(
        max_digits=7,
        decimal_places=2,
        read_only=True,
        allow_null=True,
        help_text="The unit price it was ordered at, from the menu (never sent by the client). "
        "Null for orders placed before prices were recorded.",
    )

    def get_fields(self) -> dict[str, serializers.Field]:
        # Limits come from settings when the schema is built, never at import time.
        fields = super().get_fields()
        fields["quantity"] = serializers.IntegerField(
            min_value=1, max_value=settings.PIZZAQUEUE_MAX_QUANTITY, default=1
        )
        return fields


class OrderCreateSerializer(serializers.Serializer):
    """An order request, as `clean_order_request` accepts it."""

    kind = serializers.ChoiceField(
        choices=Order.Fulfilment.choices,
        default=Order.Fulfilment.DELIVERY,
        help_text="`takeaway` orders are pinned to the shop they are collected from.",
    )
    area = serializers.CharField(
        max_length=64,
        required=False,
        allow_blank=True,
        help_text="Delivery area: the routing key. Orders of one area go to one kitchen.",
    )
    shop = serializers.CharField(
        max_length=100,
        required=False,
        allow_blank=True,
        help_text="Takeaway only: the name of an open shop (a live worker).",
    )
    priority = serializers.IntegerField(min_value=Order.MIN_PRIORITY, max_value=Order.MAX_PRIORITY, default=0)
    customer_name = serializers.CharField(
        max_length=100, required=False, allow_blank=True, help_text="Takeaway: required, the name the counter calls."
    )
    address = serializers.CharField(
        max_length=200, required=False, allow_blank=True, help_text="Delivery: required, where to bring it."
    )
    phone = serializers.CharField(
        max_length=40,
        required=False,
        allow_blank=True,
        help_text="Delivery: required, for the driver; 6 to 15 digits, an optional leading +, separators allowed.",
    )
    not_before = serializers.DateTimeField(required=False, allow_null=True, help_text="Bake no earlier than this.")
    max_attempts = serializers.IntegerField(min_value=1, max_value=20, required=False, allow_null=True)
    total = serializers.DecimalField(
        max_digits=10,
        decimal_places=2,
        min_value=0,
        required=False,
        help_text="Optional: the total you showed your customer. The server prices the order from the menu; "
        "a total that differs from its own is a 400, so a price change is never charged unseen.",
    )

    def get_fields(self) -> dict[str, serializers.Field]:
        limits: dict[str, serializers.Field] = {
            "items": serializers.ListField(
                child=OrderItemSerializer(),
                min_length=1,
                max_length=settings.PIZZAQUEUE_MAX_ITEMS,
                help_text="What to bake.",
            ),
            "note": serializers.CharField(required=False, allow_blank=True, max_length=settings.PIZZAQUEUE_MAX_NOTE),
        }
        return {**limits, **super().get_fields()}


class WorkerRefSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    name = serializers.CharField(read_only=True)
    incarnation = serializers.IntegerField(read_only=True)


# Intake answers every order with an OrderSerializer, and building a
# serializer's bound fields (a deep copy of every declared field, per
# instance) costs about as much as placing the order. So the declared fields
# describe the shape (for the schema), and `to_representation` writes the same
# output directly, reusing stateless field instances for the conversions;
# tests hold it equal to DRF's field-by-field output.
_DATETIME = serializers.DateTimeField()


def _datetime(value: datetime | None) -> str | None:
    return None if value is None else _DATETIME.to_representation(value)


def _worker_ref(worker: Worker | None) -> dict[str, Any] | None:
    return None if worker is None else {"id": worker.pk, "name": worker.name, "incarnation": worker.incarnation}


class OrderSerializer(serializers.Serializer):
    id = serializers.UUIDField(read_only=True)
    status = serializers.ChoiceField(choices=Order.Status.choices, read_only=True)
    stage = serializers.CharField(read_only=True, help_text="Kitchen stage while preparing, e.g. oven.")
    kind = serializers.ChoiceField(choices=Order.Fulfilment.choices, read_only=True)
    items = OrderItemSerializer(many=True, read_only=True)
    total = serializers.DecimalField(
        max_digits=10, decimal_places=2, read_only=True, help_text="What the customer pays. " + MONEY_HELP
    )
    delivery_fee = serializers.DecimalField(
        max_digits=7, decimal_places=2, read_only=True, help_text="Part of the total; 0 for takeaway. " + MONEY_HELP
    )
    currency = serializers.SerializerMethodField(help_text="ISO 4217 code of every amount (PIZZAQUEUE_CURRENCY).")
    note = serializers.CharField(read_only=True)
    customer_name = serializers.CharField(read_only=True, help_text="Personal data: shown to the order's owner.")
    address = serializers.CharField(read_only=True, help_text="Personal data: shown to the order's owner.")
    phone = serializers.CharField(read_only=True, help_text="Personal data, as digits with an optional leading +.")
    area = serializers.CharField(read_only=True)
    bucket = serializers.IntegerField(read_only=True)
    shop = serializers.SerializerMethodField(
        help_text="Takeaway: the name of the shop it is pinned to (whichever of its kitchen processes is up)."
    )
    priority = serializers.IntegerField(read_only=True)
    attempts = serializers.IntegerField(read_only=True)
    max_attempts = serializers.IntegerField(read_only=True)
    worker = WorkerRefSerializer(read_only=True, allow_null=True, help_text="The kitchen preparing it, if any.")
    lease_expires_at = serializers.DateTimeField(read_only=True, allow_null=True)
    estimated_seconds = serializers.IntegerField(read_only=True, help_text="Kitchen time at speed 1.")
    last_error = serializers.CharField(read_only=True)
    cancel_reason = serializers.CharField(read_only=True)
    created_at = serializers.DateTimeField(read_only=True)
    eligible_at = serializers.DateTimeField(read_only=True, help_text="Not baked before this.")
    claimed_at = serializers.DateTimeField(read_only=True, allow_null=True)
    finished_at = serializers.DateTimeField(
        read_only=True, allow_null=True, help_text="When the kitchen made it (`done`), failed or was cancelled."
    )
    handover = serializers.ChoiceField(
        choices=Order.Handover.choices,
        read_only=True,
        help_text="After `done`, where the made order is: `counter` (takeaway, to collect and pay), `shelf` "
        "(delivery, waiting for a driver), `out` (a driver has it), then `collected` or `delivered` (paid: the end). "
        "Empty before the kitchen has made it.",
    )
    promised_at = serializers.DateTimeField(
        read_only=True,
        help_text="When its customer is promised it: at the door for a delivery order (the drive included), ready "
        "to collect for a takeaway one. Quoted from the live queue at placing and revised while it holds "
        "(each revision is a `promised` event).",
    )
    out_at = serializers.DateTimeField(read_only=True, allow_null=True, help_text="When a driver took it.")
    handed_over_at = serializers.DateTimeField(read_only=True, allow_null=True)
    paid_at = serializers.DateTimeField(read_only=True, allow_null=True)
    payment_method = serializers.ChoiceField(
        choices=[("", "not paid"), *Order.Payment.choices], read_only=True, help_text="Empty until it is paid."
    )

    def get_currency(self, order: Order) -> str:
        return str(settings.PIZZAQUEUE_CURRENCY)

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_shop(self, order: Order) -> str | None:
        return order.pinned_shop or None

    def to_representation(self, order: Order) -> dict[str, Any]:
        return {
            "id": str(order.id),
            "status": order.status,
            "stage": order.stage,
            "kind": order.kind,
            "items": [
                {"pizza": i["pizza"], "size": i["size"], "quantity": i["quantity"], "price": i.get("price")}
                for i in order.items
            ],
            "total": _money(order.total),
            "delivery_fee": _money(order.delivery_fee),
            "currency": settings.PIZZAQUEUE_CURRENCY,
            "note": order.note,
            "customer_name": order.customer_name,
            "address": order.address,
            "phone": order.phone,
            "area": order.area,
            "bucket": order.bucket,
            "shop": order.pinned_shop or None,
            "priority": order.priority,
            "attempts": order.attempts,
            "max_attempts": order.max_attempts,
            "worker": _worker_ref(order.worker),
            "lease_expires_at": _datetime(order.lease_expires_at),
            "estimated_seconds": order.estimated_seconds,
            "last_error": order.last_error,
            "cancel_reason": order.cancel_reason,
            "created_at": _datetime(order.created_at),
            "eligible_at": _datetime(order.eligible_at),
            "claimed_at": _datetime(order.claimed_at),
            "finished_at": _datetime(order.finished_at),
            "handover": order.handover,
            "promised_at": _datetime(promised_at(order)),
            "out_at": _datetime(order.out_at),
            "handed_over_at": _datetime(order.handed_over_at),
            "paid_at": _datetime(order.paid_at),
            "payment_method": order.payment_method,
        }


class OrderEventSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    kind = serializers.ChoiceField(choices=OrderEvent.Kind.choices, read_only=True)
    created_at = serializers.DateTimeField(read_only=True)
    stage = serializers.CharField(read_only=True)
    message = serializers.SerializerMethodField(
        help_text="What happened, in words: a person's reason or a kitchen's error where one was given."
    )
    worker = serializers.CharField(source="worker.name", read_only=True, allow_null=True)
    actor = serializers.CharField(
        source="actor.username",
        read_only=True,
        allow_null=True,
        help_text="The person who made the change (an operator, say); shown to staff only.",
    )
    # The API's field is called `data`; DRF's Serializer.data is a property of the serializer, not of its fields.
    data = serializers.JSONField(read_only=True)  # type: ignore[assignment]

    def get_message(self, event: OrderEvent) -> str:
        return operator_note(event)

    def to_representation(self, event: OrderEvent) -> dict[str, Any]:
        data = super().to_representation(event)
        request = self.context.get("request")
        if request is None or not reads_every_order(request.user):
            data["actor"] = None  # which operator did it is the operators' business
        return data


class OrderDetailSerializer(OrderSerializer):
    events = OrderEventSerializer(many=True, read_only=True, help_text="The order's timeline, oldest first.")

    def to_representation(self, order: Order) -> dict[str, Any]:
        return {
            **super().to_representation(order),
            "events": self.fields["events"].to_representation(order.events.all()),
        }


class WorkerSerializer(serializers.ModelSerializer):
    """A kitchen; `host` and `pid` are shown to staff only (empty for other callers)."""

    heartbeat_age_seconds = serializers.SerializerMethodField()
    owned_buckets = serializers.IntegerField(read_only=True, help_text="Buckets this kitchen owns.")
    in_flight = serializers.IntegerField(read_only=True, help_text="Orders it is preparing right now.")

    class Meta:
        model = Worker
        fields = [
            "id",
            "name",
            "incarnation",
            "host",
            "pid",
            "status",
            "concurrency",
            "started_at",
            "last_heartbeat",
            "heartbeat_age_seconds",
            "stopped_at",
            "stop_reason",
            "owned_buckets",
            "in_flight",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.FloatField())
    def get_heartbeat_age_seconds(self, worker: Worker) -> float:
        # The database's time of the page's query (`clock.with_db_now`), else read now.
        now = getattr(worker, "db_now", None) or clock.now()
        return round((now - worker.last_heartbeat).total_seconds(), 3)

    def to_representation(self, worker: Worker) -> dict[str, Any]:
        data = super().to_representation(worker)
        request = self.context.get("request")
        if request is None or not reads_every_order(request.user):
            # Where the kitchens run is the operators' business: staff only.
            data["host"], data["pid"] = "", None
        return data


class BucketSerializer(serializers.ModelSerializer):
    owner = WorkerRefSerializer(read_only=True, allow_null=True)
    queued = serializers.IntegerField(read_only=True, help_text="Orders waiting in this bucket.")

    class Meta:
        model = Bucket
        fields = ["number", "owner", "epoch", "queued", "updated_at"]
        read_only_fields = fields


class StatusCountSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    exact = serializers.BooleanField(help_text="False when estimated from the planner's statistics.")


class StatsSerializer(serializers.Serializer):
    orders = serializers.DictField(child=StatusCountSerializer(), help_text="Orders by status.")
    done_last_minute = serializers.IntegerField(help_text="Orders completed in the last 60 seconds.")
    throughput_per_second = serializers.FloatField(help_text="done_last_minute / 60.")
    live_workers = serializers.IntegerField()
    generated_at = serializers.DateTimeField()


class ErrorSerializer(serializers.Serializer):
    """Every 4xx body: the reason, a stable code, and for bad input the fields at fault."""

    detail = serializers.CharField()
    code = serializers.CharField()
    # Likewise `errors`: a field of the error body, not Serializer.errors.
    errors = serializers.DictField(  # type: ignore[assignment]
        child=serializers.ListField(child=serializers.CharField()),
        required=False,
        help_text='Messages by field, e.g. {"items[0].quantity": ["Must be between 1 and 20."]}.',
    )
    wait = serializers.FloatField(required=False, help_text="429 only: seconds until a retry may succeed.")
