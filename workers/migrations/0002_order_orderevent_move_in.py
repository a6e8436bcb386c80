"""Orders and their events join the queue engine.

The tables stay as they are (`orders_order`, `orders_orderevent`): only
Django's record of which app owns the models changes, here and in
`orders.0004`. Content types (and with them permissions and admin log
entries) follow the models, and the priority bump's event kind takes its
new name.
"""

import uuid

import django.db.models.deletion
from django.db import migrations, models

MOVED = ("order", "orderevent")


def move_content_types(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    for model in MOVED:
        if not ContentType.objects.filter(app_label="workers", model=model).exists():
            ContentType.objects.filter(app_label="orders", model=model).update(app_label="workers")


def move_content_types_back(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    for model in MOVED:
        if not ContentType.objects.filter(app_label="orders", model=model).exists():
            ContentType.objects.filter(app_label="workers", model=model).update(app_label="orders")


def rename_expedited(apps, schema_editor):
    apps.get_model("workers", "OrderEvent").objects.filter(kind="rushed").update(kind="expedited")


def rename_rushed(apps, schema_editor):
    apps.get_model("workers", "OrderEvent").objects.filter(kind="expedited").update(kind="rushed")


class Migration(migrations.Migration):
    dependencies = [
        ("contenttypes", "0002_remove_content_type_name"),
        ("workers", "0001_initial"),
        ("orders", "0003_claim_index_matches_claim_order"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.CreateModel(
                    name="Order",
                    fields=[
                        ("id", models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False)),
                        ("status", models.CharField(choices=[("queued", "Queued"), ("preparing", "Preparing"), ("done", "Done"), ("failed", "Failed"), ("cancelled", "Cancelled")], default="queued", max_length=9)),
                        ("kind", models.CharField(choices=[("delivery", "Delivery"), ("takeaway", "Takeaway")], default="delivery", max_length=8)),
                        ("items", models.JSONField()),
                        ("note", models.TextField(blank=True)),
                        ("customer_name", models.CharField(blank=True, max_length=100)),
                        ("area", models.CharField(blank=True, max_length=64)),
                        ("bucket", models.PositiveIntegerField()),
                        ("priority", models.SmallIntegerField(default=0)),
                        ("rank", models.BigIntegerField()),
                        ("eligible_at", models.DateTimeField()),
                        ("attempts", models.PositiveSmallIntegerField(default=0)),
                        ("max_attempts", models.PositiveSmallIntegerField(default=3)),
                        ("lease_token", models.UUIDField(blank=True, null=True)),
                        ("lease_expires_at", models.DateTimeField(blank=True, null=True)),
                        ("stage", models.CharField(blank=True, max_length=20)),
                        ("estimated_seconds", models.PositiveIntegerField(default=0)),
                        ("last_error", models.TextField(blank=True)),
                        ("cancel_reason", models.CharField(blank=True, max_length=200)),
                        ("idempotency_key", models.CharField(blank=True, max_length=255, null=True)),
                        ("request_hash", models.CharField(blank=True, max_length=64)),
                        ("created_at", models.DateTimeField()),
                        ("claimed_at", models.DateTimeField(blank=True, null=True)),
                        ("finished_at", models.DateTimeField(blank=True, null=True)),
                        ("pinned_worker", models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name="pinned_orders", to="workers.worker")),
                        ("worker", models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name="orders", to="workers.worker")),
                    ],
                    options={
                        "db_table": "orders_order",
                        "ordering": ["-created_at"],
                        "indexes": [
                            models.Index(condition=models.Q(("status", "queued")), fields=["rank", "created_at"], name="order_claim_idx"),
                            models.Index(condition=models.Q(("status", "queued")), fields=["bucket"], name="order_queued_bucket_idx"),
                            models.Index(condition=models.Q(("status", "queued")), fields=["pinned_worker"], name="order_queued_pinned_idx"),
                            models.Index(condition=models.Q(("status", "preparing")), fields=["worker"], name="order_preparing_worker_idx"),
                            models.Index(condition=models.Q(("status", "preparing")), fields=["lease_expires_at"], name="order_lease_expiry_idx"),
                            models.Index(fields=["status", "created_at"], name="order_status_created_idx"),
                        ],
                        "constraints": [
                            models.CheckConstraint(condition=models.Q(("priority__gte", 0), ("priority__lte", 9)), name="order_priority_range"),
                            models.CheckConstraint(condition=models.Q(("attempts__lte", models.F("max_attempts"))), name="order_attempts_within_max"),
                            models.CheckConstraint(condition=models.Q(("max_attempts__gte", 1)), name="order_max_attempts_positive"),
                            models.CheckConstraint(condition=models.Q(models.Q(("lease_expires_at__isnull", False), ("lease_token__isnull", False), ("status", "preparing")), models.Q(models.Q(("status", "preparing"), _negated=True), ("lease_token__isnull", True)), _connector="OR"), name="order_lease_iff_preparing"),
                            models.CheckConstraint(condition=models.Q(("pinned_worker__isnull", True), ("kind", "takeaway"), _connector="OR"), name="order_only_takeaway_pinned"),
                            models.UniqueConstraint(condition=models.Q(("idempotency_key__isnull", False)), fields=("idempotency_key",), name="order_unique_idempotency_key"),
                        ],
                    },
                ),
                migrations.CreateModel(
                    name="OrderEvent",
                    fields=[
                        ("id", models.BigAutoField(primary_key=True, serialize=False)),
                        ("kind", models.CharField(choices=[("placed", "Placed"), ("claimed", "Claimed"), ("stage", "Stage"), ("done", "Done"), ("retried", "Retried"), ("released", "Released"), ("reassigned", "Reassigned"), ("failed", "Failed"), ("cancelled", "Cancelled"), ("lease-lost", "Lease Lost"), ("expedited", "Expedited")], max_length=10)),
                        ("created_at", models.DateTimeField()),
                        ("stage", models.CharField(blank=True, max_length=20)),
                        ("message", models.CharField(blank=True, max_length=500)),
                        ("data", models.JSONField(blank=True, default=dict)),
                        ("order", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="events", to="workers.order")),
                        ("worker", models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name="+", to="workers.worker")),
                    ],
                    options={
                        "db_table": "orders_orderevent",
                        "ordering": ["id"],
                        "indexes": [models.Index(fields=["order", "id"], name="event_order_timeline_idx")],
                    },
                ),
            ],
        ),
        migrations.RunPython(move_content_types, move_content_types_back),
        migrations.RunPython(rename_expedited, rename_rushed),
    ]
