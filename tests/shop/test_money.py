"""Money: the server prices every order from the menu, per size, with the area's delivery fee,
and shows the total on the form (live), the tracking page, the receipt, the API and admin."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import Client
from rest_framework.test import APIClient

from orders.models import DeliveryFee, Pizza
from orders.money import money, parse_amount
from pizzaqueue.settings import env_money
from tests.base import integrator, logged_in, superuser
from tests.factory import make_order, order_data
from workers.models import Order, OrderEvent

pytestmark = pytest.mark.django_db

TWO_LARGE = {"pizza": "margherita", "size": "large", "quantity": 2}


@pytest.fixture
def api(menu: None) -> APIClient:
    return integrator()


def post(api: APIClient, body: Any) -> Any:
    return api.post("/api/orders/", data=json.dumps(body), content_type="application/json")


def test_each_size_has_its_own_price_and_the_area_its_own_fee(menu: None, settings: Any) -> None:
    settings.PIZZAQUEUE_DELIVERY_FEE = Decimal("2.00")
    DeliveryFee.objects.create(area="Old Town", fee=Decimal("3.50"))
    items = [TWO_LARGE, {"pizza": "diavola", "size": "small", "quantity": 1}]

    far = make_order(items=items, area="old town")  # an area's fee is matched ignoring case
    near = make_order(items=items, area="Harbour")

    assert [item["price"] for item in far.items] == ["11.50", "9.00"]
    assert (far.delivery_fee, far.total) == (Decimal("3.50"), Decimal("35.50"))
    assert (near.delivery_fee, near.total) == (Decimal("2.00"), Decimal("34.00"))


def test_a_price_changed_on_the_menu_leaves_placed_orders_as_they_were_priced(menu: None) -> None:
    order = make_order(items=[TWO_LARGE])
    Pizza.objects.filter(slug="margherita").update(price_large=Decimal("20.00"))

    assert Order.objects.get(pk=order.pk).total == Decimal("23.00")
    assert make_order(items=[TWO_LARGE]).total == Decimal("40.00")


def test_the_api_answers_with_the_total_the_fee_and_the_currency(api: APIClient, settings: Any) -> None:
    settings.PIZZAQUEUE_CURRENCY = "GBP"
    DeliveryFee.objects.create(area="north", fee=Decimal("1.25"))

    response = post(api, order_data(items=[TWO_LARGE], area="north", total="24.25"))

    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["total"], body["delivery_fee"], body["currency"]) == ("24.25", "1.25", "GBP")
    assert body["items"] == [{**TWO_LARGE, "price": "11.50"}]
    assert api.get(f"/api/orders/{body['id']}/").json()["total"] == "24.25"


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        pytest.param(
            order_data(items=[TWO_LARGE], total="1.00"),
            "total",
            "The total is 23.00, not 1.00: prices come from the menu.",
            id="a-total-that-is-not-the-servers",
        ),
        pytest.param(
            order_data(items=[TWO_LARGE], total="23.001"),
            "total",
            'Must be an amount with at most two decimals, like "12.50".',
            id="three-decimals",
        ),
        pytest.param(
            order_data(items=[TWO_LARGE], total="-23"),
            "total",
            'Must be an amount with at most two decimals, like "12.50".',
            id="negative",
        ),
        pytest.param(
            order_data(items=[TWO_LARGE], total="NaN"),
            "total",
            'Must be an amount with at most two decimals, like "12.50".',
            id="not-a-number",
        ),
        pytest.param(
            order_data(items=[TWO_LARGE], total=True),
            "total",
            'Must be an amount with at most two decimals, like "12.50".',
            id="a-boolean",
        ),
        pytest.param(
            order_data(items=[{**TWO_LARGE, "price": "0.01"}]),
            "items[0].price",
            "Prices come from the menu: leave `price` out.",
            id="a-price-in-an-item",
        ),
    ],
)
def test_a_bad_price_or_total_is_a_400_and_nothing_is_placed(
    api: APIClient, body: dict[str, Any], field: str, message: str
) -> None:
    response = post(api, body)

    assert response.status_code == 400, response.content
    assert response.json()["errors"][field] == [message]
    assert (Order.objects.count(), OrderEvent.objects.count()) == (0, 0)


def test_the_total_the_server_computes_is_accepted_as_a_number_too(api: APIClient) -> None:
    assert post(api, order_data(items=[TWO_LARGE], total=23)).status_code == 201


def test_the_order_form_shows_its_total_live_from_the_server(menu: None, client: Client, settings: Any) -> None:
    settings.PIZZAQUEUE_DELIVERY_FEE = Decimal("2.50")

    empty = client.get("/")
    assert '<strong id="total-amount">€0.00</strong>' in empty.content.decode()
    quoted = client.get(
        "/orders/quote/",
        {"qty_margherita": "2", "size_margherita": "large", "qty_diavola": "abc", "kind": "delivery", "area": "x"},
    )
    text = quoted.content.decode()
    assert quoted.status_code == 200
    assert '<strong id="total-amount">€25.50</strong>' in text
    assert "including €2.50 delivery" in text
    takeaway = client.get("/orders/quote/", {"qty_margherita": "2", "size_margherita": "large", "kind": "takeaway"})
    assert '<strong id="total-amount">€23.00</strong>' in takeaway.content.decode()


def test_the_tracking_page_and_the_receipt_show_what_it_costs(menu: None, client: Client, settings: Any) -> None:
    settings.PIZZAQUEUE_DELIVERY_FEE = Decimal("2.00")
    order = make_order(items=[TWO_LARGE, {"pizza": "funghi", "size": "small", "quantity": 1}])

    page = client.get(f"/orders/{order.pk}/").content.decode()
    assert '<strong id="order-total">€33.00</strong>' in page
    receipt = client.get(f"/orders/{order.pk}/receipt/").content.decode()
    for line in ("2 × Margherita (large)", "€23.00", "1 × Funghi (small)", "€8.00", "Delivery", "€2.00"):
        assert line in receipt, line
    assert '<th class="amount" id="receipt-total">€33.00</th>' in receipt
    assert "Not paid yet" in receipt


def test_admin_shows_the_total_and_each_items_price(menu: None) -> None:
    order = make_order(items=[TWO_LARGE])

    page = logged_in(superuser()).get(f"/admin/workers/order/{order.pk}/change/").content.decode()

    assert "2 × Margherita (large): €23.00" in page
    assert "Total: €23.00" in page


def test_amounts_are_read_strictly_and_written_in_the_currency(settings: Any) -> None:
    assert parse_amount("12.5") == Decimal("12.50")
    assert [parse_amount(v) for v in ("1e3x", "Infinity", "0.001", -1, None, [1], "1e100", 1e300)] == [None] * 8
    settings.PIZZAQUEUE_CURRENCY = "SEK"
    assert money(Decimal("1234.5")) == "SEK 1,234.50"


def test_a_malformed_delivery_fee_setting_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEE", "2.555")
    with pytest.raises(ImproperlyConfigured, match="FEE must be a non-negative amount with at most two decimals"):
        env_money("FEE", "0")
    monkeypatch.setenv("FEE", "two")
    with pytest.raises(ImproperlyConfigured, match="FEE must be an amount like 2.50, got 'two'"):
        env_money("FEE", "0")


def test_the_live_total_counts_nothing_it_cannot_read(menu: None, client: Client) -> None:
    quoted = client.get("/orders/quote/", {"qty_margherita": "9" * 5000, "qty_funghi": "1", "kind": "takeaway"})

    assert quoted.status_code == 200
    assert '<strong id="total-amount">€10.00</strong>' in quoted.content.decode()
