"""Takeaway orders are pinned to a shop's name, not to one incarnation of its kitchen, and
a shop may run two kitchen processes at once: a restart or a redeploy keeps its orders."""

from django.db import migrations, models
from django.db.models import OuterRef, Q, Subquery


def pin_to_shop_names(apps, schema_editor):
    Order = apps.get_model("workers", "Order")
    Worker = apps.get_model("workers", "Worker")
    name = Worker.objects.filter(pk=OuterRef("pinned_worker_id")).values("name")[:1]
    Order.objects.filter(pinned_worker__isnull=False).update(pinned_shop=Subquery(name))


def pin_to_newest_incarnations(apps, schema_editor):
    Order = apps.get_model("workers", "Order")
    Worker = apps.get_model("workers", "Worker")
    newest = Worker.objects.filter(name=OuterRef("pinned_shop")).order_by("-incarnation").values("pk")[:1]
    Order.objects.exclude(pinned_shop="").update(pinned_worker=Subquery(newest))


class Migration(migrations.Migration):
    dependencies = [
        ("workers", "0008_priority_raised_and_fulfilment"),
    ]

    operations = [
        # A shop may run two processes at once (a rolling redeploy).
        migrations.RemoveConstraint(model_name="worker", name="worker_unique_live_name"),
        migrations.AddField(
            model_name="order",
            name="pinned_shop",
            field=models.CharField(blank=True, db_default="", default="", max_length=100),
        ),
        migrations.RunPython(pin_to_shop_names, pin_to_newest_incarnations),
        migrations.RemoveConstraint(model_name="order", name="order_only_takeaway_pinned"),
        migrations.RemoveIndex(model_name="order", name="order_queued_pinned_idx"),
        migrations.RemoveField(model_name="order", name="pinned_worker"),
        migrations.AddConstraint(
            model_name="order",
            constraint=models.CheckConstraint(
                condition=Q(pinned_shop="") | Q(kind="takeaway"), name="order_only_takeaway_pinned"
            ),
        ),
        migrations.AddIndex(
            model_name="order",
            index=models.Index(
                condition=Q(status="queued") & ~Q(pinned_shop=""),
                fields=["pinned_shop"],
                name="order_queued_pinned_idx",
            ),
        ),
    ]
