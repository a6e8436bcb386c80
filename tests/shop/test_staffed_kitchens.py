"""Staffed kitchens (SPEC §7a), stage deadlines and client redirection (§7b), in process:
the queue operations against the real database, and the pages that call them."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.test import Client

from orders import customers
from orders.deadlines import late_orders, overdue_stages, stage_limit
from orders.handlers import STAFFED_HANDLER
from orders.intake import clean_order_request
from orders.models import KitchenStaff
from orders.timeline import describe
from tests.base import T0, area_owned_by, at, fresh, kitchen_staff, make_worker
from tests.factory import make_order, order_data
from workers import clock, membership, monitor, queue, recovery
from workers.models import CLOSED, Order, OrderEvent, Worker

pytestmark = pytest.mark.usefixtures("menu")


@pytest.fixture(autouse=True)
def pinned_settings(settings: Any) -> None:
    settings.PIZZAQUEUE_HEARTBEAT_TIMEOUT = 15.0
    settings.PIZZAQUEUE_STEAL_AFTER = 0.0
    settings.PIZZAQUEUE_STAGE_DEADLINE_FACTOR = 2.0
    settings.PIZZAQUEUE_STAGE_RETRY = False
    settings.PIZZAQUEUE_KITCHEN_SPEED = 1.0


def staffed_worker(name: str = "staffed-1", now: datetime | None = T0) -> Worker:
    return membership.register(name, "test-host", 1, 4, now=now, handler=STAFFED_HANDLER)


def events(order: Order, kind: str | None = None) -> list[OrderEvent]:
    found = OrderEvent.objects.filter(order=order).order_by("id")
    return list(found.filter(kind=kind) if kind else found)


def in_kitchen(shop: Worker, now: datetime | None = T0, **kw: Any) -> tuple[Order, uuid.UUID]:
    order = make_order(now=now, area=area_owned_by(shop), **kw)
    [claim] = queue.claim(shop.pk, 1, now=now)
    assert claim.order.pk == order.pk
    return fresh(order), claim.token


# --- Taps: fenced by the lease and by the stage shown -----------------------------------------


def test_a_tap_moves_an_order_one_stage_and_writes_its_event() -> None:
    shop = staffed_worker()
    order, token = in_kitchen(shop)
    assert queue.advance_stage(order.pk, token, "", "dough", now=at(5)) is True
    stored = fresh(order)
    assert (stored.stage, stored.stage_started_at) == ("dough", at(5))
    [event] = events(order, OrderEvent.Kind.STAGE)
    assert (event.stage, event.worker_id, event.data) == ("dough", shop.pk, {"by": "staff"})


def test_a_double_tap_moves_the_order_only_once() -> None:
    order, token = in_kitchen(staffed_worker())
    assert queue.advance_stage(order.pk, token, "", "dough") is True
    assert queue.advance_stage(order.pk, token, "", "dough") is False
    assert fresh(order).stage == "dough"
    assert len(events(order, OrderEvent.Kind.STAGE)) == 1


def test_a_tap_with_a_lease_that_moved_changes_nothing() -> None:
    first = staffed_worker("staffed-1")
    second = make_worker("shop-2", now=T0)
    order, old_token = in_kitchen(first)
    monitor.declare_dead(first.pk, now=at(20))
    [claim] = queue.claim(second.pk, 1, now=at(21))
    before = len(events(order))
    assert queue.advance_stage(order.pk, old_token, "", "dough", now=at(22)) is False
    stored = fresh(order)
    assert (stored.worker_id, stored.lease_token, stored.stage) == (second.pk, claim.token, "")
    assert len(events(order)) == before


def test_the_kitchen_sees_the_tapped_stage_and_a_revoked_lease_stops_it() -> None:
    shop = staffed_worker()
    order, token = in_kitchen(shop)
    assert queue.check_lease(order.pk, token, shop.pk) == ""
    queue.advance_stage(order.pk, token, "", "dough")
    assert queue.check_lease(order.pk, token, shop.pk) == "dough"
    queue.cancel(order.pk, "cancelled by an operator", if_held=lambda _order: True)
    assert queue.check_lease(order.pk, token, shop.pk) is None
    [lost] = events(order, OrderEvent.Kind.LEASE_LOST)
    assert lost.data == {"action": "continue"}


# --- The display ---------------------------------------------------------------------------


def ticket_form(html: str) -> dict[str, str]:
    return {
        name: re.search(rf'name="{name}" value="([^"]*)"', html).group(1)  # type: ignore[union-attr]
        for name in ("order", "lease", "stage")
    }


def test_a_staffed_display_shows_the_next_step_and_a_simulated_one_does_not(staff_client: Client) -> None:
    staffed = staffed_worker()
    simulated = make_worker("shop-2")
    in_kitchen(staffed, now=None)
    in_kitchen(simulated, now=None)
    page = staff_client.get("/kitchen/staffed-1/").content.decode()
    assert 'data-tap="dough"' in page and ">Start</button>" in page
    assert "data-tap" not in staff_client.get("/kitchen/shop-2/").content.decode()


def test_during_a_redeploy_the_display_shows_the_tickets_of_both_processes_of_the_shop(staff_client: Client) -> None:
    old = staffed_worker("corner", now=None)
    first = make_order(kind="takeaway", shop="corner")
    queue.claim(old.pk, 1)
    new = staffed_worker("corner", now=None)
    second = make_order(kind="takeaway", shop="corner")
    queue.claim(new.pk, 1)

    page = staff_client.get("/kitchen/corner/").content.decode()

    assert page.count('data-tap="dough"') == 2
    assert str(first.pk) in page and str(second.pk) in page


def test_tapping_through_every_stage_without_javascript(staff_client: Client) -> None:
    shop = staffed_worker()
    order, token = in_kitchen(shop, now=None)
    labels = []
    for expected in ("dough", "oven", "boxing", "ready"):
        page = staff_client.get("/kitchen/staffed-1/").content.decode()
        labels.append(re.search(r'data-tap="[a-z]+">([^<]+)</button>', page).group(1))  # type: ignore[union-attr]
        response = staff_client.post("/kitchen/staffed-1/tap/", ticket_form(page))
        assert (response.status_code, response["Location"]) == (302, "/kitchen/staffed-1/")
        assert fresh(order).stage == expected
    assert labels == ["Start", "Into the oven", "Boxed", "Ready"]
    assert fresh(order).lease_token == token  # the kitchen process completes it


def test_a_stale_tap_changes_nothing_and_says_where_the_order_went(staff_client: Client) -> None:
    first = staffed_worker("staffed-1")
    order, _token = in_kitchen(first, now=None)
    stale = ticket_form(staff_client.get("/kitchen/staffed-1/").content.decode())
    second = make_worker("shop-2")
    monitor.declare_dead(first.pk)
    queue.claim(second.pk, 1)
    response = staff_client.post("/kitchen/staffed-1/tap/", stale, follow=True)
    assert f"#{str(order.pk)[:8]} moved to shop-2, which is making it now: nothing changed here." in (
        response.content.decode()
    )
    assert fresh(order).stage == ""


def test_a_tap_over_htmx_answers_with_the_tickets_and_the_notice(staff_client: Client) -> None:
    order, _token = in_kitchen(staffed_worker(), now=None)
    form = ticket_form(staff_client.get("/kitchen/staffed-1/").content.decode())
    staff_client.post("/kitchen/staffed-1/tap/", form, HTTP_HX_REQUEST="true")
    again = staff_client.post("/kitchen/staffed-1/tap/", form, HTTP_HX_REQUEST="true")
    assert again.status_code == 200
    body = again.content.decode()
    assert "<html" not in body
    assert f"#{str(order.pk)[:8]} is already at “Stretching the dough”." in body


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("order", "nope", "order: Must be a UUID."), ("lease", "", "lease: Must be a UUID."), ("stage", "ready", "stage")],
)
def test_a_malformed_tap_is_a_400_naming_the_field(staff_client: Client, field: str, value: str, message: str) -> None:
    order, token = in_kitchen(staffed_worker(), now=None)
    form = {"order": str(order.pk), "lease": str(token), "stage": "", field: value}
    response = staff_client.post("/kitchen/staffed-1/tap/", form)
    assert response.status_code == 400
    assert response.content.decode().startswith(message)
    assert fresh(order).stage == ""


def test_only_kitchen_staff_may_tap(client: Client) -> None:
    order, token = in_kitchen(staffed_worker(), now=None)
    response = client.post("/kitchen/staffed-1/tap/", {"order": str(order.pk), "lease": str(token), "stage": ""})
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    assert fresh(order).stage == ""


def test_a_cook_taps_only_the_kitchen_they_staff(client: Client) -> None:
    order, token = in_kitchen(staffed_worker(), now=None)
    elsewhere = kitchen_staff("shop-9")
    client.force_login(elsewhere)
    tap = {"order": str(order.pk), "lease": str(token), "stage": ""}

    assert client.post("/kitchen/staffed-1/tap/", tap).status_code == 403
    assert fresh(order).stage == ""
    KitchenStaff.objects.create(user=elsewhere, shop="staffed-1")
    assert client.post("/kitchen/staffed-1/tap/", tap).status_code == 302
    assert fresh(order).stage != ""


# --- Deadlines ---------------------------------------------------------------------------------


def test_a_stage_limit_is_its_share_of_the_estimate_times_the_factor() -> None:
    order, _token = in_kitchen(staffed_worker())
    assert order.estimated_seconds > 0
    assert stage_limit(order) == pytest.approx(0.2 * order.estimated_seconds * 2.0)
    order.stage = "oven"
    assert stage_limit(order) == pytest.approx(0.55 * order.estimated_seconds * 2.0)


def test_a_stage_without_progress_past_its_limit_is_flagged_on_the_board_and_display(
    staff_client: Client,
) -> None:
    shop = staffed_worker(now=None)
    order, token = in_kitchen(shop, now=None)
    assert overdue_stages(fresh(order).claimed_at + timedelta(seconds=1)) == []
    limit = stage_limit(fresh(order))
    assert limit is not None
    # Back-date the claim: the stage has gone without progress past its limit.
    Order.objects.filter(pk=order.pk).update(claimed_at=fresh(order).claimed_at - timedelta(seconds=limit + 5))
    [item] = overdue_stages(clock.now())
    assert item.order.pk == order.pk and item.over > 4
    board = staff_client.get("/board/").content.decode()
    assert f'data-overdue="{order.pk}"' in board
    display = staff_client.get("/kitchen/staffed-1/").content.decode()
    assert "data-overdue" in display and "ticket overdue" in display
    metrics = staff_client.get("/metrics").content.decode()
    assert "pizzaqueue_stages_overdue 1.0" in metrics
    assert token == fresh(order).lease_token


def test_orders_past_their_promised_time_are_listed_as_late(staff_client: Client) -> None:
    make_worker("shop-1")
    order = make_order(now=clock.now() - timedelta(hours=1))
    on_time = make_order()
    late = late_orders(clock.now())
    assert [o.pk for o in late] == [order.pk]
    board = staff_client.get("/board/").content.decode()
    assert f'data-late="{order.pk}"' in board and f'data-late="{on_time.pk}"' not in board


def test_with_retries_on_an_overdue_order_goes_to_another_kitchen_and_not_back(settings: Any) -> None:
    settings.PIZZAQUEUE_STAGE_RETRY = True
    slow = make_worker("slow", now=T0)
    other = make_worker("other", now=T0)
    order, token = in_kitchen(slow)
    limit = stage_limit(order)
    assert limit is not None
    monitor.acquire(slow.pk, at(limit - 1))
    assert monitor.retry_overdue_stages(at(limit - 1), monitor_id=slow.pk) == []
    membership.heartbeat(slow.pk, [token], now=at(limit + 1))
    membership.heartbeat(other.pk, now=at(limit + 1))
    assert monitor.retry_overdue_stages(at(limit + 1), monitor_id=slow.pk) == [order.pk]
    stored = fresh(order)
    assert (stored.status, stored.avoid_worker_id, stored.lease_token) == ("queued", slow.pk, None)
    [retried] = events(order, OrderEvent.Kind.RETRIED)
    assert retried.data["reason"] == "stage-overdue"
    # Its bucket's owner passes it over; the other kitchen takes it.
    assert queue.claim(slow.pk, 1, now=at(limit + 2)) == []
    [claim] = queue.claim(other.pk, 1, now=at(limit + 2))
    assert claim.order.pk == order.pk
    assert fresh(order).avoid_worker_id is None
    assert queue.complete(order.pk, token, slow.pk) is False


def test_an_overdue_order_is_only_flagged_when_its_kitchen_is_the_only_one(settings: Any) -> None:
    settings.PIZZAQUEUE_STAGE_RETRY = True
    alone = make_worker("alone", now=T0)
    order, _token = in_kitchen(alone)
    limit = stage_limit(order)
    assert limit is not None
    monitor.acquire(alone.pk, at(limit + 5))
    assert monitor.retry_overdue_stages(at(limit + 10), monitor_id=alone.pk) == []
    assert fresh(order).status == Order.Status.PREPARING


def test_after_a_timeout_the_avoided_kitchen_may_take_the_order_again() -> None:
    slow = make_worker("slow", now=T0)
    make_worker("other", now=T0)
    order, token = in_kitchen(slow)
    assert recovery.retry_overdue(order.pk, token, "", 30.0, now=at(1)) == OrderEvent.Kind.RETRIED
    assert queue.claim(slow.pk, 1, now=at(2)) == []
    [claim] = queue.claim(slow.pk, 1, now=at(17))
    assert claim.order.pk == order.pk


# --- Client redirection ------------------------------------------------------------------------


def test_a_ticket_handed_over_in_a_redeploy_tells_its_customer_it_carries_on_where_it_was(client: Client) -> None:
    old = staffed_worker("corner", now=T0)
    order = make_order(now=T0, kind="takeaway", shop="corner")
    [claim] = queue.claim(old.pk, 1, now=T0)
    queue.advance_stage(order.pk, claim.token, "", "dough", now=at(1))
    new = staffed_worker("corner", now=at(2))
    queue.release([(order.pk, claim.token)], old.pk, now=at(3), reason=queue.HANDED_OVER)
    queue.claim(new.pk, 1, now=at(4))

    [handed] = events(order, OrderEvent.Kind.RELEASED)
    assert describe(handed, "corner") == (
        "Your shop is changing over its kitchen's system; your order stays where it was."
    )
    assert describe(events(order, OrderEvent.Kind.CLAIMED)[-1], "corner") == "Corner carries on with your order."
    page = client.get(f"/orders/{order.pk}/").content.decode()
    assert "Corner carries on with your order." in page
    assert '<p class="status" id="status">Stretching the dough</p>' in page  # not back to the start


def test_queued_delivery_orders_moved_with_a_dead_shops_buckets_are_told_where(client: Client) -> None:
    doomed = make_worker("shop-3", now=T0)
    make_worker("shop-1", now=T0)
    waiting = make_order(now=T0, area=area_owned_by(doomed))
    monitor.declare_dead(doomed.pk, now=at(20))
    [moved] = events(waiting, OrderEvent.Kind.REASSIGNED)
    assert describe(moved, "shop-3") == "Shop 3 went down; Shop 1 will make your order."
    assert moved.data == {"to_shop": "shop-1", "why": "died", "queued": True}
    assert "Shop 3 went down; Shop 1 will make your order." in client.get(f"/orders/{waiting.pk}/").content.decode()


def test_a_clean_stop_and_a_drain_tell_the_queued_customers_too() -> None:
    closing = make_worker("shop-3", now=T0)
    draining = make_worker("shop-2", now=T0)
    make_worker("shop-1", now=T0)
    stopped_queue = make_order(now=T0, area=area_owned_by(closing))
    drained_queue = make_order(now=T0, area=area_owned_by(draining))
    membership.stop(closing.pk, now=at(1))
    membership.drain(draining.pk, now=at(2))
    assert describe(events(stopped_queue, OrderEvent.Kind.REASSIGNED)[0], "shop-3").startswith("Shop 3 closed; ")
    assert describe(events(drained_queue, OrderEvent.Kind.REASSIGNED)[0], "shop-2").startswith("Shop 2 is closing; ")


def test_an_order_being_baked_gets_one_reassigned_event_not_two() -> None:
    doomed = make_worker("shop-3", now=T0)
    make_worker("shop-1", now=T0)
    order, _token = in_kitchen(doomed)
    monitor.declare_dead(doomed.pk, now=at(20))
    assert len(events(order, OrderEvent.Kind.REASSIGNED)) == 1


def this_browser(client: Client) -> queue.Owner:
    """The client's browser as the owner of the orders a test places for it."""
    session = client.session
    session[customers.SESSION_KEY] = "this-browser"
    session.save()
    return queue.Owner(session="this-browser")


def takeaway_cancelled_with_its_shop(client: Client) -> Order:
    """A takeaway order placed by this client's browser, cancelled when its shop closed."""
    closing = make_worker("corner", now=None)
    make_worker("harbour")
    request = clean_order_request(order_data(kind="takeaway", shop="corner", note="extra basil", customer_name="Ada"))
    order, _created = queue.place(request, owner=this_browser(client))
    membership.drain(closing.pk)
    membership.stop(closing.pk, CLOSED)
    assert fresh(order).cancel_reason == recovery.SHOP_UNAVAILABLE
    return order


def test_a_takeaway_customer_reorders_at_an_open_shop_in_one_click_once(client: Client) -> None:
    order = takeaway_cancelled_with_its_shop(client)
    page = client.get(f"/orders/{order.pk}/").content.decode()
    assert 'name="shop" value="harbour"' in page and 'value="corner"' not in page
    first = client.post(f"/orders/{order.pk}/reorder/", {"shop": "harbour"})
    second = client.post(f"/orders/{order.pk}/reorder/", {"shop": "harbour"})
    assert first.status_code == second.status_code == 302
    assert first["Location"] == second["Location"]
    again = Order.objects.exclude(pk=order.pk).get()
    assert first["Location"] == f"/orders/{again.pk}/"
    assert (again.kind, again.pinned_shop, again.items, again.note, again.customer_name) == (
        "takeaway",
        "harbour",
        order.items,
        "extra basil",
        "Ada",
    )


def test_reordering_at_a_closed_shop_is_refused_with_nothing_written(client: Client) -> None:
    order = takeaway_cancelled_with_its_shop(client)
    response = client.post(f"/orders/{order.pk}/reorder/", {"shop": "corner"})
    assert response.status_code == 409
    assert "No open shop named &#x27;corner&#x27;." in response.content.decode()
    missing = client.post(f"/orders/{order.pk}/reorder/", {})
    assert (missing.status_code, missing.content.decode()) == (400, "shop: Choose one of the open shops.")
    assert Order.objects.count() == 1


def test_only_a_takeaway_order_whose_shop_closed_is_offered_again(client: Client) -> None:
    make_worker("harbour")
    order, _created = queue.place(clean_order_request(order_data()), owner=this_browser(client))
    assert client.post(f"/orders/{order.pk}/reorder/", {"shop": "harbour"}).status_code == 409
    assert client.get(f"/orders/{order.pk}/reorder/").content.decode().strip() == ""
    assert Order.objects.count() == 1


def test_only_the_browser_that_placed_a_takeaway_order_is_offered_it_again(client: Client) -> None:
    order = takeaway_cancelled_with_its_shop(client)
    stranger = Client()

    assert "Collect it from Harbour" not in stranger.get(f"/orders/{order.pk}/").content.decode()
    assert stranger.get(f"/orders/{order.pk}/reorder/").content.decode().strip() == ""
    assert stranger.post(f"/orders/{order.pk}/reorder/", {"shop": "harbour"}).status_code == 403
    assert Order.objects.count() == 1
    assert "Collect it from Harbour" in client.get(f"/orders/{order.pk}/").content.decode()
