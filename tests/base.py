"""The cast every test shares, as healthchecks' `hc/test.py` gives its tests:
the clock, the places orders go, and the people who place and work them.

The engine's tests build on this module too, so its top imports nothing of the
shop: the engine places orders as `workers.queue.OrderRequest`s, and the shop's
roles are looked up inside the builders of the people who hold them. Orders
through the shop's intake (a menu, form or API data) are `tests.factory`'s.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from django.conf import settings
from django.contrib.auth.models import Group, User
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from workers import membership, queue, ring
from workers.models import Bucket, Order, Worker

ROOT = Path(__file__).resolve().parent.parent

Row = TypeVar("Row", bound=Any)


# --- The clock --------------------------------------------------------------------


# A fixed moment for tests that play the clock (every `now=` they pass).
T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    """`seconds` after T0."""
    return T0 + timedelta(seconds=seconds)


def fresh(obj: Row) -> Row:
    """The row again, as the database has it now."""
    return type(obj).objects.get(pk=obj.pk)


def wait_until(
    predicate: Callable[[], object], timeout: float = 30.0, interval: float = 0.05, what: str = ""
) -> object:
    """Poll the database (or anything) with a deadline instead of sleeping blindly."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


# --- Places: kitchens and the engine's orders ------------------------------------


def order_request(**kw: Any) -> queue.OrderRequest:
    """What the engine is asked to place, as `workers.queue.OrderRequest` takes it
    (items, kind, area, pinned_to, priority, not_before, max_attempts…): one medium
    margherita unless `items` says otherwise. Nothing checks it against a menu."""
    kw.setdefault("items", [{"pizza": "margherita", "size": "medium", "quantity": 1}])
    return queue.OrderRequest(**kw)


def make_order(
    idempotency_key: str | None = None,
    placed_by: Any = None,
    session: str = "",
    now: datetime | None = None,
    **kw: Any,
) -> Order:
    """An order placed on the engine (`queue.place`); by nobody unless `placed_by`
    (a user) or `session` says; `kw` are the `OrderRequest`'s fields."""
    owner = queue.Owner(user_id=placed_by.pk if placed_by is not None else None, session=session)
    order, _created = queue.place(order_request(**kw), idempotency_key=idempotency_key, now=now, owner=owner)
    return order


def place_at(now: datetime, **kw: Any) -> Order:
    """A new order placed on the engine at a pinned time (tests that play the clock)."""
    order, created = queue.place(order_request(**kw), now=now)
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


# --- People -----------------------------------------------------------------------


def in_role(user: Any, role: str) -> Any:
    """The user, in the role's group (`orders.roles`)."""
    user.groups.add(Group.objects.get(name=role))
    return user


def logged_in(user: User, client: Client | None = None) -> Client:
    """A browser (Django's test client) logged in as the user."""
    client = client or Client()
    client.force_login(user)
    return client


def superuser(username: str = "operator") -> User:
    """Staff with every permission: the account `manage.py createsuperuser` makes."""
    return User.objects.create_superuser(username)


def operator(username: str = "olga") -> User:
    """Staff in the operators' role: every kitchen's display, the board, the admin's actions."""
    from orders import roles  # the shop's roles: the engine's tests never call this

    return in_role(User.objects.create_user(username, is_staff=True), roles.OPERATORS)


def integrator(username: str = "integrator") -> APIClient:
    """An API client with an integrator's token; `client.user` is whose orders it makes."""
    from orders import roles  # the shop's roles: the engine's tests never call this

    user = in_role(User.objects.create_user(username), roles.INTEGRATORS)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    client.user = user  # type: ignore[attr-defined]
    return client


def kitchen_staff(shop: str, username: str = "cook") -> User:
    """A cook in the kitchen staff role, working `shop`'s display."""
    from orders import roles  # the shop's roles and staff: the engine's tests never call this
    from orders.models import KitchenStaff

    user = in_role(User.objects.create_user(username), roles.KITCHEN_STAFF)
    KitchenStaff.objects.create(user=user, shop=shop)
    return user


# --- The demo ---------------------------------------------------------------------


def stop_the_demo(demo: subprocess.Popen[bytes]) -> None:
    """Whatever happened, leave none of its processes behind for the next test: the demo
    stops its children on SIGTERM; a kitchen still up after that is killed by its pid."""
    if demo.poll() is None:
        demo.send_signal(signal.SIGTERM)
        try:
            demo.wait(timeout=30)
        except subprocess.TimeoutExpired:
            demo.kill()
            demo.wait()
    for pid in Worker.objects.live().values_list("pid", flat=True):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
