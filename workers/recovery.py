"""Recovery: what the monitor does to the orders of a worker that left or stalled.

Each step runs inside the monitor's transaction (`workers.monitor`), on rows
it locked, so the ring's change and the orders' moves commit together or not
at all: nobody sees a dead worker still owning buckets, or an order moved
without its event.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime

from django.db import transaction

from workers import clock
from workers.models import Bucket, Order, OrderEvent, Worker
from workers.queue.leases import BACK_IN_QUEUE, LEASE_CLEARED, to_failed
from workers.queue.outbox import Event, event, record

logger = logging.getLogger(__name__)

Status = Order.Status

# Why a pinned order was cancelled: its shop closed, and no other shop may make it.
SHOP_UNAVAILABLE = "shop unavailable"
# Why an order was taken from its worker, in its events' `reason`.
LEASE_EXPIRED = "lease-expired"
STAGE_OVERDUE = "stage-overdue"


def close_shops(now: datetime, names: Iterable[str] | None = None, actor_id: int | None = None) -> list[uuid.UUID]:
    """Cancel the queued takeaway orders of every shop that is closed (SPEC §4.4): no
    incarnation of it up, and its newest one closed by an operator or gone for longer than
    PIZZAQUEUE_SHOP_CLOSED_AFTER. A kitchen's death or restart alone cancels nothing: its
    takeaway orders wait for the shop's next process. `names` limits the look to those shops.

    Run by the monitor every round, and by a closing kitchen's stop, so an order placed as
    its shop closed is told within a round. The shops looked at are those with queued
    pinned orders, read off `order_queued_pinned_idx`.
    """
    waiting = Order.objects.filter(status=Status.QUEUED).exclude(pinned_shop="")
    if names is not None:
        waiting = waiting.filter(pinned_shop__in=list(names))
    shops = set(waiting.values_list("pinned_shop", flat=True).distinct())
    closed = Worker.objects.closed_shops(shops, now)
    if not closed:
        return []
    pinned = dict(
        Order.objects.select_for_update()
        .filter(status=Status.QUEUED, pinned_shop__in=closed)
        .values_list("id", "pinned_shop")
    )
    if not pinned:
        return []
    # How each shop ended, for its customers: its last process died, or its people closed it.
    ended = {name: _how_it_ended(name) for name in closed}
    Order.objects.filter(id__in=list(pinned), status=Status.QUEUED).update(
        status=Status.CANCELLED, cancel_reason=SHOP_UNAVAILABLE, finished_at=now, **LEASE_CLEARED
    )
    record(
        event(oid, Event.CANCELLED, now, actor_id=actor_id, reason=SHOP_UNAVAILABLE, shop=name, why=ended[name])
        for oid, name in pinned.items()
    )
    logger.warning("shops closed shops=%s cancelled=%d", closed, len(pinned))
    return list(pinned)


def _how_it_ended(name: str) -> str:
    """How the shop ended, for its customers: "died" when its newest process did, else "stopped"."""
    newest = Worker.objects.filter(name=name).order_by("-incarnation").values_list("status", flat=True).first()
    return "died" if newest == Worker.Status.DEAD else "stopped"


def take_back(
    held: Sequence[tuple[uuid.UUID, int, int]],
    worker_id: int | None,
    now: datetime,
    failure: str,
    requeued: Callable[[list[uuid.UUID]], list[OrderEvent]],
    actor_id: int | None = None,
) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
    """Take (id, attempts, max_attempts) orders from a worker that can no longer
    finish them: back in the queue, or dead-lettered with `failure` when that was
    the last attempt. `requeued` builds the events telling what happened to the rest.

    Returns (requeued ids, failed ids).
    """
    exhausted = [oid for oid, attempts, most in held if attempts >= most]
    retry = [oid for oid, attempts, most in held if attempts < most]
    if exhausted:
        to_failed(exhausted, failure, now)
        record(
            event(oid, Event.FAILED, now, worker_id=worker_id, message=failure, actor_id=actor_id) for oid in exhausted
        )
    if retry:
        Order.objects.filter(id__in=retry).update(**BACK_IN_QUEUE, eligible_at=now)
        record(requeued(retry), work=True)
    return retry, exhausted


def reassigned_events(
    worker_id: int, now: datetime, why: str, actor_id: int | None = None
) -> Callable[[list[uuid.UUID]], list[OrderEvent]]:
    """`take_back`'s events for a worker's orders after it left (`why`: `died` or
    `stopped`): each names the worker now owning the order's bucket (read after
    the rebalance)."""

    def events(ids: list[uuid.UUID]) -> list[OrderEvent]:
        buckets = dict(Order.objects.filter(id__in=ids).values_list("id", "bucket"))
        owners = dict(Bucket.objects.filter(number__in=set(buckets.values())).values_list("number", "owner__name"))
        return [
            event(
                oid,
                Event.REASSIGNED,
                now,
                worker_id=worker_id,
                actor_id=actor_id,
                to_shop=owners.get(buckets[oid]) or "",
                why=why,
            )
            for oid in ids
        ]

    return events


def announce_moved_queue(
    moves: Iterable[tuple[int, int | None, int]], worker_id: int, now: datetime, why: str
) -> list[uuid.UUID]:
    """Tell every customer whose queued delivery order moved with a bucket of a leaving
    worker which worker will make it now (SPEC §7b): one `reassigned` event each.

    `moves` are `monitor.rebalance`'s (bucket, from, to); only those from the
    leaving worker count. After the rebalance, so the events commit with the
    move or not at all. The read walks `order_queued_bucket_idx`.
    """
    by_target: dict[int, list[int]] = defaultdict(list)
    for number, source, target in moves:
        if source == worker_id:
            by_target[target].append(number)
    if not by_target:
        return []
    names = dict(Worker.objects.filter(pk__in=list(by_target)).values_list("pk", "name"))
    moved: list[uuid.UUID] = []
    for target, numbers in by_target.items():
        ids = list(
            Order.objects.filter(status=Status.QUEUED, pinned_shop="", bucket__in=numbers).values_list("id", flat=True)
        )
        to_shop = names.get(target, "")
        for start in range(0, len(ids), 1000):
            record(
                event(oid, Event.REASSIGNED, now, worker_id=worker_id, to_shop=to_shop, why=why, queued=True)
                for oid in ids[start : start + 1000]
            )
        moved += ids
    return moved


def retry_overdue(order_id: uuid.UUID, token: uuid.UUID, stage: str, limit: float, now: datetime | None = None) -> str:
    """Take an order whose stage overran its limit from its worker and let another
    worker make it: back in the queue with that worker to avoid (the `claimable`
    statement), or dead-lettered on its last attempt. Returns the event kind
    written, or "" when the order moved on meanwhile (fenced by its token and
    the stage that overran). Its own transaction.
    """
    now = now or clock.now()
    with transaction.atomic():
        order = (
            Order.objects.select_for_update()
            .leased(order_id, token)
            .filter(stage=stage)
            .only("id", "worker_id", "attempts", "max_attempts")
            .first()
        )
        if order is None:
            return ""
        what = f"stage {stage or 'start'} overran its limit of {limit:.0f} s"
        if order.attempts >= order.max_attempts:
            to_failed([order_id], f"{what} on the last attempt", now)
            record(
                [
                    event(
                        order_id,
                        Event.FAILED,
                        now,
                        worker_id=order.worker_id,
                        message=what,
                        stage=stage,
                        reason=STAGE_OVERDUE,
                        limit=limit,
                    )
                ]
            )
            return Event.FAILED
        Order.objects.filter(id=order_id).update(**BACK_IN_QUEUE, eligible_at=now, avoid_worker_id=order.worker_id)
        record(
            [
                event(
                    order_id,
                    Event.RETRIED,
                    now,
                    worker_id=order.worker_id,
                    stage=stage,
                    reason=STAGE_OVERDUE,
                    limit=limit,
                )
            ],
            work=True,
        )
    logger.warning("stage overdue order=%s stage=%s limit=%.1fs: retried elsewhere", order_id, stage, limit)
    return Event.RETRIED


def lease_expired_events(now: datetime) -> Callable[[list[uuid.UUID]], list[OrderEvent]]:
    """`take_back`'s events for orders whose lease ran out."""

    def events(ids: list[uuid.UUID]) -> list[OrderEvent]:
        return [event(oid, Event.RETRIED, now, reason=LEASE_EXPIRED) for oid in ids]

    return events
