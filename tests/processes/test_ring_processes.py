"""Bucket ownership by consistent hashing, with real worker processes (SPEC §5)."""

from __future__ import annotations

import math
import signal
from collections import Counter

import pytest
from django.conf import settings

from orders.intake import clean_order_request
from tests.base import wait_until
from tests.conftest import WorkerProcesses
from tests.factory import make_order, order_data
from workers import queue, ring
from workers.models import Bucket, BucketMove, Order, OrderEvent, Worker

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.processes]


def ownership() -> dict[int, tuple[int | None, int]]:
    return {
        number: (owner, epoch) for number, owner, epoch in Bucket.objects.values_list("number", "owner_id", "epoch")
    }


def fully_owned_by_live(count: int) -> bool:
    live = set(Worker.objects.filter(status=Worker.Status.ALIVE).values_list("pk", flat=True))
    owners = Bucket.objects.values_list("owner_id", flat=True)
    return len(live) == count and len(owners) == settings.PIZZAQUEUE_BUCKETS and set(owners) == live


def assert_bounded(table: dict[int, tuple[int | None, int]]) -> None:
    loads = Counter(owner for owner, _epoch in table.values())
    bound = ring.capacity(len(table), len(loads), settings.PIZZAQUEUE_RING_EPSILON)
    assert max(loads.values()) <= bound, loads


def test_a_death_moves_only_the_dead_workers_buckets_and_a_join_only_feeds_the_joiner(
    worker_processes: WorkerProcesses,
) -> None:
    procs = {
        f"shop-{n}": worker_processes.start("--name", f"shop-{n}", "--handler", "orders.handlers.noop")
        for n in range(5)
    }
    wait_until(lambda: fully_owned_by_live(5), what="five workers owning every bucket")
    before = ownership()
    assert_bounded(before)
    victim = Worker.objects.get(name="shop-2", status=Worker.Status.ALIVE)

    procs["shop-2"].send_signal(signal.SIGKILL)

    # While the death goes unnoticed, its buckets still have an owner (never NULL).
    def dead_and_moved() -> bool:
        assert not Bucket.objects.filter(owner__isnull=True).exists()
        return fully_owned_by_live(4)

    wait_until(dead_and_moved, timeout=20, what="the dead worker's buckets moved")
    after_death = ownership()
    moved = {b for b in before if after_death[b] != before[b]}
    assert moved == {b for b, (owner, _) in before.items() if owner == victim.pk}
    for number in moved:
        assert after_death[number][1] == before[number][1] + 1  # epoch bumped
    assert_bounded(after_death)
    assert set(BucketMove.objects.filter(reason=BucketMove.Reason.DEATH).values_list("bucket", flat=True)) == moved

    worker_processes.start("--name", "shop-new", "--handler", "orders.handlers.noop")
    wait_until(lambda: fully_owned_by_live(5), what="the joiner owning buckets")
    after_join = ownership()
    joiner = Worker.objects.get(name="shop-new").pk
    moved_on_join = {b for b in after_death if after_join[b] != after_death[b]}
    assert moved_on_join
    assert {after_join[b][0] for b in moved_on_join} == {joiner}
    ideal = settings.PIZZAQUEUE_BUCKETS / 5
    assert len(moved_on_join) <= math.ceil(1.1 * ideal)
    assert_bounded(after_join)


def test_a_pinned_order_stays_with_its_shop_and_is_cancelled_when_the_shop_stays_down(
    worker_processes: WorkerProcesses,
) -> None:
    # A shop down for a second counts as closed here (by default it is five minutes).
    closes = {"PIZZAQUEUE_SHOP_CLOSED_AFTER": "1"}
    shop = worker_processes.start(
        "--name", "corner-shop", "--handler", "tests.handlers.slow", "--concurrency", "1", **closes
    )
    wait_until(lambda: fully_owned_by_live(1), what="the corner shop")
    baking = make_order(kind="takeaway", shop="corner-shop", note="60")
    wait_until(lambda: Order.objects.filter(pk=baking.pk, stage="oven").exists(), what="the shop baking a takeaway")
    worker_processes.start("--name", "big-kitchen", "--handler", "orders.handlers.noop", **closes)
    wait_until(lambda: fully_owned_by_live(2), what="the second kitchen")

    def areas_owned_by(name: str) -> list[str]:
        buckets = set(Bucket.objects.filter(owner__name=name).values_list("number", flat=True))
        return [
            f"area-{n}" for n in range(400) if ring.bucket_for(f"area-{n}", settings.PIZZAQUEUE_BUCKETS) in buckets
        ][:5]

    # Takeaways routed to the other kitchen's buckets: only their pin keeps them at the corner shop.
    takeaways = [baking] + [
        make_order(kind="takeaway", shop="corner-shop", area=a) for a in areas_owned_by("big-kitchen")
    ]
    # Delivery orders routed to buckets the corner shop owns: they must move when it dies.
    areas = areas_owned_by("corner-shop")
    queue.place_many([clean_order_request(order_data(area=a, note="60")) for a in areas])

    shop.send_signal(signal.SIGKILL)
    wait_until(
        lambda: Order.objects.filter(area__in=areas, status=Order.Status.DONE).count() == len(areas),
        timeout=20,
        what="the dead shop's delivery orders done elsewhere",
    )

    wait_until(
        lambda: (
            Order.objects.filter(pk__in=[o.pk for o in takeaways], status=Order.Status.CANCELLED).count()
            == len(takeaways)
        ),
        what="the closed shop's takeaway orders cancelled",
    )
    for order in takeaways:
        order.refresh_from_db()
        assert order.status == Order.Status.CANCELLED
        assert order.cancel_reason == "shop unavailable"
        (cancelled,) = OrderEvent.objects.filter(order=order, kind=OrderEvent.Kind.CANCELLED)
        assert cancelled.data["reason"] == "shop unavailable"
    # No other shop ever claimed a pinned order.
    claimers = set(
        OrderEvent.objects.filter(order__in=takeaways, kind=OrderEvent.Kind.CLAIMED).values_list(
            "worker__name", flat=True
        )
    )
    assert claimers == {"corner-shop"}
    assert set(Order.objects.filter(area__in=areas).values_list("worker__name", flat=True)) == {"big-kitchen"}
