"""Orders scheduled further ahead than `not_before` may now be are cancelled.

Before `not_before` was bounded (PIZZAQUEUE_MAX_SCHEDULE_DAYS), an order could
be placed for a time years ahead, which no kitchen would ever bake, or, on
PostgreSQL, for one past the year 9999 in UTC, which the database stores but
Python cannot read back: every page listing such an order answered 500 (and
the API had answered its placing with a 400). Each queued one is cancelled as
the bound would have refused it, with its `cancelled` event in the same
transaction; every such row, finished ones included, gets its placing time as
`eligible_at`, so it can be read again.
"""

from datetime import timedelta

from django.conf import settings
from django.db import migrations
from django.db.models import F
from django.utils import timezone

REASON = "scheduled too far ahead"


def cancel_orders_scheduled_out_of_range(apps, schema_editor):
    Order = apps.get_model("workers", "Order")
    OrderEvent = apps.get_model("workers", "OrderEvent")
    now = timezone.now()
    days = settings.PIZZAQUEUE_MAX_SCHEDULE_DAYS
    # Compared in SQL and read as ids only: such an `eligible_at` may not load into Python.
    out_of_range = Order.objects.filter(eligible_at__gt=F("created_at") + timedelta(days=days))
    queued = list(out_of_range.filter(status="queued").values_list("id", flat=True))
    Order.objects.filter(id__in=queued).update(status="cancelled", cancel_reason=REASON, finished_at=now)
    OrderEvent.objects.bulk_create(
        OrderEvent(
            order_id=order_id,
            kind="cancelled",
            created_at=now,
            message=f"Cancelled: it was scheduled more than {days} days ahead. Please order again.",
            data={"reason": REASON},
        )
        for order_id in queued
    )
    out_of_range.update(eligible_at=F("created_at"))


class Migration(migrations.Migration):
    dependencies = [("workers", "0002_order_orderevent_move_in")]

    operations = [
        migrations.RunPython(cancel_orders_scheduled_out_of_range, migrations.RunPython.noop, elidable=True),
    ]
