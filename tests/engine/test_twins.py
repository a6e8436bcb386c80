"""Each operation leaves the same rows whichever path runs it.

Place, claim and complete have a portable path (the ORM, and the `claimable`
statement) and, on PostgreSQL, a single statement of their own. Each test
runs one scenario through every path this database has, from the same
starting rows (a savepoint rolled back between paths), and compares the
orders and their events column by column; on every database it also holds the
result to what the operation promises. Fail, release and purge have one path
on both engines, held to their promises here too.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import connection, transaction

from tests.base import T0, at
from workers import membership, queue, recovery, ring
from workers.models import Bucket, Order, OrderEvent, Worker
from workers.queue import intake, leases

pytestmark = pytest.mark.django_db

ON_POSTGRESQL = connection.vendor == "postgresql"

Snapshot = dict[str, Any]


@pytest.fixture(autouse=True)
def _pinned(settings: Any) -> None:
    settings.PIZZAQUEUE_HEARTBEAT_TIMEOUT = 15.0
    settings.PIZZAQUEUE_PRIORITY_AGING = 1.0
    settings.PIZZAQUEUE_RETRY_BACKOFF = 2.0
    settings.PIZZAQUEUE_MAX_ATTEMPTS = 3
    settings.PIZZAQUEUE_STEAL_AFTER = 0.0
    settings.PIZZAQUEUE_BUCKETS = 256


def worker(name: str, now: datetime = T0) -> Worker:
    return membership.register(name, "test-host", 1, 4, now=now)


def area_of(owner: Worker) -> str:
    """A delivery area whose bucket `owner` holds now."""
    owned = set(Bucket.objects.filter(owner=owner).values_list("number", flat=True))
    return next(a for a in (f"area-{n}" for n in range(10_000)) if ring.bucket_for(a, 256) in owned)


def request(label: str, **kw: Any) -> queue.OrderRequest:
    """An order labelled by its note, so snapshots can name it."""
    kw.setdefault("items", [{"pizza": "margherita", "size": "medium", "quantity": 1}])
    return queue.OrderRequest(note=label, **kw)


def place(label: str, now: datetime, **kw: Any) -> Order:
    order, _created = queue.place(request(label, **kw), now=now)
    return order


def snapshot() -> Snapshot:
    """Every order and event, with ids, tokens and workers replaced by what stays the
    same between two runs of one scenario (labels, "token", names)."""
    names = dict(Worker.objects.values_list("pk", "name"))
    labels = dict(Order.objects.values_list("pk", "note"))
    orders = {}
    for values in Order.objects.values():
        for column in ("worker_id", "avoid_worker_id"):
            values[column] = names.get(values[column])
        values["lease_token"] = "token" if values["lease_token"] else None
        orders[labels[values.pop("id")]] = values
    events = [
        {**values, "order_id": labels[values["order_id"]], "worker_id": names.get(values["worker_id"])}
        for values in OrderEvent.objects.order_by("order__note", "id").values(
            "order_id", "kind", "created_at", "worker_id", "stage", "message", "data", "actor_id"
        )
    ]
    return {"orders": orders, "events": events}


def each_path(paths: dict[str, Callable[[], object]]) -> Iterator[tuple[str, object, Snapshot]]:
    """Run each path this database has from the same rows: (path, its result, the rows after it)."""
    for name, path in paths.items():
        if name == "one statement" and not ON_POSTGRESQL:
            continue
        savepoint = transaction.savepoint()
        try:
            result = path()
            yield name, result, snapshot()
        finally:
            transaction.savepoint_rollback(savepoint)


def agreed(runs: list[tuple[str, object, Snapshot]]) -> tuple[object, Snapshot]:
    """The one result and snapshot every path produced; fails naming the first column that differs."""
    (_, first_result, first), *others = runs
    for name, result, rows in others:
        assert result == first_result, f"{name} returned {result!r}, the ORM path {first_result!r}"
        for label, columns in first["orders"].items():
            for column, value in columns.items():
                got = rows["orders"][label][column]
                assert got == value, f"order {label!r}: {column} is {got!r} by {name}, {value!r} by the ORM"
        assert rows == first
    assert len(runs) == (2 if ON_POSTGRESQL else 1)
    return first_result, first


def test_placing_writes_the_same_order_and_event_by_every_path() -> None:
    owner = get_user_model().objects.create_user("integrator")
    worker("shop-1")
    order = request("a", area="north", priority=3, not_before=at(600), max_attempts=5)
    fingerprint = order.fingerprint()
    who = queue.Owner(user_id=owner.pk, session="browser-key")

    def placed(path: Callable[..., Order | None]) -> Callable[[], object]:
        return lambda: path(order, "key-1", fingerprint, at(1), who) is not None

    _, rows = agreed(
        list(
            each_path(
                {"ORM": placed(intake.place_in_transaction), "one statement": placed(intake.place_in_one_statement)}
            )
        )
    )

    a = rows["orders"]["a"]
    assert (a["status"], a["kind"], a["area"], a["priority"], a["attempts"], a["max_attempts"]) == (
        "queued",
        "delivery",
        "north",
        3,
        0,
        5,
    )
    assert (a["created_at"], a["eligible_at"], a["rank"]) == (at(1), at(600), queue.rank_for(at(600), 3))
    assert (a["idempotency_key"], a["request_hash"], a["placed_by_id"], a["placed_by_session"]) == (
        "key-1",
        fingerprint,
        owner.pk,
        "browser-key",
    )
    assert (a["lease_token"], a["worker_id"], a["stage"], a["stage_started_at"], a["claimed_at"]) == (
        None,
        None,
        "",
        None,
        None,
    )
    assert [(e["kind"], e["created_at"], e["message"], e["data"]) for e in rows["events"]] == [
        ("placed", at(1), "", {})
    ]


def test_claiming_takes_the_same_orders_by_the_same_rule_by_every_path(settings: Any) -> None:
    settings.PIZZAQUEUE_STEAL_AFTER = 120.0
    mine, other = worker("shop-1"), worker("shop-2")
    # Two orders taken from kitchens that overran a stage: one from this worker, just now
    # (any other worker's first), one from the other worker (anyone's, this one's too).
    for label, holder in (("overran here", mine), ("overran there", other)):
        place(label, at(5), area=area_of(holder))
        [claim] = queue.claim(holder.pk, 10, now=at(6))
        queue.report_stage(claim.order.pk, claim.token, "oven", holder.pk, now=at(6))
        assert recovery.retry_overdue(claim.order.pk, claim.token, "oven", 30.0, now=at(7)) == "retried"
    place("in my bucket", at(0), area=area_of(mine), priority=1)
    place("pinned to me", at(1), kind="takeaway", pinned_to="shop-1", area=area_of(other))
    place("pinned to the other", at(2), kind="takeaway", pinned_to="shop-2", area=area_of(mine))
    place("in the other's bucket", at(3), area=area_of(other))
    place("old in the other's bucket", at(-300), area=area_of(other))  # stealable: waited past 120 s
    place("not yet due", at(4), area=area_of(mine), not_before=at(900))
    now = at(10)

    def claimed(path: Callable[[int, int, datetime], list[leases.Claim]]) -> Callable[[], object]:
        return lambda: [c.order.note for c in path(mine.pk, 10, now)]

    taken, rows = agreed(
        list(
            each_path(
                {"ORM": claimed(leases.claim_in_transaction), "one statement": claimed(leases.claim_in_one_statement)}
            )
        )
    )

    assert taken == ["old in the other's bucket", "in my bucket", "pinned to me", "overran there"]
    for label in taken:
        order = rows["orders"][label]
        assert (order["status"], order["worker_id"], order["lease_token"]) == ("preparing", "shop-1", "token")
        assert (order["claimed_at"], order["lease_expires_at"]) == (now, now + timedelta(seconds=15))
        assert (order["stage"], order["stage_started_at"], order["avoid_worker_id"]) == ("", None, None)
    assert rows["orders"]["overran here"]["status"] == "queued"
    assert rows["orders"]["overran here"]["avoid_worker_id"] == "shop-1"


def test_completing_clears_the_same_lease_columns_by_every_path() -> None:
    shop = worker("shop-1")
    for label in ("made", "lost"):
        place(label, at(0), area=area_of(shop))
    claims = {c.order.note: c for c in queue.claim(shop.pk, 10, now=at(1))}
    for claim in claims.values():
        queue.report_stage(claim.order.pk, claim.token, "oven", shop.pk, now=at(2))
    held = [(claims["made"].order.pk, claims["made"].token), (claims["lost"].order.pk, uuid.uuid4())]

    def completed(path: Callable[..., set[uuid.UUID]]) -> Callable[[], object]:
        return lambda: {Order.objects.get(pk=pk).note for pk in path(held, shop.pk, at(3))}

    done, rows = agreed(
        list(
            each_path(
                {
                    "ORM": completed(leases.complete_in_transaction),
                    "one statement": completed(leases.complete_in_one_statement),
                }
            )
        )
    )

    assert done == {"made"}
    made = rows["orders"]["made"]
    assert (made["status"], made["finished_at"], made["worker_id"]) == ("done", at(3), "shop-1")
    assert {column: made[column] for column in leases.LEASE_CLEARED} == {
        "lease_token": None,
        "lease_expires_at": None,
        "stage": "",
        "stage_started_at": None,
    }
    assert rows["orders"]["lost"]["status"] == "preparing"
    assert [(e["order_id"], e["kind"], e["data"]) for e in rows["events"] if e["created_at"] == at(3)] == [
        ("lost", "lease-lost", {"action": "complete"}),
        ("made", "done", {}),
    ]


def test_failing_retries_with_the_lease_cleared_then_dead_letters() -> None:
    shop = worker("shop-1")
    place("burnt", at(0), area=area_of(shop), max_attempts=2)
    for attempt, now in ((1, at(1)), (2, at(10))):
        [claim] = queue.claim(shop.pk, 1, now=now)
        queue.report_stage(claim.order.pk, claim.token, "oven", shop.pk, now=now)
        kind = queue.fail(claim.order.pk, claim.token, f"oven fire {attempt}", shop.pk, now=now)
        rows = snapshot()["orders"]["burnt"]
        assert {column: rows[column] for column in leases.LEASE_CLEARED} == dict.fromkeys(
            ("lease_token", "lease_expires_at", "stage_started_at")
        ) | {"stage": ""}
        assert (rows["last_error"], rows["attempts"]) == (f"oven fire {attempt}", attempt)
        if attempt == 1:
            assert (kind, rows["status"], rows["worker_id"], rows["eligible_at"]) == ("retried", "queued", None, at(3))
        else:
            assert (kind, rows["status"], rows["finished_at"]) == ("failed", "failed", at(10))


def test_releasing_gives_the_order_back_with_its_attempt_and_lease_cleared() -> None:
    shop = worker("shop-1")
    place("unstarted", at(0), area=area_of(shop))
    [claim] = queue.claim(shop.pk, 1, now=at(1))
    queue.report_stage(claim.order.pk, claim.token, "dough", shop.pk, now=at(1))

    assert queue.release([(claim.order.pk, claim.token)], shop.pk, now=at(2)) == 1

    rows = snapshot()
    unstarted = rows["orders"]["unstarted"]
    assert (unstarted["status"], unstarted["worker_id"], unstarted["attempts"], unstarted["eligible_at"]) == (
        "queued",
        None,
        0,
        at(2),
    )
    assert {column: unstarted[column] for column in leases.LEASE_CLEARED} == dict.fromkeys(
        ("lease_token", "lease_expires_at", "stage_started_at")
    ) | {"stage": ""}
    assert (rows["events"][-1]["kind"], rows["events"][-1]["data"]) == ("released", {"reason": "stopping"})


def test_purging_deletes_old_finished_orders_with_their_events_and_nothing_else() -> None:
    shop = worker("shop-1")
    place("a", at(0), area=area_of(shop))
    place("c", at(0), area=area_of(shop))
    claims = {c.order.note: c for c in queue.claim(shop.pk, 10, now=at(1))}
    queue.complete(claims["a"].order.pk, claims["a"].token, shop.pk, now=at(2))
    queue.complete(claims["c"].order.pk, claims["c"].token, shop.pk, now=at(500))
    cancelled = place("b", at(0), area=area_of(shop))
    place("d", at(0), area=area_of(shop))
    queue.cancel(cancelled.pk, "changed my mind", now=at(3))

    assert queue.purge(at(100), limit=10) == 2

    rows = snapshot()
    assert set(rows["orders"]) == {"c", "d"}
    assert {e["order_id"] for e in rows["events"]} == {"c", "d"}
