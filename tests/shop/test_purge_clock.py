"""`purge --before 12h` counts the age back from the database's clock (SPEC §4.8),
not from the clock of the machine the command runs on."""

from __future__ import annotations

from datetime import datetime, timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from tests.base import make_worker
from tests.factory import make_order
from workers import clock, queue
from workers.models import Order

pytestmark = pytest.mark.django_db


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="SQLite has no server: the machine holding the file is its clock"
)
def test_purge_by_age_counts_from_the_database_clock_not_the_machines(
    menu: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = make_worker()
    older, newer = make_order(), make_order()
    claims = {c.order.pk: c for c in queue.claim(worker.pk, 2)}
    server_now = clock.now()
    queue.complete(older.pk, claims[older.pk].token, now=server_now - timedelta(hours=13))
    queue.complete(newer.pk, claims[newer.pk].token, now=server_now - timedelta(hours=11))
    # This machine's clock runs two hours ahead of the database server's.
    ahead = timezone.now

    def two_hours_fast() -> datetime:
        return ahead() + timedelta(hours=2)

    monkeypatch.setattr(timezone, "now", two_hours_fast)

    out = StringIO()
    call_command("purge", "--before", "12h", stdout=out)

    assert list(Order.objects.values_list("pk", flat=True)) == [newer.pk]
    assert out.getvalue().startswith("deleted 1 orders")
