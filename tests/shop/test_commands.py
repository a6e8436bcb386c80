"""Operator commands: rush, requeue, purge, and the demo's checks."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from io import StringIO

import psycopg
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.utils import timezone

from tests.base import ROOT, make_worker
from tests.conftest import database_url
from tests.factory import make_order
from workers import queue
from workers.models import Order, OrderEvent

pytestmark = pytest.mark.django_db


def test_rush_places_orders_through_the_intake_path(menu: None) -> None:
    out = StringIO()
    call_command("rush", "--orders", "30", "--areas", "3", "--priority-mix", "--seed", "7", stdout=out)
    assert Order.objects.count() == 30
    assert OrderEvent.objects.filter(kind=OrderEvent.Kind.PLACED).count() == 30
    assert set(Order.objects.values_list("area", flat=True)) <= {"area-0", "area-1", "area-2"}
    assert set(Order.objects.values_list("priority", flat=True)) <= {0, 5, 9}
    assert out.getvalue().startswith("placed 30 orders")


def test_rush_in_bulk_places_every_order(menu: None) -> None:
    call_command("rush", "--orders", "25", "--bulk", "10", stdout=StringIO())
    assert Order.objects.count() == 25
    assert OrderEvent.objects.filter(kind=OrderEvent.Kind.PLACED).count() == 25


def test_rush_refuses_a_non_positive_count(menu: None) -> None:
    with pytest.raises(CommandError, match="must be at least 1, got 0"):
        call_command("rush", "--orders", "0")


def failed_order() -> Order:
    worker = make_worker()
    order = make_order(max_attempts=1)
    (claim,) = queue.claim(worker.pk, 1)
    assert queue.fail(order.pk, claim.token, "RuntimeError: burnt") == "failed"
    return order


def test_requeue_gives_failed_orders_fresh_attempts(menu: None) -> None:
    order = failed_order()
    out = StringIO()
    call_command("requeue", "--all-failed", stdout=out)
    order.refresh_from_db()
    assert order.status == Order.Status.QUEUED
    assert order.attempts == 0
    assert out.getvalue().strip() == "requeued 1 orders; 0 refused"


def test_requeue_refuses_a_done_order_by_name(menu: None) -> None:
    worker = make_worker()
    order = make_order()
    (claim,) = queue.claim(worker.pk, 1)
    queue.complete(order.pk, claim.token)
    with pytest.raises(CommandError, match="Nothing was requeued"):
        call_command("requeue", str(order.pk), stdout=StringIO(), stderr=StringIO())
    assert Order.objects.get(pk=order.pk).status == Order.Status.DONE


def test_purge_deletes_only_old_finished_orders_with_their_events(menu: None) -> None:
    worker = make_worker()
    old_done, old_queued, recent_done = make_order(), make_order(), make_order()
    claims = {c.order.pk: c for c in queue.claim(worker.pk, 3)}
    long_ago = timezone.now() - timedelta(days=40)
    queue.complete(old_done.pk, claims[old_done.pk].token, now=long_ago)
    queue.complete(recent_done.pk, claims[recent_done.pk].token)
    queue.release([(old_queued.pk, claims[old_queued.pk].token)])

    out = StringIO()
    call_command("purge", "--before", "30d", "--batch", "1", stdout=out)

    assert set(Order.objects.values_list("pk", flat=True)) == {old_queued.pk, recent_done.pk}
    assert not OrderEvent.objects.filter(order_id=old_done.pk).exists()
    assert out.getvalue().startswith("deleted 1 orders")


def test_purge_rejects_an_unreadable_date(menu: None) -> None:
    with pytest.raises(CommandError, match="neither an ISO date nor an age"):
        call_command("purge", "--before", "last tuesday")


@pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="SQLite's IMMEDIATE transaction holds the one write lock: nothing else changes an order meanwhile",
)
def test_purge_skips_an_order_an_operator_is_requeueing_and_keeps_it(live_menu: None) -> None:
    long_ago = timezone.now() - timedelta(days=40)
    requeued, purged = make_order(), make_order()
    for order in (requeued, purged):
        queue.cancel(order.pk, now=long_ago)
    # A requeue in flight: its UPDATE is written and holds the row, not yet committed.
    with psycopg.connect(database_url()) as requeueing:
        requeueing.execute("UPDATE orders_order SET status = 'queued', finished_at = NULL WHERE id = %s", [requeued.pk])
        purge = subprocess.run(
            [sys.executable, "manage.py", "purge", "--before", "30d"],
            cwd=ROOT,
            env={**os.environ, "DATABASE_URL": database_url()},
            capture_output=True,
            timeout=60,
            check=False,
        )
        requeueing.commit()
    assert purge.returncode == 0, purge.stderr.decode()

    assert list(Order.objects.values_list("pk", "status")) == [(requeued.pk, Order.Status.QUEUED)]
    kinds = list(OrderEvent.objects.filter(order_id=requeued.pk).order_by("id").values_list("kind", flat=True))
    assert kinds == ["placed", "cancelled"]
    assert not OrderEvent.objects.filter(order_id=purged.pk).exists()
    assert purge.stdout.decode().startswith("deleted 1 orders")


def test_demo_with_several_web_processes_says_haproxy_is_needed_when_it_is_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # nowhere to find haproxy

    with pytest.raises(CommandError, match=r"--web needs HAProxy .* apt-get install haproxy"):
        call_command("demo", "--web", "2")
    assert not Order.objects.exists()


def test_the_shipped_haproxy_config_is_rendered_for_the_given_address_and_servers() -> None:
    from pizzaqueue.haproxy import render

    config = render("127.0.0.1:9000", ["127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"])

    assert "    bind 127.0.0.1:9000\n" in config
    assert [line.split()[1:] for line in config.splitlines() if line.strip().startswith("server ")] == [
        ["web1", "127.0.0.1:9001"],
        ["web2", "127.0.0.1:9002"],
        ["web3", "127.0.0.1:9003"],
    ]
    for directive in ("timeout tunnel", "option httpchk GET /healthz", "option redispatch", "retries"):
        assert directive in config
    # No sticky sessions: nothing pins a client to a server.
    assert not [line for line in config.splitlines() if line.split()[:1] in (["cookie"], ["stick"], ["stick-table"])]
