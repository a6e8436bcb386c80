"""The monitor duty in process: election, dead kitchens, expired leases, membership changes."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from django.core.exceptions import ValidationError

from tests.base import T0, area_owned_by, at, fresh, make_worker, place_at
from workers import membership, monitor, queue
from workers.models import Bucket, BucketMove, MonitorLease, Order, OrderEvent, Worker

pytestmark = pytest.mark.django_db

TIMEOUT = 15.0


@pytest.fixture(autouse=True)
def monitor_settings(settings: Any) -> None:
    """Pin every timing the assertions depend on, whatever the environment says."""
    settings.PIZZAQUEUE_HEARTBEAT_TIMEOUT = TIMEOUT
    settings.PIZZAQUEUE_MAX_ATTEMPTS = 3
    settings.PIZZAQUEUE_STEAL_AFTER = 0.0
    settings.PIZZAQUEUE_BUCKETS = 256


def owned(worker: Worker) -> set[int]:
    return set(Bucket.objects.filter(owner=worker).values_list("number", flat=True))


def last_event(order: Order) -> OrderEvent:
    return OrderEvent.objects.filter(order=order).order_by("id").last()


# --- Election -----------------------------------------------------------------


def test_only_one_worker_holds_the_monitor_lease_until_it_expires() -> None:
    first = make_worker("shop-1", now=T0)
    second = make_worker("shop-2", now=T0)

    assert monitor.acquire(first.pk, now=T0) is True
    assert monitor.acquire(second.pk, now=T0) is False
    # The holder renews it, which pushes the expiry on.
    assert monitor.acquire(first.pk, now=at(10)) is True
    assert monitor.acquire(second.pk, now=at(24)) is False
    assert MonitorLease.objects.get().expires_at == at(10 + TIMEOUT)
    # Once it lapses without renewal, another worker takes over, and the old holder is out.
    assert monitor.acquire(second.pk, now=at(26)) is True
    assert monitor.acquire(first.pk, now=at(27)) is False
    lease = MonitorLease.objects.get()
    assert (lease.holder_id, lease.expires_at) == (second.pk, at(26 + TIMEOUT))


def test_a_tick_by_a_worker_that_is_not_the_monitor_does_nothing() -> None:
    holder = make_worker("shop-1", now=T0)
    other = make_worker("shop-2", now=T0)
    monitor.acquire(holder.pk, now=T0)

    # shop-1's lease runs until exactly now: it has not lapsed, so shop-2 may not act.
    assert monitor.tick(other.pk, now=at(TIMEOUT)) is None

    assert fresh(holder).status == "alive"
    assert MonitorLease.objects.get().holder_id == holder.pk


def test_resigning_hands_the_monitor_duty_on_at_once() -> None:
    first = make_worker("shop-1", now=T0)
    second = make_worker("shop-2", now=T0)
    monitor.acquire(first.pk, now=T0)

    # Only the holder can resign.
    monitor.resign(second.pk)
    assert monitor.acquire(second.pk, now=at(1)) is False
    monitor.resign(first.pk)

    assert monitor.acquire(second.pk, now=at(1)) is True
    assert MonitorLease.objects.get().holder_id == second.pk


def test_a_new_monitor_declares_the_silent_old_one_dead() -> None:
    old = make_worker("shop-1", now=T0)
    new = make_worker("shop-2", now=T0)
    assert monitor.tick(old.pk, now=T0) is not None
    membership.heartbeat(new.pk, now=at(20))

    report = monitor.tick(new.pk, now=at(20))

    assert report is not None
    assert report.dead == [old.pk]
    assert fresh(old).status == "dead"
    assert MonitorLease.objects.get().holder_id == new.pk
    assert owned(new) == set(range(256))


def test_a_tick_with_every_worker_fresh_changes_nothing() -> None:
    first = make_worker("shop-1", now=T0)
    second = make_worker("shop-2", now=T0)
    order = place_at(T0, area=area_owned_by(second))
    [claim] = queue.claim(second.pk, 1, now=T0)
    moves = BucketMove.objects.count()

    report = monitor.tick(first.pk, now=at(TIMEOUT))

    assert report == monitor.Recovery()
    assert fresh(second).status == "alive"
    assert Order.objects.get(pk=order.pk).lease_token == claim.token
    assert BucketMove.objects.count() == moves


# --- A dead kitchen -----------------------------------------------------------


@dataclass
class Death:
    """Three kitchens at T0; the victim, silent after claiming, is declared dead by the boss's tick at 20 s."""

    boss: Worker
    victim: Worker
    survivor: Worker
    victims_buckets: set[int]
    delivery: Order
    last_try: Order
    pinned_preparing: Order
    pinned_queued: Order
    elsewhere: Order
    survivors_token: uuid.UUID
    report: monitor.Recovery


@pytest.fixture
def death() -> Death:
    boss = make_worker("shop-boss", now=T0)
    victim = make_worker("shop-victim", now=T0)
    survivor = make_worker("shop-survivor", now=T0)
    victims_buckets = owned(victim)
    area = area_owned_by(victim)
    delivery = place_at(T0, area=area, priority=3)
    last_try = place_at(T0, area=area, priority=2, max_attempts=1)
    pinned_preparing = place_at(T0, area=area, priority=1, kind="takeaway", pinned_to="shop-victim")
    claimed = queue.claim(victim.pk, 10, now=T0)
    pinned_queued = place_at(T0, area=area, kind="takeaway", pinned_to="shop-victim")
    elsewhere = place_at(T0, area=area_owned_by(survivor))
    [survivors_claim] = queue.claim(survivor.pk, 1, now=T0)
    membership.heartbeat(boss.pk, now=at(10))
    membership.heartbeat(survivor.pk, [survivors_claim.token], now=at(10))

    report = monitor.tick(boss.pk, now=at(20))

    assert [c.order.pk for c in claimed] == [delivery.pk, last_try.pk, pinned_preparing.pk]
    assert report is not None
    return Death(
        boss,
        victim,
        survivor,
        victims_buckets,
        delivery,
        last_try,
        pinned_preparing,
        pinned_queued,
        elsewhere,
        survivors_claim.token,
        report,
    )


def test_the_monitor_declares_a_stale_worker_dead_and_reports_what_it_recovered(death: Death) -> None:
    report = death.report
    tally = (report.dead, len(report.requeued), len(report.failed), len(report.cancelled), report.moved_buckets)
    assert tally == ([death.victim.pk], 2, 1, 0, len(death.victims_buckets))
    dead = fresh(death.victim)
    assert (dead.status, dead.stop_reason, dead.stopped_at) == ("dead", "missed heartbeats", at(20))


def test_a_dead_workers_delivery_order_is_requeued_for_the_live_shop_that_now_owns_its_bucket(death: Death) -> None:
    requeued = Order.objects.get(pk=death.delivery.pk)
    new_shop = Bucket.objects.get(number=requeued.bucket).owner
    assert new_shop.pk in (death.boss.pk, death.survivor.pk)
    assert (requeued.status, requeued.worker_id, requeued.lease_token, requeued.stage) == ("queued", None, None, "")
    assert requeued.attempts == 1
    assert requeued.eligible_at == at(20)
    event = last_event(death.delivery)
    assert event.kind == "reassigned"
    assert event.worker_id == death.victim.pk
    assert event.data == {"to_shop": new_shop.name, "why": "died"}
    # The re-routed delivery is the new owner's to claim.
    assert [c.order.pk for c in queue.claim(new_shop.pk, 10, now=at(20))] == [death.delivery.pk]


def test_a_dead_workers_order_on_its_last_attempt_is_dead_lettered_with_the_reason(death: Death) -> None:
    failed = Order.objects.get(pk=death.last_try.pk)
    assert (failed.status, failed.last_error, failed.lease_token) == (
        "failed",
        "worker died on the last attempt",
        None,
    )
    assert (last_event(death.last_try).kind, last_event(death.last_try).message) == (
        "failed",
        "worker died on the last attempt",
    )


def test_a_dead_kitchens_takeaway_orders_wait_for_its_shops_next_process(death: Death) -> None:
    # Takeaway orders cannot move to another shop, and a kitchen's death does not close its shop.
    in_oven, waiting = Order.objects.get(pk=death.pinned_preparing.pk), Order.objects.get(pk=death.pinned_queued.pk)
    assert (in_oven.status, in_oven.pinned_shop, in_oven.lease_token, in_oven.attempts) == (
        "queued",
        "shop-victim",
        None,
        1,
    )
    assert (waiting.status, waiting.pinned_shop, waiting.attempts) == ("queued", "shop-victim", 0)
    assert not any(c.order.pk in (in_oven.pk, waiting.pk) for c in queue.claim(death.survivor.pk, 10, now=at(21)))

    restarted = make_worker("shop-victim", now=at(22))
    claimed = {c.order.pk for c in queue.claim(restarted.pk, 10, now=at(22))}
    assert {in_oven.pk, waiting.pk} <= claimed


def test_only_the_dead_workers_buckets_move_each_to_a_live_worker_and_on_record(death: Death) -> None:
    assert owned(death.victim) == set()
    assert owned(death.boss) | owned(death.survivor) == set(range(256))
    moves = BucketMove.objects.filter(reason="death")
    assert {m.bucket for m in moves} == death.victims_buckets
    assert len(moves) == len(death.victims_buckets)
    assert {m.from_worker_id for m in moves} == {death.victim.pk}
    assert {m.to_worker_id for m in moves} <= {death.boss.pk, death.survivor.pk}
    assert {m.created_at for m in moves} == {at(20)}


def test_a_live_workers_order_kept_by_its_heartbeats_is_untouched_by_anothers_death(death: Death) -> None:
    assert Order.objects.get(pk=death.elsewhere.pk).lease_token == death.survivors_token


def test_the_monitor_does_not_declare_dead_a_worker_exactly_at_the_timeout() -> None:
    boss = make_worker("shop-boss", now=T0)
    quiet = make_worker("shop-quiet", now=T0)
    membership.heartbeat(boss.pk, now=at(TIMEOUT))

    report = monitor.tick(boss.pk, now=at(TIMEOUT))

    assert report is not None
    assert report.dead == []
    assert fresh(quiet).status == "alive"


def test_the_last_worker_dying_leaves_its_orders_for_the_next_free_shop() -> None:
    only = make_worker("shop-1", now=T0)
    order = place_at(T0)
    queue.claim(only.pk, 1, now=T0)

    recovery = monitor.declare_dead(only.pk, now=at(20))

    assert recovery is not None
    assert recovery.requeued == [order.pk]
    assert Bucket.objects.filter(owner__isnull=False).exists() is False
    event = last_event(order)
    assert (event.kind, event.data) == ("reassigned", {"to_shop": "", "why": "died"})
    # A worker that joins later owns every bucket again and finds the order.
    newcomer = make_worker("shop-2", now=at(30))
    assert [c.order.pk for c in queue.claim(newcomer.pk, 10, now=at(30))] == [order.pk]


def test_declaring_a_worker_dead_twice_does_nothing_the_second_time() -> None:
    worker = make_worker("shop-1", now=T0)

    assert monitor.declare_dead(worker.pk, now=at(1)) == monitor.Recovery(dead=[worker.pk], moved_buckets=0)
    assert monitor.declare_dead(worker.pk, now=at(2)) is None
    assert fresh(worker).stopped_at == at(1)


# --- Expired leases -----------------------------------------------------------


def test_expired_leases_are_recovered_and_their_holder_is_fenced_off() -> None:
    worker = make_worker("shop-1", now=T0)
    order = place_at(T0, priority=1)
    last_try = place_at(T0, max_attempts=1)
    [claim, last_claim] = queue.claim(worker.pk, 2, now=T0)

    at_expiry = monitor.recover_expired_leases(now=at(TIMEOUT))
    after = monitor.recover_expired_leases(now=at(TIMEOUT + 1))

    assert at_expiry == monitor.Recovery()
    assert after == monitor.Recovery(requeued=[order.pk], failed=[last_try.pk])
    stored = Order.objects.get(pk=order.pk)
    assert (stored.status, stored.worker_id, stored.lease_token, stored.eligible_at) == (
        "queued",
        None,
        None,
        at(TIMEOUT + 1),
    )
    assert (last_event(order).kind, last_event(order).data) == ("retried", {"reason": "lease-expired"})
    dead_letter = Order.objects.get(pk=last_try.pk)
    assert (dead_letter.status, dead_letter.last_error) == ("failed", "lease expired on the last attempt")
    assert last_event(last_try).kind == "failed"
    # The slow kitchen finishes after all: too late.
    assert queue.complete(order.pk, claim.token, worker_id=worker.pk, now=at(TIMEOUT + 2)) is False
    assert queue.complete(last_try.pk, last_claim.token, worker_id=worker.pk, now=at(TIMEOUT + 2)) is False
    assert Order.objects.get(pk=order.pk).status == "queued"
    assert Order.objects.get(pk=last_try.pk).status == "failed"


def test_a_heartbeat_keeps_leases_from_expiring() -> None:
    worker = make_worker("shop-1", now=T0)
    order = place_at(T0)
    [claim] = queue.claim(worker.pk, 1, now=T0)

    assert membership.heartbeat(worker.pk, [claim.token], now=at(10)) == "alive"

    stored = Order.objects.get(pk=order.pk)
    assert stored.lease_expires_at == at(10 + TIMEOUT)
    assert fresh(worker).last_heartbeat == at(10)
    assert monitor.recover_expired_leases(now=at(TIMEOUT + 1)) == monitor.Recovery()
    assert queue.complete(order.pk, claim.token, worker_id=worker.pk, now=at(TIMEOUT + 1)) is True


def test_the_monitor_recovers_an_expired_lease_under_a_worker_that_still_looks_alive(settings: Any) -> None:
    boss = make_worker("shop-boss", now=T0)
    slow = make_worker("shop-slow", now=T0)
    order = place_at(T0, area=area_owned_by(slow))
    # Claimed under a short lease; the worker's heartbeat itself is still recent.
    settings.PIZZAQUEUE_HEARTBEAT_TIMEOUT = 5.0
    queue.claim(slow.pk, 1, now=T0)
    settings.PIZZAQUEUE_HEARTBEAT_TIMEOUT = TIMEOUT

    report = monitor.tick(boss.pk, now=at(6))

    assert report is not None
    assert (len(report.requeued), report.dead, report.failed, report.moved_buckets) == (1, [], [], 0)
    assert fresh(slow).status == "alive"
    assert Order.objects.get(pk=order.pk).status == "queued"


# --- Membership changes -------------------------------------------------------


def test_registering_a_name_whose_holder_went_silent_declares_the_old_one_dead() -> None:
    old = make_worker("shop-1", now=T0)
    order = place_at(T0)
    [claim] = queue.claim(old.pk, 1, now=T0)

    new = make_worker("shop-1", now=at(TIMEOUT + 1))

    assert (new.name, new.incarnation, new.status) == ("shop-1", 2, "alive")
    gone = fresh(old)
    assert (gone.status, gone.stop_reason, gone.stopped_at) == (
        "dead",
        "replaced by a new incarnation",
        at(TIMEOUT + 1),
    )
    assert owned(new) == set(range(256))
    assert Order.objects.get(pk=order.pk).status == "queued"
    # When the old incarnation left, no live shop was left to name; the new one then took every bucket.
    assert (last_event(order).kind, last_event(order).data) == ("reassigned", {"to_shop": "", "why": "died"})
    assert queue.complete(order.pk, claim.token, worker_id=old.pk, now=at(TIMEOUT + 2)) is False
    assert set(BucketMove.objects.filter(reason="join", to_worker=new).values_list("bucket", flat=True)) == set(
        range(256)
    )


@pytest.mark.parametrize("seconds", [1, TIMEOUT])
def test_a_second_process_of_a_live_shop_joins_beside_it_and_either_makes_its_takeaway_orders(seconds: float) -> None:
    # A rolling redeploy: the new process starts while the old one still runs.
    old = make_worker("shop-1", now=T0)
    first = place_at(T0, kind="takeaway", pinned_to="shop-1", priority=2)
    second = place_at(T0, kind="takeaway", pinned_to="shop-1")

    new = make_worker("shop-1", now=at(seconds))

    assert list(Worker.objects.order_by("incarnation").values_list("pk", "incarnation", "status")) == [
        (old.pk, 1, "alive"),
        (new.pk, 2, "alive"),
    ]
    assert [c.order.pk for c in queue.claim(new.pk, 1, now=at(seconds))] == [first.pk]
    assert [c.order.pk for c in queue.claim(old.pk, 1, now=at(seconds))] == [second.pk]


def test_a_clean_stop_keeps_its_shops_takeaways_and_requeues_what_is_still_held() -> None:
    leaving = make_worker("shop-a", now=T0)
    staying = make_worker("shop-b", now=T0)
    leaving_buckets = owned(leaving)
    area = area_owned_by(leaving)
    held = place_at(T0, area=area, priority=5)
    [claim] = queue.claim(leaving.pk, 1, now=T0)
    waiting = place_at(T0, area=area)
    pinned = place_at(T0, area=area, kind="takeaway", pinned_to="shop-a")

    recovery = membership.stop(leaving.pk, now=at(5))

    assert recovery == monitor.Recovery(requeued=[held.pk], failed=[], cancelled=[], moved_buckets=len(leaving_buckets))
    stopped = fresh(leaving)
    assert (stopped.status, stopped.stop_reason, stopped.stopped_at) == ("stopped", "stopped", at(5))
    assert owned(leaving) == set()
    assert owned(staying) == set(range(256))
    assert {m.bucket for m in BucketMove.objects.filter(reason="stop")} == leaving_buckets
    kept = Order.objects.get(pk=pinned.pk)
    assert (kept.status, kept.pinned_shop) == ("queued", "shop-a")  # for the shop's next process
    requeued = Order.objects.get(pk=held.pk)
    assert (requeued.status, requeued.lease_token, requeued.attempts) == ("queued", None, 1)
    event = last_event(held)
    assert (event.kind, event.data) == ("reassigned", {"to_shop": "shop-b", "why": "stopped"})
    assert Order.objects.get(pk=waiting.pk).status == "queued"
    # The stopped kitchen is fenced off; the remaining shop takes over the area.
    assert queue.complete(held.pk, claim.token, worker_id=leaving.pk, now=at(6)) is False
    assert [c.order.pk for c in queue.claim(staying.pk, 10, now=at(6))] == [held.pk, waiting.pk]
    assert membership.stop(leaving.pk, now=at(7)) is None


def test_a_heartbeat_from_a_worker_declared_dead_raises_worker_lost() -> None:
    worker = make_worker("shop-1", now=T0)
    monitor.declare_dead(worker.pk, now=at(20))

    with pytest.raises(membership.WorkerLostError, match=rf"^worker {worker.pk} is no longer live$"):
        membership.heartbeat(worker.pk, now=at(21))

    assert fresh(worker).last_heartbeat == T0


def test_a_heartbeat_from_a_stopped_worker_raises_worker_lost() -> None:
    worker = make_worker("shop-1", now=T0)
    membership.stop(worker.pk, now=at(1))

    with pytest.raises(membership.WorkerLostError, match=rf"^worker {worker.pk} is no longer live$"):
        membership.heartbeat(worker.pk, now=at(2))


def test_a_heartbeat_tells_a_draining_worker_to_drain() -> None:
    worker = make_worker("shop-1", now=T0)

    assert membership.drain(worker.pk) is True
    assert membership.drain(worker.pk) is False
    assert membership.heartbeat(worker.pk, now=at(1)) == "draining"
    assert fresh(worker).last_heartbeat == at(1)


def test_a_heartbeat_extends_only_the_leases_of_its_own_orders() -> None:
    first = make_worker("shop-1", now=T0)
    second = make_worker("shop-2", now=T0)
    mine = place_at(T0, area=area_owned_by(first))
    theirs = place_at(T0, area=area_owned_by(second))
    [claim] = queue.claim(first.pk, 1, now=T0)
    [their_claim] = queue.claim(second.pk, 1, now=T0)

    membership.heartbeat(first.pk, [claim.token, their_claim.token], now=at(7))

    assert Order.objects.get(pk=mine.pk).lease_expires_at == at(7 + TIMEOUT)
    assert Order.objects.get(pk=theirs.pk).lease_expires_at == at(TIMEOUT)


def test_a_heartbeat_renews_only_the_leases_the_worker_knows_it_holds() -> None:
    worker = make_worker("shop-1", now=T0)
    known, lost = place_at(T0), place_at(T0)
    [claim] = queue.claim(worker.pk, 1, now=T0)
    queue.claim(worker.pk, 1, now=T0)  # committed, but its answer never reached the worker

    membership.heartbeat(worker.pk, [claim.token], now=at(7))

    assert Order.objects.get(pk=claim.order.pk).lease_expires_at == at(7 + TIMEOUT)
    unanswered = Order.objects.exclude(pk=claim.order.pk).get(pk__in=[known.pk, lost.pk])
    assert unanswered.lease_expires_at == at(TIMEOUT)
    # Unrenewed, it comes back when its lease runs out, instead of never.
    assert monitor.recover_expired_leases(now=at(TIMEOUT + 1)).requeued == [unanswered.pk]


def test_a_worker_hands_back_what_it_holds_under_a_token_it_does_not_know() -> None:
    worker = make_worker("shop-1", now=T0)
    place_at(T0), place_at(T0), place_at(T0)
    [claim] = queue.claim(worker.pk, 1, now=T0)
    unanswered = {c.order.pk for c in queue.claim(worker.pk, 2, now=T0)}

    assert set(queue.hand_back_unanswered(worker.pk, [claim.token], now=at(1))) == unanswered

    for order in Order.objects.filter(pk__in=unanswered):
        assert (order.status, order.attempts, order.lease_token, order.worker_id) == ("queued", 0, None, None)
    assert Order.objects.get(pk=claim.order.pk).status == "preparing"
    released = OrderEvent.objects.filter(kind=OrderEvent.Kind.RELEASED)
    assert set(released.values_list("order_id", flat=True)) == unanswered
    assert queue.hand_back_unanswered(worker.pk, [claim.token], now=at(2)) == []


def test_the_monitor_gives_new_buckets_an_owner(settings: Any) -> None:
    first = make_worker("shop-1", now=T0)
    second = make_worker("shop-2", now=T0)
    settings.PIZZAQUEUE_BUCKETS = 300

    report = monitor.tick(first.pk, now=at(1))

    assert report == monitor.Recovery(moved_buckets=44)
    assert Bucket.objects.count() == 300
    assert Bucket.objects.orphaned().exists() is False
    assert BucketMove.objects.filter(reason="rebalance", from_worker__isnull=True).count() == 44
    assert len(owned(first)) + len(owned(second)) == 300
    assert abs(len(owned(first)) - len(owned(second))) <= 1


def test_a_lost_lease_token_is_never_reused() -> None:
    worker = make_worker("shop-1", now=T0)
    order = place_at(T0)
    [first] = queue.claim(worker.pk, 1, now=T0)
    monitor.recover_expired_leases(now=at(TIMEOUT + 1))

    [second] = queue.claim(worker.pk, 1, now=at(TIMEOUT + 1))

    assert second.order.pk == order.pk
    assert isinstance(second.token, uuid.UUID)
    assert second.token != first.token
    assert queue.report_stage(order.pk, first.token, "oven", worker_id=worker.pk, now=at(TIMEOUT + 2)) is False
    assert queue.report_stage(order.pk, second.token, "oven", worker_id=worker.pk, now=at(TIMEOUT + 2)) is True


# --- A verdict checked where it is written (the monitor may have been paused) -----


def test_a_monitor_does_not_declare_dead_a_worker_that_heartbeat_after_the_monitor_looked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    boss = make_worker("shop-boss", now=T0)
    recovered = make_worker("shop-recovered", now=T0)
    takeaway = place_at(T0, kind="takeaway", pinned_to="shop-recovered")
    membership.heartbeat(boss.pk, now=at(20))
    verdict = monitor.declare_dead

    def after_a_pause(worker_id: int, *args: Any, **kw: Any) -> monitor.Recovery | None:
        # The monitor read the stale list, then stood still while the worker came back.
        membership.heartbeat(recovered.pk, now=at(20))
        return verdict(worker_id, *args, **kw)

    monkeypatch.setattr(monitor, "declare_dead", after_a_pause)
    report = monitor.tick(boss.pk, now=at(20))

    assert report == monitor.Recovery()
    assert fresh(recovered).status == "alive"
    assert fresh(takeaway).status == "queued"  # not cancelled as "shop unavailable"
    assert owned(recovered)


def test_a_monitor_that_lost_the_election_after_it_looked_declares_nobody_dead(monkeypatch: pytest.MonkeyPatch) -> None:
    old_boss = make_worker("shop-old-boss", now=T0)
    silent = make_worker("shop-silent", now=T0)
    new_boss = make_worker("shop-new-boss", now=T0)
    takeaway = place_at(T0, kind="takeaway", pinned_to="shop-silent")
    assert monitor.acquire(old_boss.pk, now=T0)
    verdict = monitor.declare_dead

    def after_a_pause(worker_id: int, *args: Any, **kw: Any) -> monitor.Recovery | None:
        # Paused past its lease (renewed at 16 s, until 31 s): the election passed on meanwhile.
        assert monitor.acquire(new_boss.pk, now=at(40))
        return verdict(worker_id, *args, **kw)

    membership.heartbeat(old_boss.pk, now=at(16))
    membership.heartbeat(new_boss.pk, now=at(16))
    monkeypatch.setattr(monitor, "declare_dead", after_a_pause)
    report = monitor.tick(old_boss.pk, now=at(16))

    assert report is not None and report.dead == []
    assert fresh(silent).status == "alive"
    assert fresh(takeaway).status == "queued"
    # The monitor that holds the election now makes the call.
    monkeypatch.setattr(monitor, "declare_dead", verdict)
    membership.heartbeat(old_boss.pk, now=at(40))
    membership.heartbeat(new_boss.pk, now=at(40))
    assert monitor.tick(new_boss.pk, now=at(40)).dead == [silent.pk]


# --- Draining ------------------------------------------------------------------------


def test_a_draining_worker_hands_its_buckets_over_at_once_and_a_joiner_gives_it_none() -> None:
    draining = make_worker("shop-draining", now=T0)
    staying = make_worker("shop-staying", now=T0)
    area = area_owned_by(draining)
    place_at(T0, area=area), place_at(T0, area=area)
    [claim] = queue.claim(draining.pk, 1, now=T0)
    held, waiting = claim.order, Order.objects.get(status="queued")

    assert membership.drain(draining.pk, now=at(1)) is True

    assert owned(draining) == set()
    assert len(owned(staying)) == 256
    assert set(BucketMove.objects.filter(reason="drain").values_list("from_worker_id", flat=True)) == {draining.pk}
    # The waiting order is the staying worker's now; the one in hand stays with its baker.
    assert [c.order.pk for c in queue.claim(staying.pk, 10, now=at(2))] == [waiting.pk]
    assert queue.complete(held.pk, claim.token, worker_id=draining.pk, now=at(3)) is True
    make_worker("shop-joining", now=at(4))
    assert owned(draining) == set()


def test_no_takeaway_order_is_taken_for_a_draining_kitchen() -> None:
    draining = make_worker("shop-draining", now=T0)
    membership.drain(draining.pk, now=at(1))

    with pytest.raises(ValidationError) as refused:
        place_at(at(2), kind="takeaway", pinned_to="shop-draining")

    assert refused.value.message_dict == {"shop": ["No open shop named 'shop-draining'."]}
    assert not Order.objects.exists()


def test_the_monitor_runs_the_applications_duty_each_round_at_its_time(settings: Any) -> None:
    settings.PIZZAQUEUE_MONITOR_DUTY = "tests.engine.test_monitor.record_duty"
    DUTY_CALLS.clear()
    boss = make_worker("shop-boss", now=at(0))

    monitor.tick(boss.pk, now=at(1))

    assert [at(1)] == DUTY_CALLS


def test_a_failing_application_duty_does_not_stop_the_round(settings: Any) -> None:
    settings.PIZZAQUEUE_MONITOR_DUTY = "tests.engine.test_monitor.failing_duty"
    boss = make_worker("shop-boss", now=at(0))
    victim = make_worker("shop-victim", now=at(0))
    membership.heartbeat(boss.pk, now=at(20))

    report = monitor.tick(boss.pk, now=at(20))

    assert report is not None and report.dead == [victim.pk]


DUTY_CALLS: list[datetime] = []


def record_duty(now: datetime) -> None:
    DUTY_CALLS.append(now)


def failing_duty(now: datetime) -> None:
    raise RuntimeError("the application's duty broke")
