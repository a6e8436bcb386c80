"""A schema change applied while kitchens run: each kitchen's prepared claim is
planned for the old row type, and its next run fails once ("cached plan must
not change result type"); the kitchen must carry on, and no order may fail or
be charged for it."""

from __future__ import annotations

import pytest
from django.db import connection

from tests.base import make_order, wait_until
from tests.conftest import WorkerProcesses
from workers.models import Order, OrderEvent, Worker

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.processes]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="prepared statements are PostgreSQL's")
def test_a_column_type_changed_under_running_kitchens_fails_no_order(worker_processes: WorkerProcesses) -> None:
    for name in ("shop-1", "shop-2"):
        worker_processes.start("--name", name)
    wait_until(lambda: Worker.objects.filter(status=Worker.Status.ALIVE).count() == 2, what="two kitchens")
    warm = [make_order() for _ in range(10)]  # every kitchen has prepared its claim
    wait_until(lambda: Order.objects.filter(pk__in=[o.pk for o in warm], status="done").count() == 10, what="warm-up")
    try:
        with connection.cursor() as cursor:
            # A migration that widens a column every claim returns.
            cursor.execute("ALTER TABLE orders_order ALTER COLUMN customer_name TYPE varchar(150)")
        after = [make_order() for _ in range(20)]
        wait_until(
            lambda: Order.objects.filter(pk__in=[o.pk for o in after], status="done").count() == 20,
            timeout=60,
            what="the orders placed after the migration",
        )
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE orders_order ALTER COLUMN customer_name TYPE varchar(100)")

    assert Order.objects.exclude(status="done").count() == 0
    assert Order.objects.filter(attempts__gt=1).count() == 0
    assert not OrderEvent.objects.filter(kind__in=["failed", "retried", "lease-lost"]).exists()
    assert Worker.objects.filter(status=Worker.Status.ALIVE).count() == 2  # nobody fell over or rejoined
    # The case happened: a kitchen's prepared claim met the new row type.
    assert "cached plan must not change result type" in worker_processes.logs()
