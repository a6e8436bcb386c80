"""Changing PIZZAQUEUE_BUCKETS: the table follows the setting, every unfinished
order is re-routed to a bucket that exists (a small backlog in the resizing
transaction itself; tests/test_bucket_batches.py for a large one), and once
the table matches the monitor has nothing left to do."""

from __future__ import annotations

import itertools
from typing import Any
from unittest import mock

import pytest

from tests.base import T0, at, make_worker, place_at
from workers import monitor, queue, ring
from workers.models import Bucket, Order

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def bucket_settings(settings: Any) -> None:
    settings.PIZZAQUEUE_HEARTBEAT_TIMEOUT = 15.0
    settings.PIZZAQUEUE_STEAL_AFTER = 0.0
    settings.PIZZAQUEUE_BUCKETS = 256


def areas_beyond(count: int, buckets: int, how_many: int) -> list[str]:
    """Areas that hash, among `buckets` buckets, to one numbered `count` or above."""
    beyond = (f"area-{n}" for n in itertools.count() if ring.bucket_for(f"area-{n}", buckets) >= count)
    return list(itertools.islice(beyond, how_many))


def test_after_the_bucket_count_shrinks_no_order_is_stranded_beyond_it(settings: Any) -> None:
    first = make_worker("shop-1", now=T0)
    waiting = [place_at(T0, area=area) for area in areas_beyond(128, 256, 5)]
    (held,) = queue.claim(first.pk, 1, now=T0)

    settings.PIZZAQUEUE_BUCKETS = 128
    second = make_worker("shop-2", now=at(1))
    monitor.declare_dead(first.pk, now=at(2))

    assert sorted(Bucket.objects.values_list("number", flat=True)) == list(range(128))
    for order in Order.objects.all():
        assert order.bucket == ring.bucket_for(order.area, 128)
    claimed = {c.order.pk for c in queue.claim(second.pk, 10, now=at(3))}
    assert claimed == {order.pk for order in waiting}, "the order re-queued from the dead kitchen included"
    assert held.order.pk in claimed


def test_once_the_table_matches_the_setting_the_monitor_does_not_rebalance_again(settings: Any) -> None:
    first = make_worker("shop-1", now=T0)
    place_at(T0, area=areas_beyond(128, 256, 1)[0])
    settings.PIZZAQUEUE_BUCKETS = 128
    make_worker("shop-2", now=at(1))
    monitor.declare_dead(first.pk, now=at(2))
    survivor = Order.objects.get().bucket

    with mock.patch.object(monitor, "rebalance", wraps=monitor.rebalance) as rebalancing:
        reports = [monitor.tick(Bucket.objects.get(number=0).owner_id, now=at(3 + n)) for n in range(3)]

    assert rebalancing.call_count == 0
    assert not any(reports)
    assert Order.objects.get().bucket == survivor


def test_an_order_placed_with_the_old_count_is_re_routed_by_the_next_tick(settings: Any) -> None:
    worker = make_worker("shop-1", now=T0)
    settings.PIZZAQUEUE_BUCKETS = 128
    make_worker("shop-2", now=at(1))
    # A web process not yet restarted still hashes into 256 buckets.
    settings.PIZZAQUEUE_BUCKETS = 256
    stray = place_at(at(2), area=areas_beyond(128, 256, 1)[0])
    settings.PIZZAQUEUE_BUCKETS = 128

    monitor.tick(worker.pk, now=at(3))

    assert Order.objects.get(pk=stray.pk).bucket == ring.bucket_for(stray.area, 128)
    assert Bucket.objects.count() == 128


def test_after_the_bucket_count_grows_an_areas_waiting_orders_follow_its_new_bucket(settings: Any) -> None:
    first = make_worker("shop-1", now=T0)
    area = next(f"area-{n}" for n in itertools.count() if ring.bucket_for(f"area-{n}", 512) >= 256)
    waiting = place_at(T0, area=area)
    settings.PIZZAQUEUE_BUCKETS = 512

    monitor.tick(first.pk, now=at(1))
    newer = place_at(at(2), area=area)

    assert Bucket.objects.count() == 512
    assert Order.objects.get(pk=waiting.pk).bucket == newer.bucket == ring.bucket_for(area, 512)
