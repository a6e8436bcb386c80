"""A shop outlives its processes: takeaway orders are pinned to the shop's name, wait
through a restart or a redeploy, and are cancelled (their customers told) only once
the shop has closed: no process up for PIZZAQUEUE_SHOP_CLOSED_AFTER, or closed by an
operator. A stopping kitchen hands a ticket on with its stage and no attempt charged."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.base import T0, area_owned_by, at, fresh, make_worker, place_at
from workers import membership, monitor, queue
from workers.models import CLOSED, Order, OrderEvent, Worker

pytestmark = pytest.mark.django_db

CLOSED_AFTER = 300.0
TIMEOUT = 15.0


@pytest.fixture(autouse=True)
def _clocks(settings: Any) -> None:
    settings.PIZZAQUEUE_SHOP_CLOSED_AFTER = CLOSED_AFTER
    settings.PIZZAQUEUE_HEARTBEAT_TIMEOUT = TIMEOUT
    settings.PIZZAQUEUE_STEAL_AFTER = 0.0


def the_shop_went_down(name: str = "corner") -> tuple[Worker, Worker, Order]:
    """A shop with a takeaway order waiting, whose only process died at `at(20)`; a
    watcher (another shop) holds the monitor's election."""
    watcher = make_worker("watcher", now=T0)
    shop = make_worker(name, now=T0)
    order = place_at(T0, kind="takeaway", pinned_to=name)
    membership.heartbeat(watcher.pk, set(), now=at(20))
    report = monitor.tick(watcher.pk, now=at(20))
    assert report is not None and report.dead == [shop.pk]
    return watcher, shop, order


def test_a_shop_whose_process_died_keeps_its_takeaway_orders_until_it_has_been_down_the_allowance() -> None:
    watcher, _shop, order = the_shop_went_down()
    membership.heartbeat(watcher.pk, set(), now=at(20 + CLOSED_AFTER - 1))

    report = monitor.tick(watcher.pk, now=at(20 + CLOSED_AFTER - 1))

    assert report is not None and report.cancelled == []
    assert fresh(order).status == "queued"


def test_a_shop_down_for_the_allowance_is_closed_and_its_takeaway_customers_told() -> None:
    watcher, _shop, order = the_shop_went_down()
    membership.heartbeat(watcher.pk, set(), now=at(20 + CLOSED_AFTER))

    report = monitor.tick(watcher.pk, now=at(20 + CLOSED_AFTER))

    assert report is not None and report.cancelled == [order.pk]
    cancelled = fresh(order)
    assert (cancelled.status, cancelled.cancel_reason, cancelled.finished_at) == (
        "cancelled",
        "shop unavailable",
        at(20 + CLOSED_AFTER),
    )
    told = OrderEvent.objects.filter(order=order).latest("id")
    assert (told.kind, told.data) == ("cancelled", {"reason": "shop unavailable", "shop": "corner", "why": "died"})


def test_a_shop_that_is_down_takes_takeaway_orders_within_the_allowance_and_refuses_them_after() -> None:
    the_shop_went_down()

    waiting = place_at(at(20 + CLOSED_AFTER - 1), kind="takeaway", pinned_to="corner")
    assert (waiting.status, waiting.pinned_shop) == ("queued", "corner")
    with pytest.raises(ValidationError) as refused:
        place_at(at(20 + CLOSED_AFTER), kind="takeaway", pinned_to="corner")
    assert refused.value.message_dict == {"shop": ["No open shop named 'corner'."]}


def test_a_restarted_shop_makes_the_takeaway_orders_that_waited_for_it() -> None:
    watcher, _shop, order = the_shop_went_down()

    back = make_worker("corner", now=at(60))
    membership.heartbeat(watcher.pk, set(), now=at(20 + CLOSED_AFTER + 60))
    monitor.tick(watcher.pk, now=at(20 + CLOSED_AFTER + 60))

    assert back.incarnation == 2
    assert [c.order.pk for c in queue.claim(back.pk, 5, now=at(61))] == [order.pk]


def test_an_operator_closing_a_shop_tells_its_takeaway_customers_at_once() -> None:
    make_worker("watcher", now=T0)
    shop = make_worker("corner", now=T0)
    order = place_at(T0, kind="takeaway", pinned_to="corner")

    membership.drain(shop.pk, now=at(1))
    tally = membership.stop(shop.pk, CLOSED, now=at(2))

    assert tally is not None and tally.cancelled == [order.pk]
    told = OrderEvent.objects.filter(order=order).latest("id")
    assert (told.kind, told.data) == ("cancelled", {"reason": "shop unavailable", "shop": "corner", "why": "stopped"})


def test_closing_one_process_of_a_shop_while_another_runs_cancels_nothing() -> None:
    old = make_worker("corner", now=T0)
    new = make_worker("corner", now=at(1))
    order = place_at(at(1), kind="takeaway", pinned_to="corner")

    membership.drain(old.pk, now=at(2))
    tally = membership.stop(old.pk, CLOSED, now=at(3))

    assert tally is not None and tally.cancelled == []
    assert [c.order.pk for c in queue.claim(new.pk, 5, now=at(4))] == [order.pk]


def test_a_handed_over_takeaway_ticket_keeps_its_stage_and_attempt_and_goes_on_at_the_shops_next_process() -> None:
    old = make_worker("corner", now=T0)
    order = place_at(T0, kind="takeaway", pinned_to="corner")
    [claim] = queue.claim(old.pk, 1, now=T0)
    assert queue.advance_stage(order.pk, claim.token, "", "dough", now=at(1))
    assert queue.advance_stage(order.pk, claim.token, "dough", "oven", now=at(2))
    new = make_worker("corner", now=at(3))

    assert queue.release([(order.pk, claim.token)], old.pk, now=at(4), reason=queue.HANDED_OVER) == 1
    waiting = fresh(order)
    assert (waiting.status, waiting.stage, waiting.stage_started_at, waiting.attempts) == ("queued", "oven", at(2), 0)

    [taken] = queue.claim(new.pk, 1, now=at(5))
    assert (taken.order.pk, taken.order.stage, taken.order.attempts) == (order.pk, "oven", 1)
    claimed = OrderEvent.objects.filter(order=order, kind="claimed").latest("id")
    assert (claimed.worker_id, claimed.stage) == (new.pk, "oven")
    # The staff's next tap, on the new ticket, moves it on.
    assert queue.advance_stage(order.pk, taken.token, "oven", "boxing", now=at(6))
    assert not queue.advance_stage(order.pk, claim.token, "oven", "boxing", now=at(6))


def test_a_handed_over_delivery_ticket_starts_afresh_where_its_area_is_made_now() -> None:
    old = make_worker("corner", now=T0)
    order = place_at(T0, area=area_owned_by(old))
    [claim] = queue.claim(old.pk, 1, now=T0)
    assert queue.advance_stage(order.pk, claim.token, "", "dough", now=at(1))

    assert queue.release([(order.pk, claim.token)], old.pk, now=at(2), reason=queue.HANDED_OVER) == 1

    waiting = fresh(order)
    assert (waiting.status, waiting.stage, waiting.stage_started_at, waiting.attempts) == ("queued", "", None, 0)


def test_a_cancelled_handed_over_ticket_requeued_by_an_operator_starts_afresh() -> None:
    old = make_worker("corner", now=T0)
    order = place_at(T0, kind="takeaway", pinned_to="corner")
    [claim] = queue.claim(old.pk, 1, now=T0)
    assert queue.advance_stage(order.pk, claim.token, "", "dough", now=at(1))
    queue.release([(order.pk, claim.token)], old.pk, now=at(2), reason=queue.HANDED_OVER)

    queue.cancel(order.pk, "changed my mind", now=at(3))
    assert (fresh(order).status, fresh(order).stage) == ("cancelled", "")
    queue.requeue(order.pk, now=at(4))

    [taken] = queue.claim(old.pk, 1, now=at(5))
    assert (taken.order.pk, taken.order.stage) == (order.pk, "")


def test_the_monitor_judges_any_number_of_shops_in_two_queries() -> None:
    # Open: one up; one down within the allowance; one whose old process died while a new one runs.
    # Closed: one down past the allowance; one closed by an operator; one that never ran.
    make_worker("up", now=T0)
    recent = make_worker("recent", now=T0)
    restarted = make_worker("restarted", now=T0)
    make_worker("restarted", now=T0)
    long_gone = make_worker("long-gone", now=T0)
    closed = make_worker("closed", now=T0)
    membership.stop(recent.pk, now=at(CLOSED_AFTER))
    membership.stop(restarted.pk, now=at(1))
    membership.stop(long_gone.pk, now=at(1))
    membership.stop(closed.pk, reason=CLOSED, now=at(CLOSED_AFTER))
    names = ["up", "recent", "restarted", "long-gone", "closed", "never-ran"]

    with CaptureQueriesContext(connection) as queries:
        found = Worker.objects.closed_shops(names, at(CLOSED_AFTER + 1))

    assert found == ["closed", "long-gone", "never-ran"]
    assert len(queries.captured_queries) == 2
    # The one rule: a closed shop is not open to takeaway orders, and the others are.
    assert {name for name in names if not Worker.objects.open_shop(name, at(CLOSED_AFTER + 1))} == set(found)
