"""Property-based tests of order intake (hypothesis): whatever arrives, through the
API or the web form, the answer is never a 5xx, a 4xx writes nothing, and an
order that is accepted can be read back by every page that shows it.

The generated requests aim at the edges that broke intake before: datetimes at
the ends of Python's range and with extreme offsets, numbers past any column's
range, NUL and lone surrogates in every text field, and every field at once.
"""

from __future__ import annotations

import json
from datetime import timedelta, timezone
from typing import Any

import pytest
from django.core.cache import cache
from django.test import Client
from django.utils import timezone as django_timezone
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from orders.menu import HOUSE_MENU
from orders.models import Size
from tests.base import make_worker
from workers.models import Order, OrderEvent

SLUGS = [slug for slug, *_ in HOUSE_MENU]
SHOP = "shop-1"
FUZZ = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

text = st.text(st.characters(codec=None), max_size=20) | st.sampled_from(["", " ", "\x00", "a\x00b", "\ud800"])
numbers = (
    st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.booleans()
    | st.integers().map(str)
    | st.sampled_from(["1", " 2 ", "1e3", "0x10", "\N{SUPERSCRIPT TWO}", "9" * 5000, -1, 0, 2**31, 2**63])
)
offsets = st.timedeltas(min_value=-timedelta(hours=23, minutes=59), max_value=timedelta(hours=23, minutes=59)).map(
    lambda delta: timezone(timedelta(minutes=delta // timedelta(minutes=1)))
)
datetimes = st.datetimes(timezones=st.none() | offsets).map(lambda moment: moment.isoformat())
# Days from now: the bound is 90 ahead, and the past means "now".
near_now = st.floats(min_value=-400, max_value=400).map(
    lambda days: (django_timezone.now() + timedelta(days=days)).isoformat()
)
edge_times = st.sampled_from(
    [
        "9999-12-31T23:59:59-12:00",
        "9999-12-31T23:59:59+14:00",
        "9999-12-31T23:59:59.999999Z",
        "0001-01-01T00:00:00+14:00",
        "0001-01-01T00:00:00-23:59",
        "0001-01-01T00:00:00Z",
        "2030-02-30T18:00:00Z",
        "2030-01-01T24:00:00Z",
        "2030-01-01T18:00:00+25:00",
        "2030-01-01",
        "",
    ]
)
not_before = datetimes | near_now | edge_times | numbers | text | st.none()
schedulable = st.floats(min_value=-100, max_value=89).map(
    lambda days: (django_timezone.now() + timedelta(days=days)).isoformat()
)
# Text a field accepts: no NUL, and UTF-8 (no lone surrogate).
plain = st.characters(codec="utf-8", exclude_characters="\x00")


def mostly(good: st.SearchStrategy[Any], hostile: st.SearchStrategy[Any], one_in: int = 4) -> st.SearchStrategy[Any]:
    """`hostile` once in `one_in` draws, else `good`: with every field hostile half the
    time, almost no order would be accepted, and what accepted orders' pages show
    would go untested."""
    # Not an end of the range: hypothesis draws those far more often than the rest.
    return st.integers(min_value=1, max_value=one_in).flatmap(lambda n: hostile if n == 2 else good)


def hostile_now(draw: st.DrawFn) -> bool:
    """True about once in eight draws (see `mostly`)."""
    return draw(st.integers(min_value=1, max_value=8)) == 2


@st.composite
def items(draw: st.DrawFn) -> Any:
    if hostile_now(draw):
        return draw(st.lists(text | numbers | st.dictionaries(text, text | numbers), max_size=25) | numbers | text)
    chosen = []
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        line = draw(
            st.fixed_dictionaries(
                {"pizza": mostly(st.sampled_from(SLUGS), text | numbers | st.none(), one_in=8)},
                optional={
                    "size": mostly(st.sampled_from(Size.values), text | numbers, one_in=8),
                    "quantity": mostly(st.integers(min_value=1, max_value=20), numbers | st.none(), one_in=8),
                },
            )
        )
        if hostile_now(draw):
            line[draw(text)] = draw(text)
        chosen.append(line)
    return chosen


@st.composite
def order_bodies(draw: st.DrawFn) -> dict[str, Any]:
    body = draw(
        st.fixed_dictionaries(
            {"items": items()},
            optional={
                "area": mostly(st.text(plain, max_size=64), text | numbers),
                "priority": mostly(st.integers(min_value=0, max_value=9), numbers | st.none()),
                "note": mostly(st.text(plain, max_size=500), text | st.text(min_size=501, max_size=600) | numbers),
                "customer_name": mostly(st.text(plain, max_size=100), text | numbers),
                "address": mostly(st.just("1 Harbour Street"), text | numbers),
                "phone": mostly(st.sampled_from(["+44 20 7946 0958", "020-7946-0958"]), text | numbers),
                "total": mostly(st.sampled_from(["9.00", "0", "1e9"]), text | numbers | st.none()),
                "not_before": mostly(schedulable, not_before),
                "max_attempts": mostly(st.integers(min_value=1, max_value=20), numbers | st.none()),
            },
        )
    )
    if draw(st.booleans()):
        body["kind"] = "takeaway"
        body["shop"] = draw(mostly(st.just(SHOP), text | numbers))
    elif draw(st.booleans()):
        body["kind"] = draw(mostly(st.just("delivery"), text | numbers | st.none()))
    if hostile_now(draw):
        body["shop" if draw(st.booleans()) else draw(text)] = draw(text | numbers)
    return body


def written() -> tuple[int, int]:
    return Order.objects.count(), OrderEvent.objects.count()


@pytest.fixture
def unthrottled_staff(menu: None, staff: Client, settings: Any) -> Client:
    """`staff`, unthrottled, so every generated request reaches the intake instead of a 429; SHOP is open."""
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"order-create": None, "order-form": None},
    }
    make_worker(SHOP)
    return staff


def assert_readable(client: Client, order_id: str) -> None:
    """Every page showing one order, and the lists holding it, answer 200."""
    pages = [
        f"/api/orders/{order_id}/",
        "/api/orders/",
        "/api/orders/?status=queued",
        f"/orders/{order_id}/",
        "/admin/workers/order/",
        f"/admin/workers/order/{order_id}/change/",
    ]
    assert {page: client.get(page).status_code for page in pages} == dict.fromkeys(pages, 200)


@pytest.mark.django_db
@FUZZ
@given(body=order_bodies())
# What once answered 500 or wrote a refused order, always tried whatever the search finds.
@example(body={"items": [{"pizza": "margherita"}], "not_before": "9999-12-31T23:59:59-12:00"})
@example(body={"items": [{"pizza": "margherita"}], "not_before": "0001-01-01T00:00:00+14:00"})
@example(body={"items": [{"pizza": "marg\x00herita"}]})
@example(
    body={"items": [{"pizza": "margherita"}], "address": "1 Harbour Street", "phone": "020 7946 0958", "total": "1e100"}
)
def test_the_api_never_fails_and_a_refused_order_writes_nothing(
    unthrottled_staff: Client, body: dict[str, Any]
) -> None:
    cache.clear()
    before = written()

    response = unthrottled_staff.post("/api/orders/", data=json.dumps(body), content_type="application/json")
    event(f"answered {response.status_code}")

    assert response.status_code in (201, 400), response.content
    if response.status_code == 400:
        assert written() == before
        assert response.json()["errors"]
    else:
        assert written() == (before[0] + 1, before[1] + 1)
        assert_readable(unthrottled_staff, response.json()["id"])


# A form body is UTF-8 on the wire, so it cannot carry a lone surrogate.
form_text = st.text(st.characters(codec="utf-8"), max_size=20) | st.sampled_from(["", " ", "\x00", "a\x00b"])
form_value = form_text | numbers.map(str) | st.sampled_from(SLUGS + Size.values + ["delivery", "takeaway", SHOP, "0"])


@st.composite
def form_bodies(draw: st.DrawFn) -> dict[str, Any]:
    body = draw(
        st.fixed_dictionaries(
            {
                "token": mostly(st.uuids().map(str), form_text),
                "qty_margherita": mostly(st.sampled_from(["1", "2"]), form_value),
            },
            optional={
                "area": mostly(st.text(plain, max_size=64), form_value),
                "note": mostly(st.text(plain, max_size=500), form_value),
                "customer_name": mostly(st.text(plain, max_size=100), form_value),
                "address": mostly(st.just("1 Harbour Street"), form_value),
                "phone": mostly(st.just("020 7946 0958"), form_value),
                **{
                    f"qty_{slug}": mostly(st.sampled_from(["0", "1", "20"]), form_value, one_in=12)
                    for slug in SLUGS[1:]
                },
                **{f"size_{slug}": mostly(st.sampled_from(Size.values), form_value, one_in=12) for slug in SLUGS},
            },
        )
    )
    if draw(st.booleans()):
        body["kind"], body["shop"] = "takeaway", draw(mostly(st.just(SHOP), form_value))
    else:
        body["kind"] = draw(mostly(st.just("delivery"), form_text))
        if hostile_now(draw):
            body["shop"] = draw(form_value)
    return body


@pytest.mark.django_db
@FUZZ
@given(body=form_bodies())
def test_the_order_form_never_fails_and_a_refused_order_writes_nothing(
    unthrottled_staff: Client, body: dict[str, str]
) -> None:
    cache.clear()
    before = written()
    known = {str(pk) for pk in Order.objects.values_list("pk", flat=True)}

    response = unthrottled_staff.post("/orders/", body)
    event(f"answered {response.status_code}")

    # 409: a token generated twice, for different orders.
    assert response.status_code in (302, 400, 409), response.content
    if response.status_code in (400, 409):
        assert written() == before
    else:
        order_id = response["Location"].rstrip("/").rsplit("/", 1)[-1]
        # A new order, or the same form sent again (a token generated twice): its first order.
        assert written() == (before if order_id in known else (before[0] + 1, before[1] + 1))
        assert_readable(unthrottled_staff, order_id)
