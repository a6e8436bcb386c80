"""A bucket-count change re-routes the backlog in bounded batches, each its own
transaction, so the ring's lock is never held for the whole backlog; the
monitor's rounds finish the job and no order is left stranded."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.base import make_worker, place_at
from workers import monitor, rerouting, ring
from workers.models import Order

pytestmark = pytest.mark.django_db

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def small_batches(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    settings.PIZZAQUEUE_HEARTBEAT_TIMEOUT = 15.0
    settings.PIZZAQUEUE_STEAL_AFTER = 0.0
    settings.PIZZAQUEUE_BUCKETS = 256
    monkeypatch.setattr(rerouting, "BATCH", 10)
    monkeypatch.setattr(rerouting, "_walk", None)


def areas(count: int, buckets: int, how_many: int, beyond: bool) -> list[str]:
    found = (f"area-{n}" for n in itertools.count() if (ring.bucket_for(f"area-{n}", buckets) >= count) == beyond)
    return list(itertools.islice(found, how_many))


def misrouted(count: int) -> int:
    return sum(1 for o in Order.objects.all() if o.bucket != ring.bucket_for(o.area, count))


def test_a_shrink_moves_one_batch_with_the_resize_and_the_rest_in_the_monitors_rounds(
    menu: None, settings: Any
) -> None:
    first = make_worker("shop-1", now=T0)
    for area in areas(128, 256, 45, beyond=True):
        place_at(T0, area=area)

    settings.PIZZAQUEUE_BUCKETS = 128
    make_worker("shop-2", now=T0 + timedelta(seconds=1))  # resizes the table under the ring's lock

    left = misrouted(128)
    # The resize moved its first batch and the stranded batch of its rebalance: no more.
    assert 45 - 2 * rerouting.BATCH <= left < 45
    rounds = 0
    while misrouted(128) and rounds < 20:
        rounds += 1
        monitor.tick(first.pk, now=T0 + timedelta(seconds=1 + rounds))
    assert misrouted(128) == 0
    assert not Order.objects.filter(bucket__gte=128).exists()


def test_a_growth_walks_the_backlog_in_batches_until_every_area_follows_its_new_bucket(
    menu: None, settings: Any
) -> None:
    first = make_worker("shop-1", now=T0)
    for area in areas(256, 512, 35, beyond=True):
        place_at(T0, area=area)

    settings.PIZZAQUEUE_BUCKETS = 512
    make_worker("shop-2", now=T0 + timedelta(seconds=1))
    assert misrouted(512) >= 35 - rerouting.BATCH

    monitor.tick(first.pk, now=T0 + timedelta(seconds=2))  # this process's walk goes on, batch by batch
    assert misrouted(512) == 0
