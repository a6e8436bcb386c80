"""Small builders for test data, with explicit defaults."""

from __future__ import annotations

import itertools
import os
from datetime import datetime
from typing import Any

from django.conf import settings

from orders.intake import clean_order_request
from workers import membership, queue, ring
from workers.models import Bucket, Order, Worker


def order_data(**kw: Any) -> dict[str, Any]:
    kw.setdefault("items", [{"pizza": "margherita", "size": "medium", "quantity": 1}])
    return kw


def make_order(idempotency_key: str | None = None, placed_by: Any = None, session: str = "", **kw: Any) -> Order:
    """An order placed through the queue; by nobody (staff-only) unless `placed_by` (a user) or `session` says."""
    owner = queue.Owner(user_id=placed_by.pk if placed_by is not None else None, session=session)
    order, _created = queue.place(clean_order_request(order_data(**kw)), idempotency_key=idempotency_key, owner=owner)
    return order


def place_at(now: datetime, **kw: Any) -> Order:
    """An order placed at a pinned time (tests that play the clock)."""
    order, created = queue.place(clean_order_request(order_data(**kw), now=now), now=now)
    assert created is True
    return order


def make_worker(name: str = "shop-1", **kw: Any) -> Worker:
    """A registered worker (it joins the ring and owns buckets)."""
    return membership.register(
        name,
        kw.pop("host", "test-host"),
        kw.pop("pid", os.getpid()),
        kw.pop("concurrency", 1),
        now=kw.pop("now", None),
    )


def area_owned_by(worker: Worker) -> str:
    """A delivery area whose bucket the worker owns right now."""
    owned = set(Bucket.objects.filter(owner=worker).values_list("number", flat=True))
    return next(
        area
        for area in (f"area-{n}" for n in itertools.count())
        if ring.bucket_for(area, settings.PIZZAQUEUE_BUCKETS) in owned
    )
