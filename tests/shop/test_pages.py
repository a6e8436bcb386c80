"""The web pages: the order form, tracking, the kitchen display and the board."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from orders import roles
from orders.intake import clean_order_request
from orders.views import FormIntakeThrottle
from tests.base import in_role, make_worker
from tests.factory import make_order, order_data
from workers import clock, monitor, queue
from workers.models import Order, OrderEvent

pytestmark = pytest.mark.usefixtures("menu")


def form_data(**kw: Any) -> dict[str, Any]:
    kw.setdefault("token", str(uuid.uuid4()))
    kw.setdefault("kind", "delivery")
    if kw["kind"] == "delivery":
        kw.setdefault("address", "1 Harbour Street")
        kw.setdefault("phone", "020 7946 0958")
    else:
        kw.setdefault("customer_name", "Ada")
    kw.setdefault("qty_margherita", "1")
    kw.setdefault("size_margherita", "medium")
    return kw


# --- The order form ------------------------------------------------------------------


def test_the_menu_offers_every_available_pizza_with_a_fresh_form_token(client: Client) -> None:
    first = client.get("/")
    second = client.get("/")
    assert first.status_code == 200
    for name in ("Margherita", "Diavola", "Quattro formaggi"):
        assert name in first.content.decode()
    tokens = [re.search(r'name="token" value="([^"]+)"', r.content.decode()).group(1) for r in (first, second)]
    assert tokens[0] != tokens[1]


def test_a_valid_order_is_placed_and_redirects_to_its_tracking_page(client: Client) -> None:
    response = client.post("/orders/", form_data(qty_diavola="2", size_diavola="large", area="N1", customer_name="Ada"))
    order = Order.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/orders/{order.id}/"
    assert order.items == [
        {"pizza": "diavola", "size": "large", "quantity": 2, "price": "14.00"},
        {"pizza": "margherita", "size": "medium", "quantity": 1, "price": "9.00"},
    ]
    assert order.total == Decimal("37.00")
    assert (order.area, order.customer_name, order.status) == ("N1", "Ada", Order.Status.QUEUED)
    assert list(order.events.values_list("kind", flat=True)) == ["placed"]


def test_a_resubmitted_form_returns_the_same_order_instead_of_a_second_one(client: Client) -> None:
    data = form_data()
    first = client.post("/orders/", data)
    again = client.post("/orders/", data)
    assert first["Location"] == again["Location"]
    assert Order.objects.count() == 1
    assert OrderEvent.objects.count() == 1


def test_a_form_token_reused_for_a_different_order_is_refused(client: Client) -> None:
    data = form_data()
    client.post("/orders/", data)
    response = client.post("/orders/", {**data, "qty_margherita": "3"})
    assert response.status_code == 409
    assert "This form was already sent with a different order." in response.content.decode()
    assert Order.objects.count() == 1


def test_bad_input_gets_a_400_page_with_each_error_next_to_its_field_and_writes_nothing(client: Client) -> None:
    response = client.post("/orders/", form_data(qty_margherita="99", qty_funghi="two", note="x" * 501))
    page = response.content.decode()
    assert response.status_code == 400
    assert re.search(r'id="errors-margherita">.*Must be between 1 and 20\.', page)
    assert re.search(r'id="errors-funghi">.*Must be a whole number\.', page)
    assert re.search(r'id="errors-note">.*At most 500 characters\.', page)
    assert 'value="99"' in page  # what was typed is kept
    assert Order.objects.count() == 0
    assert OrderEvent.objects.count() == 0


def test_an_order_without_pizzas_is_refused(client: Client) -> None:
    response = client.post("/orders/", form_data(qty_margherita="0"))
    assert response.status_code == 400
    assert "Choose at least one pizza." in response.content.decode()
    assert Order.objects.count() == 0


def test_a_takeaway_order_must_name_an_open_shop(client: Client) -> None:
    response = client.post("/orders/", form_data(kind="takeaway"))
    assert response.status_code == 400
    assert re.search(
        r'id="errors-shop">.*A takeaway order names the shop it is collected from\.', response.content.decode()
    )
    make_worker("shop-1")
    response = client.post("/orders/", form_data(kind="takeaway", shop="shop-1"))
    assert response.status_code == 302
    assert Order.objects.get().pinned_shop == "shop-1"


def test_a_form_without_its_token_is_refused(client: Client) -> None:
    response = client.post("/orders/", form_data(token=""))
    assert response.status_code == 400
    assert "This form has expired; please check your order and send it again." in response.content.decode()
    assert Order.objects.count() == 0


def test_the_order_form_needs_its_csrf_token() -> None:
    response = Client(enforce_csrf_checks=True).post("/orders/", form_data())
    assert response.status_code == 403
    assert Order.objects.count() == 0


# --- Tracking --------------------------------------------------------------------------


def test_the_tracking_page_shows_stage_progress_promise_and_timeline(client: Client) -> None:
    worker = make_worker("shop-1")
    order = make_order(items=[{"pizza": "margherita", "size": "large", "quantity": 2}])
    (claim,) = queue.claim(worker.pk, 1)
    queue.report_stage(order.id, claim.token, "dough", worker.pk)
    queue.report_stage(order.id, claim.token, "oven", worker.pk)

    response = client.get(f"/orders/{order.id}/")
    page = response.content.decode()
    assert response.status_code == 200
    assert '<p class="status" id="status">In the oven</p>' in page
    assert '<progress id="progress" max="100" value="62">' in page
    assert "At your door by" in page
    assert "2 × Margherita (large)" in page
    timeline = re.findall(r'<span class="text">([^<]*)</span>', page)
    assert timeline == ["Order confirmed.", "Shop 1 started on your order.", "Stretching the dough.", "In the oven."]
    assert f'data-stream="/ws/orders/{order.id}/"' in page
    assert f'data-after="{order.events.order_by("-id").first().id}"' in page


def test_the_tracking_page_tells_a_customer_their_shop_went_offline_and_where_the_order_went(client: Client) -> None:
    first = make_worker("shop-1")
    order = make_order()
    queue.claim(first.pk, 1)
    make_worker("shop-2")
    monitor.declare_dead(first.pk)

    page = client.get(f"/orders/{order.id}/").content.decode()
    assert "Shop 1 went down while making your order; Shop 2 makes it again from the start." in page
    assert '<p class="status" id="status">In the queue</p>' in page


def test_the_tracking_page_tells_a_takeaway_customer_their_shop_is_unavailable(client: Client, settings: Any) -> None:
    settings.PIZZAQUEUE_SHOP_CLOSED_AFTER = 0  # down for longer than a restart takes
    shop = make_worker("shop-1")
    order = make_order(kind="takeaway", shop="shop-1")
    monitor.declare_dead(shop.pk)
    monitor.close_closed_shops(clock.now())

    page = client.get(f"/orders/{order.id}/").content.decode()
    assert "Shop 1 went down, so your takeaway order was cancelled." in page
    assert '<a href="/">Order again</a>' in page
    assert '<p class="status" id="status">Cancelled</p>' in page


def test_an_unknown_order_is_not_found(client: Client) -> None:
    assert client.get(f"/orders/{uuid.uuid4()}/").status_code == 404
    assert client.get("/orders/not-a-uuid/").status_code == 404


def place_through_form(client: Client, **kw: Any) -> Order:
    response = client.post("/orders/", form_data(**kw))
    assert response.status_code == 302, response.content
    return Order.objects.get(pk=response["Location"].split("/")[2])


def test_a_customer_can_cancel_a_queued_order_but_not_one_in_the_kitchen(client: Client) -> None:
    queued = place_through_form(client)
    response = client.post(f"/orders/{queued.id}/cancel/", follow=True)
    assert '<p class="status" id="status">Cancelled</p>' in response.content.decode()
    queued.refresh_from_db()
    assert queued.status == Order.Status.CANCELLED

    worker = make_worker("shop-1")
    baking = place_through_form(client)
    [claim] = queue.claim(worker.pk, 1)
    queue.report_stage(baking.pk, claim.token, "oven")
    response = client.post(f"/orders/{baking.id}/cancel/", follow=True)
    assert "Too late to cancel: the kitchen is making your order." in response.content.decode()
    baking.refresh_from_db()
    assert baking.status == Order.Status.PREPARING

    early = place_through_form(client)
    [claim] = queue.claim(worker.pk, 1)
    queue.report_stage(early.pk, claim.token, "dough")
    response = client.post(f"/orders/{early.id}/cancel/", follow=True)
    assert '<p class="status" id="status">Cancelled</p>' in response.content.decode()


# --- Staff pages ---------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/board/", "/kitchen/shop-1/"])
def test_staff_pages_send_anonymous_users_to_the_login_page(client: Client, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next={path}"


def test_the_board_sends_a_logged_in_non_operator_to_their_own_page_with_a_reason(client: Client) -> None:
    client.force_login(User.objects.create_user("customer"))
    response = client.get("/board/", follow=True)
    assert response.redirect_chain == [("/", 302)]
    assert [str(m) for m in response.context["messages"]] == [
        "The operations board is for operators; here is your page."
    ]


def test_a_kitchen_display_refuses_a_user_who_does_not_staff_it(client: Client) -> None:
    make_worker("shop-1")
    client.force_login(User.objects.create_user("customer"))
    assert client.get("/kitchen/shop-1/").status_code == 403


def test_rushing_needs_staff(client: Client) -> None:
    make_worker("shop-1")
    order = make_order()
    response = client.post(f"/kitchen/shop-1/rush/{order.id}/")
    assert response.status_code == 302
    order.refresh_from_db()
    assert order.priority == 0


def test_staff_log_in_and_land_on_the_board(client: Client) -> None:
    in_role(User.objects.create_user("operator", password="pizza-oven-42", is_staff=True), roles.OPERATORS)  # noqa: S106
    response = client.post("/accounts/login/", {"username": "operator", "password": "pizza-oven-42"})
    assert response["Location"] == "/board/"


def test_the_kitchen_display_shows_the_shops_tickets_and_rush_raises_priority(staff_client: Client) -> None:
    worker = make_worker("shop-1")
    baking = make_order(note="extra basil")
    queue.claim(worker.pk, 1)
    waiting = make_order()

    page = staff_client.get("/kitchen/shop-1/").content.decode()
    assert f'data-ticket="{baking.id}"' in page
    assert f'data-ticket="{waiting.id}"' in page
    assert "“extra basil”" in page
    assert page.count('class="rush"') == 1  # only a queued order can be rushed

    response = staff_client.post(f"/kitchen/shop-1/rush/{waiting.id}/", HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert "<html" not in response.content.decode()  # the tickets partial
    waiting.refresh_from_db()
    assert waiting.priority == Order.MAX_PRIORITY
    assert waiting.events.last().kind == OrderEvent.Kind.PRIORITY_RAISED

    response = staff_client.post(f"/kitchen/shop-1/rush/{baking.id}/", follow=True)
    assert "Order is preparing; only a queued order&#x27;s priority can be raised." in response.content.decode()


def test_an_unknown_kitchen_is_not_found(staff_client: Client) -> None:
    assert staff_client.get("/kitchen/nowhere/").status_code == 404


def test_a_kitchen_name_with_a_nul_is_not_found(staff_client: Client) -> None:
    make_worker("shop-1")
    assert staff_client.get("/kitchen/shop-1%00/").status_code == 404


def test_a_nul_in_a_query_parameter_is_a_400_naming_it(staff_client: Client) -> None:
    response = staff_client.get("/board/", {"since": "a\x00b"})

    assert response.status_code == 400
    assert response.content.decode() == "since: Must not contain NUL characters."


def test_the_board_shows_kitchens_buckets_queue_depth_and_throughput(staff_client: Client) -> None:
    first = make_worker("shop-1")
    done = make_order()
    (claim,) = queue.claim(first.pk, 1)
    queue.complete(done.id, claim.token, first.pk)
    second = make_worker("shop-2")
    for priority in (0, 0, 5):
        make_order(priority=priority)
    monitor.declare_dead(second.pk)

    response = staff_client.get("/board/")
    page = response.content.decode()
    assert response.status_code == 200
    assert re.search(r'data-worker="shop-1".*?status-fresh">open<', page, re.S)
    assert re.search(r'data-worker="shop-2".*?status-dead">down<', page, re.S)
    assert re.search(r'<th>P5</th>.*?<td class="num">1</td>', page, re.S)
    assert re.search(r'<th>P0</th>.*?<td class="num">2</td>', page, re.S)
    assert '<span class="value" id="queued-total">3</span>' in page
    assert '<span class="value" id="throughput">1</span>' in page
    assert 'id="events" data-stream="/ws/board/"' in page

    partial = staff_client.get("/board/", HTTP_HX_REQUEST="true").content.decode()
    assert "<html" not in partial
    assert 'id="queued-total">3<' in partial


def test_throughput_counts_only_the_last_minutes_completions() -> None:
    worker = make_worker("shop-1")
    now = timezone.now()
    for minutes_ago in (30, 20, 10, 5, 0.5, 0.2):
        at = now - timedelta(minutes=minutes_ago)
        order, _created = queue.place(clean_order_request(order_data()), now=at)
        (claim,) = queue.claim(worker.pk, 1, now=at)
        queue.complete(order.id, claim.token, worker.pk, now=at)
    assert OrderEvent.objects.done_since(now - timedelta(minutes=1)) == 2
    assert OrderEvent.objects.done_since(now - timedelta(minutes=15)) == 4
    assert OrderEvent.objects.done_since(now + timedelta(seconds=1)) == 0


def test_the_order_form_is_throttled_per_client_and_a_refused_order_writes_nothing(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(FormIntakeThrottle, "THROTTLE_RATES", {"order-form": "2/minute"})
    for _ in range(2):
        assert client.post("/orders/", form_data(qty_diavola="1")).status_code == 302

    refused = client.post("/orders/", form_data(qty_diavola="1"))

    assert refused.status_code == 429
    assert int(refused["Retry-After"]) > 0
    assert b"Too many orders from here" in refused.content
    assert Order.objects.count() == 2
    assert OrderEvent.objects.count() == 2


def test_a_new_forwarded_for_header_per_order_does_not_escape_the_form_throttle(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(FormIntakeThrottle, "THROTTLE_RATES", {"order-form": "2/minute"})
    statuses = [
        client.post("/orders/", form_data(), headers={"X-Forwarded-For": f"203.0.113.{n}"}).status_code
        for n in range(3)
    ]
    assert statuses == [302, 302, 429]


def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_count(
    client: Client, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    settings.PIZZAQUEUE_TRUSTED_PROXIES = ["127.0.0.1"]  # the test client's address: the load balancer
    monkeypatch.setattr(FormIntakeThrottle, "THROTTLE_RATES", {"order-form": "1/minute"})

    def place(forwarded_for: str) -> int:
        return client.post("/orders/", form_data(), headers={"X-Forwarded-For": forwarded_for}).status_code

    assert place("203.0.113.1") == 302
    assert place("203.0.113.2") == 302
    # What the client wrote to the left of the proxy's own entry is not believed.
    assert place("198.51.100.9, 203.0.113.1") == 429
