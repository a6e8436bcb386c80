"""Admin for operators: actions go through the queue, system rows are read-only,
and changelists stay bounded however many orders there are."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from orders import admin as order_admin
from orders.models import Pizza
from tests.base import make_worker
from tests.factory import make_order
from workers import admin as engine_admin
from workers import membership, queue
from workers.models import Bucket, Order, OrderEvent, Worker

pytestmark = pytest.mark.django_db

ORDERS = reverse("admin:workers_order_changelist")
WORKERS = reverse("admin:workers_worker_changelist")


@pytest.fixture
def operator(menu: None, admin_client: Client) -> Client:
    return admin_client


def act(client: Client, changelist: str, action: str, objects: list[Any]) -> list[tuple[str, str]]:
    """POST an admin action as the changelist form does; returns the (level, message) pairs shown."""
    response = client.post(
        changelist, {"action": action, "_selected_action": [str(o.pk) for o in objects]}, follow=True
    )
    assert response.redirect_chain == [(changelist, 302)], response.content[:500]
    # The changelist it redirects to shows (and so consumes) the messages.
    return [(m.level_tag, m.message) for m in response.context["messages"]]


def claimed(*orders: Order, worker_name: str = "shop-1") -> tuple[Worker, dict[uuid.UUID, uuid.UUID]]:
    worker = make_worker(worker_name)
    tokens = {c.order.pk: c.token for c in queue.claim(worker.pk, limit=100)}
    assert set(tokens) >= {o.pk for o in orders}
    return worker, tokens


def status_of(order: Order) -> str:
    return Order.objects.values_list("status", flat=True).get(pk=order.pk)


# --- Order actions -----------------------------------------------------------------


def test_requeue_puts_failed_orders_back_and_refuses_cancelled_and_waiting_ones_with_reasons(
    operator: Client,
) -> None:
    failed = make_order(max_attempts=1)
    _worker, tokens = claimed(failed)
    queue.fail(failed.pk, tokens[failed.pk], "oven on fire")
    cancelled, queued = make_order(), make_order()
    queue.cancel(cancelled.pk)

    shown = act(operator, ORDERS, "requeue_orders", [failed, cancelled, queued])

    assert (status_of(failed), status_of(cancelled)) == ("queued", "cancelled")
    assert ("success", "1 order requeued.") in shown
    assert (
        "warning",
        f"Order #{str(queued.pk)[:8]}: Order is queued; only failed, cancelled or preparing orders can be requeued.",
    ) in shown
    assert (
        "warning",
        f"Order #{str(cancelled.pk)[:8]}: it was cancelled, so it is not requeued (its promise has passed); "
        "place a new order instead.",
    ) in shown
    retried = OrderEvent.objects.get(order=failed, kind="retried", data__by="operator")
    assert retried.message == "requeued by an operator"
    assert retried.actor is not None and retried.actor.username == "admin"


def test_cancel_cancels_queued_orders_and_stops_those_in_the_kitchen(operator: Client) -> None:
    preparing = make_order()
    claimed(preparing)
    queued = make_order()
    done = make_order()
    queue.cancel(done.pk)

    shown = act(operator, ORDERS, "cancel_orders", [queued, preparing, done])

    assert status_of(queued) == "cancelled"
    assert Order.objects.get(pk=queued.pk).cancel_reason == "cancelled by an operator"
    assert OrderEvent.objects.get(order=queued, kind="cancelled").actor.username == "admin"
    stopped = Order.objects.get(pk=preparing.pk)
    assert (stopped.status, stopped.lease_token) == ("cancelled", None)
    assert shown == [
        ("warning", f"Order #{str(done.pk)[:8]}: Order is cancelled; only a queued order can be cancelled."),
        ("success", "2 orders cancelled."),
    ]


def test_rush_raises_queued_orders_to_top_priority(operator: Client) -> None:
    preparing = make_order(priority=1)
    claimed(preparing)
    queued = make_order(priority=2)

    shown = act(operator, ORDERS, "raise_priority_of_orders", [queued, preparing])

    assert Order.objects.get(pk=queued.pk).priority == Order.MAX_PRIORITY
    assert OrderEvent.objects.filter(order=queued, kind="priority-raised").count() == 1
    assert Order.objects.get(pk=preparing.pk).priority == 1
    assert ("success", "1 order rushed.") in shown
    assert (
        "warning",
        f"Order #{str(preparing.pk)[:8]}: Order is preparing; only a queued order's priority can be raised.",
    ) in shown


def test_an_action_over_too_many_orders_is_refused_whole(operator: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(order_admin, "MAX_ACTION_ORDERS", 2)
    orders = [make_order() for _ in range(3)]

    shown = act(operator, ORDERS, "cancel_orders", orders)

    assert shown == [("error", "Select at most 2 orders per action (filter the list first).")]
    assert {status_of(o) for o in orders} == {"queued"}


def test_staff_without_the_change_permission_see_no_order_actions(menu: None) -> None:
    viewer = User.objects.create_user("viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_order"))
    client = Client()
    client.force_login(viewer)
    order = make_order()

    response = client.post(ORDERS, {"action": "cancel_orders", "_selected_action": [str(order.pk)]})

    assert response.status_code == 200  # Django re-shows the list: no such action for this user
    assert status_of(order) == "queued"
    assert b'name="action"' not in client.get(ORDERS).content


def test_the_admin_is_for_staff_only(menu: None) -> None:
    client = Client()
    client.force_login(User.objects.create_user("customer"))

    response = client.get(ORDERS)

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


# --- Read-only system rows -------------------------------------------------------------


def test_orders_are_read_only_in_admin(operator: Client) -> None:
    order = make_order()
    change = reverse("admin:workers_order_change", args=[order.pk])

    page = operator.get(change)
    posted = operator.post(change, {"status": "done", "priority": 9})

    assert page.status_code == 200
    assert b"placed" in page.content  # the timeline inline
    assert b'name="_save"' not in page.content
    assert posted.status_code == 403
    assert operator.get(reverse("admin:workers_order_add")).status_code == 403
    assert operator.post(reverse("admin:workers_order_delete", args=[order.pk]), {"post": "yes"}).status_code == 403
    assert status_of(order) == "queued"
    assert b"delete_selected" not in operator.get(ORDERS).content


def test_order_events_are_read_only_in_admin(operator: Client) -> None:
    event = make_order().events.get()
    change = reverse("admin:workers_orderevent_change", args=[event.pk])

    assert operator.get(reverse("admin:workers_orderevent_changelist")).status_code == 200
    assert operator.get(change).status_code == 200
    assert operator.post(change, {"kind": "done", "message": "forged"}).status_code == 403
    assert operator.get(reverse("admin:workers_orderevent_add")).status_code == 403
    assert (
        operator.post(reverse("admin:workers_orderevent_delete", args=[event.pk]), {"post": "yes"}).status_code == 403
    )
    event.refresh_from_db()
    assert (event.kind, event.message) == ("placed", "")


@pytest.mark.parametrize("model", ["worker", "bucket", "bucketmove", "monitorlease"])
def test_worker_tables_are_read_only_in_admin(operator: Client, model: str) -> None:
    make_worker("shop-1")

    assert operator.get(reverse(f"admin:workers_{model}_changelist")).status_code == 200
    assert operator.get(reverse(f"admin:workers_{model}_add")).status_code == 403


def test_the_menu_is_editable(operator: Client) -> None:
    pizza = Pizza.objects.get(slug="margherita")
    data = {
        "slug": "margherita",
        "name": "Margherita",
        "description": pizza.description,
        "price_small": "7.90",
        "price_medium": "9.50",
        "price_large": "12.00",
        "bake_seconds": pizza.bake_seconds,
        "available": "on",
    }

    response = operator.post(reverse("admin:orders_pizza_change", args=[pizza.pk]), data)

    assert response.status_code == 302
    pizza.refresh_from_db()
    assert (pizza.price_small, pizza.price_medium, pizza.price_large) == (
        Decimal("7.90"),
        Decimal("9.50"),
        Decimal("12.00"),
    )


# --- Worker actions and columns ----------------------------------------------------------


def test_drain_asks_alive_workers_to_stop_and_reports_the_others(operator: Client) -> None:
    alive = make_worker("shop-1")
    gone = make_worker("shop-2")
    membership.stop(gone.pk)

    shown = act(operator, WORKERS, "drain_workers", [alive, gone])

    assert Worker.objects.get(pk=alive.pk).status == "draining"
    assert Worker.objects.get(pk=gone.pk).status == "stopped"
    assert shown == [
        ("success", "shop-1#1 is closing."),
        ("warning", "shop-2#1 is closed; only an open kitchen can close."),
    ]


def test_declare_dead_requeues_the_workers_orders_at_once(operator: Client) -> None:
    order = make_order()
    worker, _tokens = claimed(order)
    survivor = make_worker("shop-2")

    shown = act(operator, WORKERS, "declare_workers_dead", [worker])

    assert Worker.objects.get(pk=worker.pk).status == "dead"
    assert Worker.objects.get(pk=worker.pk).stop_reason == "declared dead by operator admin"
    assert status_of(order) == "queued"
    assert set(Bucket.objects.values_list("owner_id", flat=True)) == {survivor.pk}
    assert len(shown) == 1
    assert re.fullmatch(
        r"shop-1#1 declared down: 1 requeued, 0 failed, 0 takeaway orders cancelled, \d+ buckets moved\.", shown[0][1]
    )
    assert act(operator, WORKERS, "declare_workers_dead", [worker]) == [
        ("warning", "shop-1#1 is down; it is not open.")
    ]


def test_workers_show_heartbeat_age_in_colour_with_their_load(operator: Client, settings: Any) -> None:
    settings.PIZZAQUEUE_HEARTBEAT_TIMEOUT = 15.0
    order = make_order()
    fresh, _tokens = claimed(order)
    late = make_worker("shop-2")
    stale = make_worker("shop-3")
    now = timezone.now()
    Worker.objects.filter(pk=fresh.pk).update(last_heartbeat=now)
    Worker.objects.filter(pk=late.pk).update(last_heartbeat=now - timedelta(seconds=10))
    Worker.objects.filter(pk=stale.pk).update(last_heartbeat=now - timedelta(seconds=40))

    content = operator.get(WORKERS).content.decode()

    assert re.search(r'<span class="freshness freshness-fresh" title="fresh">\ds<', content)
    assert "workers/admin.css" in content
    assert re.search(r'<span class="freshness freshness-late" title="late">1\ds<', content)
    assert re.search(r'<span class="freshness freshness-stale" title="stale">4\ds<', content)
    rows = {w.name: w for w in operator.get(WORKERS).context["cl"].result_list}
    assert rows["shop-1"].in_flight == 1
    assert rows["shop-2"].in_flight == rows["shop-3"].in_flight == 0
    assert sum(w.owned_buckets for w in rows.values()) == Bucket.objects.count()
    assert fresh.name == "shop-1"


def test_the_admins_bucket_list_shows_owner_epoch_and_queued_depth(operator: Client) -> None:
    worker = make_worker("shop-1")
    order = make_order(area="north")
    make_order(area="north")

    response = operator.get(reverse("admin:workers_bucket_changelist") + f"?q={order.bucket}")

    rows = list(response.context["cl"].result_list)
    assert [(b.number, b.owner_id, b.queued) for b in rows] == [(order.bucket, worker.pk, 2)]
    assert rows[0].epoch >= 1


def test_the_order_list_shows_waiting_orders_first_then_newest(operator: Client) -> None:
    finished, older, newer = make_order(), make_order(), make_order()
    queue.cancel(finished.pk)

    listed = list(operator.get(ORDERS).context["cl"].result_list)

    assert listed == [newer, older, Order.objects.get(pk=finished.pk)]


# --- Search and filters ------------------------------------------------------------------


def test_orders_are_found_by_full_or_short_id_customer_name_or_area(operator: Client) -> None:
    order = make_order(customer_name="Ada Lovelace", area="Old Town")
    other = make_order(customer_name="Grace", area="Harbour")

    def found(term: str) -> list[Order]:
        return list(operator.get(ORDERS, {"q": term}).context["cl"].result_list)

    assert found(str(order.pk)) == [order]
    assert found(f"  {str(order.pk).upper()} ") == [order]
    assert found(str(order.pk)[:8]) == [order]
    assert found(f"#{str(other.pk)[:8]}") == [other]
    assert found("ada") == [order]
    assert found("old town") == [order]
    assert found("'; DROP TABLE orders_order; --") == []


def test_orders_are_filtered_by_status_and_priority(operator: Client) -> None:
    urgent = make_order(priority=7)
    make_order(priority=1)
    queue.cancel(make_order(priority=7).pk)

    response = operator.get(ORDERS, {"status__exact": "queued", "priority": "7"})

    assert list(response.context["cl"].result_list) == [urgent]


@pytest.mark.parametrize(
    ("changelist", "parameter"),
    [
        pytest.param(ORDERS, "status__exact", id="order-status"),
        pytest.param(ORDERS, "kind__exact", id="order-kind"),
        pytest.param(WORKERS, "status__exact", id="worker-status"),
        pytest.param(WORKERS, "q", id="worker-search"),
        pytest.param(reverse("admin:orders_pizza_changelist"), "q", id="menu-search"),
        pytest.param(reverse("admin:workers_orderevent_changelist"), "kind__exact", id="event-kind"),
        pytest.param(reverse("admin:workers_bucketmove_changelist"), "reason__exact", id="move-reason"),
    ],
)
def test_a_nul_in_a_filter_or_search_is_a_400_naming_it(operator: Client, changelist: str, parameter: str) -> None:
    make_order()
    make_worker()

    response = operator.get(changelist, {parameter: "queued\x00"})

    assert response.status_code == 400
    assert response.content.decode() == f"{parameter}: Must not contain NUL characters."


# --- Staying fast with a million orders ------------------------------------------------------


def unbounded_order_counts(queries: list[dict[str, str]]) -> list[str]:
    """COUNTs over the orders table that are not capped by a LIMIT."""
    table = connection.ops.quote_name(Order._meta.db_table)
    return [
        q["sql"]
        for q in queries
        if "COUNT(" in q["sql"].upper() and table in q["sql"] and "LIMIT" not in q["sql"].upper()
    ]


@pytest.mark.parametrize(
    "path", [ORDERS, ORDERS + "?status__exact=queued", ORDERS + "?priority=3&kind__exact=delivery"]
)
def test_the_order_changelist_takes_a_bounded_number_of_queries_and_no_full_count(
    operator: Client, django_assert_max_num_queries: Any, path: str
) -> None:
    claimed(make_order())  # a row with a worker to join
    for n in range(40):
        make_order(priority=n % 10)

    with CaptureQueriesContext(connection) as small:
        assert operator.get(path).status_code == 200
    for n in range(60):
        make_order(priority=n % 10)
    with CaptureQueriesContext(connection) as big, django_assert_max_num_queries(len(small.captured_queries)):
        response = operator.get(path)

    assert response.status_code == 200
    assert len(big.captured_queries) == len(small.captured_queries)
    assert unbounded_order_counts(big.captured_queries) == []


def test_the_capped_paginator_counts_at_most_its_cap(operator: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_admin.CappedCountPaginator, "cap", 5)
    for _ in range(8):
        make_order()

    response = operator.get(ORDERS)

    assert response.context["cl"].result_count == 5
    assert response.context["cl"].show_full_result_count is False


def test_worker_and_bucket_changelists_take_a_bounded_number_of_queries(
    operator: Client, django_assert_max_num_queries: Any
) -> None:
    make_worker("shop-1")
    with CaptureQueriesContext(connection) as few:
        operator.get(WORKERS)
        operator.get(reverse("admin:workers_bucket_changelist"))
    for n in range(2, 8):
        make_worker(f"shop-{n}")
    for _ in range(20):
        make_order()

    with django_assert_max_num_queries(len(few.captured_queries)):
        operator.get(WORKERS)
        operator.get(reverse("admin:workers_bucket_changelist"))
