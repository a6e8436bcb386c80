"""The queue operations in process, against the real database: intake, claims, fencing, retries."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.db import connection, transaction

from tests.base import T0, area_owned_by, make_order, make_worker, order_request, place_at, wait_until
from workers import membership, monitor, queue
from workers.models import CLOSED, Order, OrderEvent, Worker
from workers.queue import leases

pytestmark = pytest.mark.django_db

TIMEOUT = 15.0


@pytest.fixture(autouse=True)
def queue_settings(settings: Any) -> None:
    """Pin every timing the assertions depend on, whatever the environment says."""
    settings.PIZZAQUEUE_HEARTBEAT_TIMEOUT = TIMEOUT
    settings.PIZZAQUEUE_PRIORITY_AGING = 1.0
    settings.PIZZAQUEUE_RETRY_BACKOFF = 2.0
    settings.PIZZAQUEUE_RETRY_BACKOFF_MAX = 300.0
    settings.PIZZAQUEUE_MAX_ATTEMPTS = 3
    settings.PIZZAQUEUE_STEAL_AFTER = 0.0
    settings.PIZZAQUEUE_BUCKETS = 256


def row(order: Order) -> dict[str, Any]:
    return Order.objects.filter(pk=order.pk).values().get()


def kinds(order: Order) -> list[str]:
    return list(OrderEvent.objects.filter(order=order).order_by("id").values_list("kind", flat=True))


def run_in_thread(target: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    """Run `target` on its own thread, hence its own database connection."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = target()
        except BaseException as exc:  # handed to the test thread to re-raise
            outcome["error"] = exc
        finally:
            connection.close()

    return threading.Thread(target=run), outcome


def result_of(thread: threading.Thread, outcome: dict[str, Any]) -> Any:
    thread.join(timeout=60)
    assert not thread.is_alive()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


# --- Intake and idempotency ---------------------------------------------------


def test_a_retried_submission_with_the_same_key_returns_the_first_order() -> None:
    first, first_created = queue.place(order_request(note="ring twice"), idempotency_key="key-1", now=T0)

    again, again_created = queue.place(
        order_request(note="ring twice"), idempotency_key="key-1", now=T0 + timedelta(seconds=5)
    )

    assert first_created is True
    assert again_created is False
    assert again.pk == first.pk
    assert Order.objects.count() == 1
    assert kinds(first) == ["placed"]
    assert Order.objects.get().idempotency_key == "key-1"


def test_a_key_reused_for_a_different_order_is_a_conflict() -> None:
    queue.place(order_request(note="ring twice"), idempotency_key="key-1", now=T0)

    with pytest.raises(
        queue.IdempotencyConflictError, match=r"^This Idempotency-Key was already used for a different order\.$"
    ):
        queue.place(order_request(note="knock"), idempotency_key="key-1", now=T0)

    assert Order.objects.count() == 1
    assert OrderEvent.objects.count() == 1


def test_orders_without_a_key_are_never_merged() -> None:
    request = order_request()

    queue.place(request, now=T0)
    queue.place(request, now=T0)

    assert Order.objects.count() == 2
    assert OrderEvent.objects.filter(kind="placed").count() == 2


def _first_key_lookup_misses(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Make place()'s first look-up by idempotency key find nothing, as when it ran before the winner committed."""
    real_filter = Order.objects.filter
    missed: list[bool] = []

    def filter_(*args: Any, **kwargs: Any) -> Any:
        queryset = real_filter(*args, **kwargs)
        if "idempotency_key" in kwargs and not missed:
            missed.append(True)
            return queryset.none()
        return queryset

    monkeypatch.setattr(Order.objects, "filter", filter_)
    return missed


def takeaway(**kw: Any) -> queue.OrderRequest:
    """A takeaway order for shop-1: the kind place() looks up by key before checking its shop."""
    return order_request(kind="takeaway", pinned_to="shop-1", **kw)


def test_a_key_race_lost_at_the_unique_constraint_returns_the_winners_order(monkeypatch: pytest.MonkeyPatch) -> None:
    make_worker("shop-1", now=T0)
    request = takeaway()
    winner, _ = queue.place(request, idempotency_key="key-1", now=T0)
    missed = _first_key_lookup_misses(monkeypatch)

    loser, created = queue.place(request, idempotency_key="key-1", now=T0)

    assert missed == [True]
    assert created is False
    assert loser.pk == winner.pk
    assert Order.objects.count() == 1
    assert OrderEvent.objects.count() == 1


def test_a_key_race_lost_with_a_different_body_is_a_conflict(monkeypatch: pytest.MonkeyPatch) -> None:
    make_worker("shop-1", now=T0)
    queue.place(takeaway(note="a"), idempotency_key="key-1", now=T0)
    missed = _first_key_lookup_misses(monkeypatch)

    with pytest.raises(
        queue.IdempotencyConflictError, match=r"^This Idempotency-Key was already used for a different order\.$"
    ):
        queue.place(takeaway(note="b"), idempotency_key="key-1", now=T0)

    assert missed == [True]
    assert Order.objects.count() == 1
    assert OrderEvent.objects.count() == 1


def _waiting_on_a_lock() -> bool:
    """Another connection is blocked on a lock (PostgreSQL; SQLite's busy wait shows nowhere)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_locks WHERE NOT granted AND pid <> pg_backend_pid()")
        return cursor.fetchone()[0] > 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", ["delivery", "takeaway"])
def test_two_connections_placing_with_one_key_make_one_order(kind: str) -> None:
    if kind == "takeaway":
        make_worker("shop-1", now=T0)
    request = takeaway() if kind == "takeaway" else order_request()
    racer, outcome = run_in_thread(lambda: queue.place(request, idempotency_key="key-1", now=T0))

    with transaction.atomic():
        winner, winner_created = queue.place(request, idempotency_key="key-1", now=T0)
        # The racer's write meets the winner's uncommitted one: on PostgreSQL it
        # waits on the key's index entry (delivery) or on the shop's row
        # (takeaway), on SQLite on the write lock, until the winner commits.
        racer.start()
        if connection.vendor == "postgresql":
            wait_until(_waiting_on_a_lock, timeout=30, what="the racer to wait on the winner")
        else:
            time.sleep(0.2)
    raced, raced_created = result_of(racer, outcome)

    assert winner_created is True
    assert raced_created is False
    assert raced.pk == winner.pk
    assert Order.objects.count() == 1
    assert OrderEvent.objects.count() == 1


# --- Claiming -----------------------------------------------------------------


def test_a_claim_takes_at_most_its_limit() -> None:
    worker = make_worker("shop-1", now=T0)
    orders = [place_at(T0 + timedelta(seconds=i)) for i in range(3)]

    claims = queue.claim(worker.pk, 2, now=T0 + timedelta(minutes=1))

    assert [c.order.pk for c in claims] == [orders[0].pk, orders[1].pk]
    assert [o.status for o in Order.objects.order_by("created_at")] == ["preparing", "preparing", "queued"]


def test_a_claimed_order_is_handed_over_exactly_as_stored() -> None:
    worker = make_worker("shop-1", now=T0)
    placed, _ = queue.place(
        order_request(
            items=[
                {"pizza": "margherita", "size": "large", "quantity": 2},
                {"pizza": "diavola", "size": "small", "quantity": 1},
            ],
            note="extra basil",
            customer_name="Ada",
            area="north",
            priority=4,
        ),
        now=T0,
    )

    [claim] = queue.claim(worker.pk, 1, now=T0 + timedelta(seconds=1))

    stored = Order.objects.get(pk=placed.pk)
    handed = claim.order
    assert handed._state.adding is False and handed._state.db == "default"
    for field in Order._meta.concrete_fields:
        assert getattr(handed, field.attname) == getattr(stored, field.attname), field.name
    assert handed.items[0] == {"pizza": "margherita", "size": "large", "quantity": 2}  # decoded, not JSON text
    assert handed.lease_token == claim.token


def _prepared_runs(text: str) -> int:
    """How often this connection has run its prepared statements that contain `text`."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT COALESCE(SUM(generic_plans + custom_plans), 0) FROM pg_prepared_statements WHERE statement LIKE %s",
            [f"%{text}%"],
        )
        return int(cursor.fetchone()[0])


@pytest.mark.parametrize("prepared", [True, False])
def test_a_kitchens_claims_and_completions_run_prepared_unless_turned_off(settings: Any, prepared: bool) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("prepared statements are PostgreSQL's")
    settings.PIZZAQUEUE_PREPARED_STATEMENTS = prepared
    worker = make_worker("shop-1", now=T0)
    orders = [place_at(T0 + timedelta(seconds=i)) for i in range(3)]
    claims_before, completions_before = _prepared_runs("picked AS ("), _prepared_runs("held (id, token) AS")

    for order in orders:
        [claim] = queue.claim(worker.pk, 1, now=T0 + timedelta(minutes=1))
        assert claim.order.pk == order.pk
        assert queue.complete_many([(claim.order.pk, claim.token)], worker.pk) == {order.pk}

    runs = 3 if prepared else 0
    assert _prepared_runs("picked AS (") - claims_before == runs
    assert _prepared_runs("held (id, token) AS") - completions_before == runs
    assert Order.objects.filter(status=Order.Status.DONE).count() == 3


def test_a_claim_with_nothing_to_do_returns_nothing_and_writes_nothing() -> None:
    worker = make_worker("shop-1", now=T0)

    assert queue.claim(worker.pk, 5, now=T0) == []
    assert OrderEvent.objects.count() == 0


def test_a_claim_takes_higher_priority_first_then_oldest_first() -> None:
    worker = make_worker("shop-1", now=T0)
    low = place_at(T0, priority=0)
    urgent_first = place_at(T0 + timedelta(seconds=1), priority=5)
    urgent_second = place_at(T0 + timedelta(seconds=2), priority=5)
    middle = place_at(T0 + timedelta(seconds=3), priority=2)

    claims = queue.claim(worker.pk, 10, now=T0 + timedelta(seconds=4))

    assert [c.order.pk for c in claims] == [urgent_first.pk, urgent_second.pk, middle.pk, low.pk]


def test_aging_lets_an_old_low_priority_order_overtake_a_new_urgent_one(settings: Any) -> None:
    settings.PIZZAQUEUE_PRIORITY_AGING = 1.0  # one priority point per minute waited
    worker = make_worker("shop-1", now=T0)
    old = place_at(T0, priority=0)
    # Placed 6 minutes later at priority 5: the old order has gained 6 points by then.
    newer_urgent = place_at(T0 + timedelta(minutes=6), priority=5)

    claims = queue.claim(worker.pk, 1, now=T0 + timedelta(minutes=6))

    assert [c.order.pk for c in claims] == [old.pk]
    assert Order.objects.get(pk=newer_urgent.pk).status == "queued"


def test_an_urgent_order_still_overtakes_an_old_one_that_has_not_aged_enough(settings: Any) -> None:
    settings.PIZZAQUEUE_PRIORITY_AGING = 1.0
    worker = make_worker("shop-1", now=T0)
    place_at(T0, priority=0)
    newer_urgent = place_at(T0 + timedelta(minutes=4), priority=5)

    claims = queue.claim(worker.pk, 1, now=T0 + timedelta(minutes=4))

    assert [c.order.pk for c in claims] == [newer_urgent.pk]


def test_faster_aging_overtakes_sooner(settings: Any) -> None:
    settings.PIZZAQUEUE_PRIORITY_AGING = 2.0
    worker = make_worker("shop-1", now=T0)
    old = place_at(T0, priority=0)
    place_at(T0 + timedelta(minutes=3), priority=5)

    claims = queue.claim(worker.pk, 1, now=T0 + timedelta(minutes=3))

    assert [c.order.pk for c in claims] == [old.pk]


def test_without_aging_priority_is_strict(settings: Any) -> None:
    settings.PIZZAQUEUE_PRIORITY_AGING = 0.0
    worker = make_worker("shop-1", now=T0)
    old = place_at(T0, priority=0)
    newer = place_at(T0 + timedelta(days=2), priority=1)

    claims = queue.claim(worker.pk, 2, now=T0 + timedelta(days=2))

    assert [c.order.pk for c in claims] == [newer.pk, old.pk]


def test_an_order_is_not_claimed_before_its_not_before() -> None:
    worker = make_worker("shop-1", now=T0)
    scheduled = place_at(T0, not_before=T0 + timedelta(minutes=10))

    early = queue.claim(worker.pk, 5, now=T0 + timedelta(minutes=10) - timedelta(microseconds=1))
    on_time = queue.claim(worker.pk, 5, now=T0 + timedelta(minutes=10))

    assert early == []
    assert [c.order.pk for c in on_time] == [scheduled.pk]


def test_a_worker_claims_only_its_buckets_and_the_orders_pinned_to_it() -> None:
    shop_a = make_worker("shop-a", now=T0)
    shop_b = make_worker("shop-b", now=T0)
    for_a = place_at(T0, area=area_owned_by(shop_a))
    for_b = place_at(T0, area=area_owned_by(shop_b))
    # A takeaway for shop A whose area hashes into one of shop B's buckets.
    pinned_to_a = place_at(T0, kind="takeaway", pinned_to="shop-a", area=area_owned_by(shop_b))

    claimed_by_a = queue.claim(shop_a.pk, 10, now=T0)
    claimed_by_b = queue.claim(shop_b.pk, 10, now=T0)

    assert {c.order.pk for c in claimed_by_a} == {for_a.pk, pinned_to_a.pk}
    assert {c.order.pk for c in claimed_by_b} == {for_b.pk}
    assert Order.objects.get(pk=for_b.pk).worker_id == shop_b.pk


def test_the_kitchen_display_lists_what_the_kitchen_would_claim_next_in_claim_order() -> None:
    # The display reads the `claimable` statement; on PostgreSQL the claim runs its own: they must agree.
    shop_a = make_worker("shop-a", now=T0)
    shop_b = make_worker("shop-b", now=T0)
    for priority, minutes in ((0, 0), (5, 1), (0, 2), (9, 3)):
        place_at(T0 + timedelta(minutes=minutes), area=area_owned_by(shop_a), priority=priority)
        place_at(T0 + timedelta(minutes=minutes), area=area_owned_by(shop_b), priority=priority)
    # Distinct times: orders tied on (rank, created_at) may come in either order.
    place_at(T0 + timedelta(seconds=30), kind="takeaway", pinned_to="shop-a", area=area_owned_by(shop_b))
    place_at(T0 + timedelta(seconds=40), kind="takeaway", pinned_to="shop-b", area=area_owned_by(shop_a))
    place_at(T0, area=area_owned_by(shop_a), not_before=T0 + timedelta(hours=1))
    now = T0 + timedelta(minutes=5)

    for shop in (shop_a, shop_b):
        shown = leases.claimable_ids(shop.pk, now, 100)
        claimed = [c.order.pk for c in queue.claim(shop.pk, 100, now=now)]
        assert len(shown) == 5
        assert claimed == shown


def test_a_worker_does_not_claim_a_takeaway_pinned_to_another_shop_in_its_bucket() -> None:
    make_worker("shop-a", now=T0)
    shop_b = make_worker("shop-b", now=T0)
    place_at(T0, kind="takeaway", pinned_to="shop-a", area=area_owned_by(shop_b))

    claimed_by_b = queue.claim(shop_b.pk, 10, now=T0)

    assert claimed_by_b == []


def test_a_worker_taken_out_of_the_ring_claims_nothing() -> None:
    shop_a = make_worker("shop-a", now=T0)
    shop_b = make_worker("shop-b", now=T0)
    order = place_at(T0, area=area_owned_by(shop_a))
    monitor.declare_dead(shop_a.pk, now=T0)

    assert queue.claim(shop_a.pk, 10, now=T0) == []
    assert [c.order.pk for c in queue.claim(shop_b.pk, 10, now=T0)] == [order.pk]


def test_every_claim_issues_a_new_lease_token_and_writes_claimed_events() -> None:
    worker = make_worker("shop-1", now=T0)
    first = place_at(T0, priority=2)
    second = place_at(T0, priority=1)
    third = place_at(T0, priority=0)

    batch = queue.claim(worker.pk, 2, now=T0)
    single = queue.claim(worker.pk, 1, now=T0 + timedelta(seconds=1))

    assert [c.order.pk for c in batch] == [first.pk, second.pk]
    assert [c.order.pk for c in single] == [third.pk]
    # One token per claim, shared by the orders of that claim.
    assert batch[0].token == batch[1].token
    assert single[0].token != batch[0].token
    stored = row(first)
    assert stored["status"] == "preparing"
    assert stored["worker_id"] == worker.pk
    assert stored["lease_token"] == batch[0].token
    assert stored["lease_expires_at"] == T0 + timedelta(seconds=TIMEOUT)
    assert stored["attempts"] == 1
    assert stored["claimed_at"] == T0
    assert batch[0].order.lease_token == batch[0].token
    assert batch[0].order.attempts == 1
    assert row(third)["lease_token"] == single[0].token
    claimed = OrderEvent.objects.filter(kind="claimed").order_by("id")
    assert [(e.order_id, e.worker_id, e.data) for e in claimed] == [
        (first.pk, worker.pk, {"attempt": 1}),
        (second.pk, worker.pk, {"attempt": 1}),
        (third.pk, worker.pk, {"attempt": 1}),
    ]


@pytest.mark.django_db(transaction=True)
def test_a_second_claimer_skips_rows_locked_by_an_open_claim() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("SKIP LOCKED is PostgreSQL's; SQLite serialises claimers on its one write lock")
    worker = make_worker("shop-1", now=T0)
    top = place_at(T0, priority=9)
    middle = place_at(T0, priority=5)
    bottom = place_at(T0, priority=0)
    holding = threading.Event()
    finish = threading.Event()

    def claim_and_hold() -> list[queue.Claim]:
        with transaction.atomic():
            claims = queue.claim(worker.pk, 1, now=T0)
            holding.set()
            assert finish.wait(timeout=30)
        return claims

    holder, outcome = run_in_thread(claim_and_hold)
    holder.start()
    assert holding.wait(timeout=30)
    with connection.cursor() as cursor:
        # Waiting on the held row instead of skipping it fails the test instead of hanging it.
        cursor.execute("SET lock_timeout = '5s'")
    try:
        second = queue.claim(worker.pk, 10, now=T0)
    finally:
        finish.set()
        with connection.cursor() as cursor:
            cursor.execute("RESET lock_timeout")
    first = result_of(holder, outcome)

    assert [c.order.pk for c in first] == [top.pk]
    assert [c.order.pk for c in second] == [middle.pk, bottom.pk]
    assert first[0].token != second[0].token
    assert row(top)["lease_token"] == first[0].token
    assert row(middle)["lease_token"] == second[0].token
    assert OrderEvent.objects.filter(kind="claimed").count() == 3
    assert sorted(OrderEvent.objects.filter(kind="claimed").values_list("order_id", flat=True)) == sorted(
        [top.pk, middle.pk, bottom.pk]
    )


# --- The worker's fenced writes -----------------------------------------------


@pytest.fixture
def held() -> tuple[Worker, Order, uuid.UUID]:
    """An order claimed by shop-1 at T0, with its lease token."""
    worker = make_worker("shop-1", now=T0)
    order = place_at(T0)
    [claim] = queue.claim(worker.pk, 1, now=T0)
    return worker, order, claim.token


def test_the_lease_holder_reports_stages(held: tuple[Worker, Order, uuid.UUID]) -> None:
    worker, order, token = held

    assert queue.report_stage(order.pk, token, "oven", worker_id=worker.pk, now=T0) is True

    assert row(order)["stage"] == "oven"
    event = OrderEvent.objects.filter(order=order).last()
    assert (event.kind, event.stage, event.worker_id) == ("stage", "oven", worker.pk)


def test_the_lease_holder_completes_its_order(held: tuple[Worker, Order, uuid.UUID]) -> None:
    worker, order, token = held
    queue.report_stage(order.pk, token, "boxing", worker_id=worker.pk, now=T0)

    assert queue.complete(order.pk, token, worker_id=worker.pk, now=T0 + timedelta(seconds=30)) is True

    stored = row(order)
    assert stored["status"] == "done"
    assert stored["stage"] == ""
    assert stored["lease_token"] is None
    assert stored["lease_expires_at"] is None
    assert stored["finished_at"] == T0 + timedelta(seconds=30)
    assert kinds(order) == ["placed", "claimed", "stage", "done"]
    assert OrderEvent.objects.filter(order=order, kind="done").count() == 1


def _lease_lost(order: Order) -> OrderEvent:
    return OrderEvent.objects.get(order=order, kind="lease-lost")


def test_a_wrong_token_cannot_report_a_stage(held: tuple[Worker, Order, uuid.UUID]) -> None:
    worker, order, _token = held
    before = row(order)

    assert queue.report_stage(order.pk, uuid.uuid4(), "oven", worker_id=worker.pk, now=T0) is False

    assert row(order) == before
    event = _lease_lost(order)
    assert event.worker_id == worker.pk
    assert (event.message, event.data) == ("", {"action": "stage"})
    assert event.data == {"action": "stage"}
    assert kinds(order) == ["placed", "claimed", "lease-lost"]


def test_a_wrong_token_cannot_complete_an_order(held: tuple[Worker, Order, uuid.UUID]) -> None:
    worker, order, _token = held
    before = row(order)

    assert queue.complete(order.pk, uuid.uuid4(), worker_id=worker.pk, now=T0) is False

    assert row(order) == before
    assert _lease_lost(order).data == {"action": "complete"}
    assert kinds(order) == ["placed", "claimed", "lease-lost"]


def test_complete_many_completes_only_the_orders_whose_token_matches() -> None:
    worker = make_worker("shop-1", now=T0)
    mine = place_at(T0, priority=1)
    lost = place_at(T0, priority=0)
    [claim_mine, claim_lost] = queue.claim(worker.pk, 2, now=T0)
    before = row(lost)

    done = queue.complete_many(
        [(mine.pk, claim_mine.token), (lost.pk, uuid.uuid4())], worker_id=worker.pk, now=T0 + timedelta(seconds=1)
    )

    assert claim_lost.order.pk == lost.pk
    assert done == {mine.pk}
    assert row(mine)["status"] == "done"
    assert row(lost) == before
    assert kinds(mine) == ["placed", "claimed", "done"]
    assert kinds(lost) == ["placed", "claimed", "lease-lost"]


def test_a_wrong_token_cannot_fail_an_order(held: tuple[Worker, Order, uuid.UUID]) -> None:
    worker, order, _token = held
    before = row(order)

    assert queue.fail(order.pk, uuid.uuid4(), "oven on fire", worker_id=worker.pk, now=T0) == "lease-lost"

    assert row(order) == before
    assert _lease_lost(order).data == {"action": "fail"}
    assert kinds(order) == ["placed", "claimed", "lease-lost"]


def test_a_wrong_token_cannot_release_an_order(held: tuple[Worker, Order, uuid.UUID]) -> None:
    worker, order, _token = held
    before = row(order)

    assert queue.release([(order.pk, uuid.uuid4())], worker_id=worker.pk, now=T0) == 0

    assert row(order) == before
    assert OrderEvent.objects.filter(order=order, kind="released").exists() is False


def test_a_refused_release_records_lease_lost(held: tuple[Worker, Order, uuid.UUID]) -> None:
    worker, order, _token = held

    queue.release([(order.pk, uuid.uuid4())], worker_id=worker.pk, now=T0)

    assert kinds(order) == ["placed", "claimed", "lease-lost"]


def test_an_unstarted_order_released_on_a_clean_stop_goes_back_with_its_attempt_refunded(
    held: tuple[Worker, Order, uuid.UUID],
) -> None:
    worker, order, token = held
    later = T0 + timedelta(seconds=3)

    assert queue.release([(order.pk, token)], worker_id=worker.pk, now=later) == 1

    stored = row(order)
    assert stored["status"] == "queued"
    assert stored["attempts"] == 0
    assert stored["worker_id"] is None
    assert stored["lease_token"] is None
    assert stored["eligible_at"] == later
    event = OrderEvent.objects.filter(order=order).last()
    assert (event.kind, event.data) == ("released", {"reason": "stopping"})
    # Released with the same token again: it is no longer held.
    assert queue.release([(order.pk, token)], worker_id=worker.pk, now=later) == 0


def test_a_worker_presumed_dead_cannot_complete_an_order_that_was_given_to_another() -> None:
    shop_a = make_worker("shop-a", now=T0)
    shop_b = make_worker("shop-b", now=T0)
    order = place_at(T0, area=area_owned_by(shop_a))
    [first] = queue.claim(shop_a.pk, 1, now=T0)
    monitor.declare_dead(shop_a.pk, now=T0 + timedelta(seconds=20))
    [second] = queue.claim(shop_b.pk, 1, now=T0 + timedelta(seconds=21))

    # Shop A was only paused; it wakes up and carries on with the order it had.
    assert (
        queue.report_stage(order.pk, first.token, "oven", worker_id=shop_a.pk, now=T0 + timedelta(seconds=22)) is False
    )
    assert queue.complete(order.pk, first.token, worker_id=shop_a.pk, now=T0 + timedelta(seconds=23)) is False
    assert (
        queue.fail(order.pk, first.token, "late", worker_id=shop_a.pk, now=T0 + timedelta(seconds=23)) == "lease-lost"
    )
    assert queue.complete(order.pk, second.token, worker_id=shop_b.pk, now=T0 + timedelta(seconds=24)) is True
    assert queue.complete(order.pk, first.token, worker_id=shop_a.pk, now=T0 + timedelta(seconds=25)) is False

    assert second.token != first.token
    stored = row(order)
    assert stored["status"] == "done"
    assert stored["worker_id"] == shop_b.pk
    assert stored["attempts"] == 2
    assert stored["finished_at"] == T0 + timedelta(seconds=24)
    assert kinds(order) == [
        "placed",
        "claimed",
        "reassigned",
        "claimed",
        "lease-lost",
        "lease-lost",
        "lease-lost",
        "done",
        "lease-lost",
    ]
    assert OrderEvent.objects.get(order=order, kind="done").worker_id == shop_b.pk


# --- Failure, retries and the dead letter -------------------------------------


def test_a_failed_attempt_is_retried_with_backoff_until_it_is_dead_lettered() -> None:
    worker = make_worker("shop-1", now=T0)
    order = place_at(T0, max_attempts=3)

    [claim] = queue.claim(worker.pk, 1, now=T0)
    assert queue.fail(order.pk, claim.token, "oven on fire", worker_id=worker.pk, now=T0) == "retried"
    stored = row(order)
    assert stored["status"] == "queued"
    assert stored["eligible_at"] == T0 + timedelta(seconds=2)
    assert stored["last_error"] == "oven on fire"
    assert stored["attempts"] == 1
    assert stored["worker_id"] is None
    assert stored["lease_token"] is None
    retried = OrderEvent.objects.filter(order=order).last()
    assert (retried.kind, retried.message, retried.data) == (
        "retried",
        "oven on fire",
        {"reason": "failed", "attempts": 1, "retry_in": 2.0},
    )

    # Not before the backoff has passed.
    assert queue.claim(worker.pk, 1, now=T0 + timedelta(seconds=1)) == []
    [claim] = queue.claim(worker.pk, 1, now=T0 + timedelta(seconds=2))
    assert (
        queue.fail(order.pk, claim.token, "no dough", worker_id=worker.pk, now=T0 + timedelta(seconds=2)) == "retried"
    )
    assert row(order)["eligible_at"] == T0 + timedelta(seconds=2 + 4)
    assert OrderEvent.objects.filter(order=order).last().data == {"reason": "failed", "attempts": 2, "retry_in": 4.0}

    [claim] = queue.claim(worker.pk, 1, now=T0 + timedelta(seconds=6))
    assert claim.order.attempts == 3
    assert queue.fail(order.pk, claim.token, "burnt", worker_id=worker.pk, now=T0 + timedelta(seconds=7)) == "failed"
    stored = row(order)
    assert stored["status"] == "failed"
    assert stored["attempts"] == 3
    assert stored["last_error"] == "burnt"
    assert stored["finished_at"] == T0 + timedelta(seconds=7)
    assert stored["lease_token"] is None
    failed = OrderEvent.objects.filter(order=order).last()
    assert (failed.kind, failed.message, failed.data) == ("failed", "burnt", {"attempts": 3})
    assert queue.claim(worker.pk, 1, now=T0 + timedelta(days=1)) == []
    assert kinds(order) == ["placed", "claimed", "retried", "claimed", "retried", "claimed", "failed"]


def test_the_retry_backoff_doubles_up_to_its_cap(settings: Any) -> None:
    settings.PIZZAQUEUE_RETRY_BACKOFF = 10.0
    settings.PIZZAQUEUE_RETRY_BACKOFF_MAX = 35.0

    assert [queue.retry_delay(attempt).total_seconds() for attempt in (1, 2, 3, 4)] == [10.0, 20.0, 35.0, 35.0]


def test_a_single_attempt_order_fails_at_once() -> None:
    worker = make_worker("shop-1", now=T0)
    order = place_at(T0, max_attempts=1)
    [claim] = queue.claim(worker.pk, 1, now=T0)

    assert queue.fail(order.pk, claim.token, "x" * 3000, worker_id=worker.pk, now=T0) == "failed"

    assert row(order)["last_error"] == "x" * 2000
    assert row(order)["status"] == "failed"


# --- Customers and operators --------------------------------------------------


def test_a_queued_order_can_be_cancelled() -> None:
    order = place_at(T0)

    cancelled = queue.cancel(order.pk, "changed my mind", now=T0 + timedelta(seconds=5))

    assert cancelled.status == "cancelled"
    assert cancelled.cancel_reason == "changed my mind"
    assert cancelled.finished_at == T0 + timedelta(seconds=5)
    event = OrderEvent.objects.filter(order=order).last()
    assert (event.kind, event.message) == ("cancelled", "changed my mind")


@pytest.mark.parametrize("state", ["preparing", "done", "cancelled"])
def test_an_order_that_left_the_queue_cannot_be_cancelled(state: str) -> None:
    worker = make_worker("shop-1", now=T0)
    order = place_at(T0)
    if state in ("preparing", "done"):
        [claim] = queue.claim(worker.pk, 1, now=T0)
        if state == "done":
            queue.complete(order.pk, claim.token, worker_id=worker.pk, now=T0)
    else:
        queue.cancel(order.pk, now=T0)
    before = row(order)
    events = OrderEvent.objects.count()

    with pytest.raises(
        queue.InvalidTransitionError, match=rf"^Order is {state}; only a queued order can be cancelled\.$"
    ):
        queue.cancel(order.pk, now=T0 + timedelta(seconds=1))

    assert row(order) == before
    assert OrderEvent.objects.count() == events


@pytest.mark.parametrize("order_id", ["not-a-uuid", "8a4c5c2e-6f5e-4a43-9d0e-3f0f8f1b2a11"])
def test_cancelling_an_unknown_order_says_so(order_id: str) -> None:
    with pytest.raises(queue.OrderNotFoundError, match=rf"^{order_id}$"):
        queue.cancel(order_id)


def test_a_failed_order_is_requeued_with_fresh_attempts() -> None:
    worker = make_worker("shop-1", now=T0)
    order = place_at(T0, max_attempts=1, priority=4)
    [claim] = queue.claim(worker.pk, 1, now=T0)
    queue.fail(order.pk, claim.token, "burnt", worker_id=worker.pk, now=T0)
    later = T0 + timedelta(hours=1)

    requeued = queue.requeue(order.pk, "requeued by an operator", now=later)

    assert requeued.status == "queued"
    assert requeued.attempts == 0
    assert requeued.eligible_at == later
    assert requeued.rank == queue.rank_for(later, 4)
    assert requeued.finished_at is None
    event = OrderEvent.objects.filter(order=order).last()
    assert (event.kind, event.message, event.data) == ("retried", "requeued by an operator", {"by": "operator"})
    [again] = queue.claim(worker.pk, 1, now=later)
    assert again.order.pk == order.pk
    assert again.order.attempts == 1


def test_a_cancelled_order_can_be_requeued() -> None:
    order = place_at(T0)
    queue.cancel(order.pk, "oops", now=T0)

    requeued = queue.requeue(order.pk, "customer called back", now=T0 + timedelta(minutes=1))

    assert requeued.status == "queued"
    assert requeued.cancel_reason == ""
    assert OrderEvent.objects.filter(order=order).last().message == "customer called back"


def test_requeueing_a_preparing_order_revokes_its_lease(held: tuple[Worker, Order, uuid.UUID]) -> None:
    worker, order, token = held

    requeued = queue.requeue(order.pk, now=T0 + timedelta(seconds=10))

    assert requeued.status == "queued"
    assert requeued.lease_token is None
    assert requeued.worker_id is None
    assert requeued.attempts == 0
    assert requeued.eligible_at == T0 + timedelta(seconds=10)
    # The old holder is fenced off; the next claim gets a fresh token.
    assert queue.complete(order.pk, token, worker_id=worker.pk, now=T0 + timedelta(seconds=11)) is False
    [again] = queue.claim(worker.pk, 1, now=T0 + timedelta(seconds=12))
    assert again.token != token
    assert queue.complete(order.pk, again.token, worker_id=worker.pk, now=T0 + timedelta(seconds=13)) is True
    assert kinds(order) == ["placed", "claimed", "retried", "lease-lost", "claimed", "done"]


@pytest.mark.parametrize("state", ["queued", "done"])
def test_only_failed_cancelled_or_preparing_orders_can_be_requeued(state: str) -> None:
    worker = make_worker("shop-1", now=T0)
    order = place_at(T0)
    if state == "done":
        [claim] = queue.claim(worker.pk, 1, now=T0)
        queue.complete(order.pk, claim.token, worker_id=worker.pk, now=T0)
    before = row(order)

    with pytest.raises(
        queue.InvalidTransitionError,
        match=rf"^Order is {state}; only failed, cancelled or preparing orders can be requeued\.$",
    ):
        queue.requeue(order.pk, now=T0)

    assert row(order) == before


def test_an_order_whose_priority_is_raised_is_claimed_first() -> None:
    worker = make_worker("shop-1", now=T0)
    other = place_at(T0, priority=3)
    slow = place_at(T0 + timedelta(seconds=1), priority=0)

    raised = queue.raise_priority(slow.pk, now=T0 + timedelta(seconds=2))

    assert raised.priority == 9
    # The rank is rebuilt from when the order became eligible, not from the raise.
    assert raised.rank == queue.rank_for(T0 + timedelta(seconds=1), 9)
    event = OrderEvent.objects.filter(order=slow).last()
    assert (event.kind, event.message, event.data) == ("priority-raised", "", {"priority": 9})
    claims = queue.claim(worker.pk, 2, now=T0 + timedelta(seconds=2))
    assert [c.order.pk for c in claims] == [slow.pk, other.pk]


def test_raising_priority_to_an_explicit_value() -> None:
    order = place_at(T0, priority=1)

    raised = queue.raise_priority(order.pk, priority=6, now=T0)

    assert raised.priority == 6
    assert raised.rank == queue.rank_for(T0, 6)
    assert OrderEvent.objects.filter(order=order).last().data == {"priority": 6}


def test_an_order_in_the_kitchen_cannot_have_its_priority_raised(held: tuple[Worker, Order, uuid.UUID]) -> None:
    _worker, order, _token = held
    before = row(order)

    with pytest.raises(
        queue.InvalidTransitionError, match=r"^Order is preparing; only a queued order's priority can be raised\.$"
    ):
        queue.raise_priority(order.pk, now=T0)

    assert row(order) == before
    assert kinds(order) == ["placed", "claimed"]


@pytest.mark.parametrize("priority", [-1, 10])
def test_raising_priority_out_of_its_range_is_refused(priority: int) -> None:
    order = place_at(T0)

    with pytest.raises(ValidationError) as excinfo:
        queue.raise_priority(order.pk, priority=priority, now=T0)

    assert excinfo.value.message_dict == {"priority": ["Must be between 0 and 9."]}
    assert row(order)["priority"] == 0
    assert kinds(order) == ["placed"]


def test_a_takeaway_order_of_a_closed_shop_cannot_be_requeued() -> None:
    shop = make_worker("corner-shop")
    order = make_order(kind="takeaway", pinned_to="corner-shop")
    membership.drain(shop.pk)
    membership.stop(shop.pk, CLOSED)
    order.refresh_from_db()
    assert order.status == "cancelled"

    with pytest.raises(queue.InvalidTransitionError, match="Its shop is closed"):
        queue.requeue(order.pk)
    assert Order.objects.get(pk=order.pk).status == "cancelled"


def test_raising_priority_never_lowers_it() -> None:
    order = make_order(priority=5)

    with pytest.raises(queue.InvalidTransitionError, match="already has priority 5; this only raises it"):
        queue.raise_priority(order.pk, priority=1)
    assert Order.objects.get(pk=order.pk).priority == 5
