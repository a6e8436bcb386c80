"""Work stealing (SPEC §5): off by default; when on, old unpinned orders go to any idle kitchen."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from tests.base import make_order, make_worker
from workers import queue
from workers.models import Bucket, Order

pytestmark = pytest.mark.django_db


def order_in_bucket_of(owner_id: int, **kw: object) -> Order:
    bucket = Bucket.objects.filter(owner_id=owner_id).values_list("number", flat=True).first()
    order = make_order(**kw)
    Order.objects.filter(pk=order.pk).update(bucket=bucket)
    return order


def test_without_stealing_a_worker_never_claims_from_anothers_bucket(settings) -> None:
    settings.PIZZAQUEUE_STEAL_AFTER = 0
    owner, idle = make_worker("owner"), make_worker("idle")
    order = order_in_bucket_of(owner.pk)
    later = timezone.now() + timedelta(hours=1)

    assert queue.claim(idle.pk, 10, now=later) == []
    assert [c.order.pk for c in queue.claim(owner.pk, 10, now=later)] == [order.pk]


def test_with_stealing_an_idle_worker_takes_an_order_that_waited_too_long(settings) -> None:
    settings.PIZZAQUEUE_STEAL_AFTER = 30
    owner, idle = make_worker("owner"), make_worker("idle")
    order = order_in_bucket_of(owner.pk)
    now = timezone.now()

    assert queue.claim(idle.pk, 10, now=now + timedelta(seconds=10)) == []
    (claim,) = queue.claim(idle.pk, 10, now=now + timedelta(seconds=31))
    assert claim.order.pk == order.pk
    assert Order.objects.get(pk=order.pk).worker_id == idle.pk


def test_stealing_never_takes_a_pinned_takeaway_order(settings) -> None:
    settings.PIZZAQUEUE_STEAL_AFTER = 30
    shop, idle = make_worker("corner-shop"), make_worker("idle")
    make_order(kind="takeaway", pinned_to="corner-shop")

    assert queue.claim(idle.pk, 10, now=timezone.now() + timedelta(hours=1)) == []
    assert len(queue.claim(shop.pk, 10, now=timezone.now() + timedelta(hours=1))) == 1
