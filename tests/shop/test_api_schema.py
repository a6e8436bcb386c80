"""Property-based tests of the API against its own OpenAPI schema (schemathesis).

Every operation in `/api/schema/` is called with generated valid and invalid
input, authenticated with a token, through Django's WSGI handler in this
process (so the test database is shared). No answer may be a 5xx, and every
answer must be one the schema documents: status code, content type, headers
and body shape.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis.openapi
from django.contrib.auth.models import User
from django.core.cache import cache
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.authtoken.models import Token
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from orders import roles
from tests.base import in_role, make_worker
from tests.factory import make_order
from workers.models import Order

FIXTURE_ORDERS = 3
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture
def token(menu: None) -> str:
    return Token.objects.create(user=in_role(User.objects.create_user("fuzzer"), roles.INTEGRATORS)).key


@pytest.fixture
def wsgi_app() -> Iterator[Any]:
    """Django's WSGI handler, kept from closing the test transaction's connection
    between requests (as Django's own test client does)."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield get_wsgi_application()
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def api_schema(token: str, wsgi_app: Any, settings: Any) -> Any:
    # Unthrottled, so generated orders reach the intake code instead of a 429.
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"order-create": None}}
    cache.clear()
    # Something to list, read and cancel: a kitchen, orders in several states.
    make_worker("shop-1")
    for priority in range(FIXTURE_ORDERS):
        make_order(priority=priority, area=f"area-{priority}", placed_by=Token.objects.get(key=token).user)
    return schemathesis.openapi.from_wsgi(
        "/api/schema/?format=json", wsgi_app, headers={"Authorization": f"Token {token}"}
    )


# Every operation the schema serves; test_the_schema_lists_every_operation keeps this honest.
OPERATIONS = [
    ("GET", "/api/orders/"),
    ("POST", "/api/orders/"),
    ("GET", "/api/orders/{id}/"),
    ("POST", "/api/orders/{id}/cancel/"),
    ("GET", "/api/workers/"),
    ("GET", "/api/buckets/"),
    ("GET", "/api/stats/"),
]


@pytest.mark.django_db
def test_the_schema_lists_every_operation(api_schema: Any) -> None:
    served = {(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()}

    assert served == set(OPERATIONS)


def on_the_menu(case: Any) -> Any:
    """Point generated items at real pizzas and open shops, with the contact details their
    kind needs and without a total to check, so valid orders get
    through intake and their 201 bodies are checked too (the schema cannot list
    the menu, which lives in the database)."""
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("items"), list):
        for item in body["items"]:
            if isinstance(item, dict):
                item["pizza"] = "margherita"
        if body.get("kind") == "takeaway":
            body["shop"] = "shop-1"
            body["customer_name"] = "Ada"
            body.pop("address", None)
        else:
            body.pop("shop", None)
            body["address"], body["phone"] = "1 Harbour Street", "+442079460958"
        # The schema cannot know the menu's prices either: a generated total would not match them.
        body.pop("total", None)
    return case


def with_order_id(pair: tuple[Any, str | None]) -> Any:
    case, order_id = pair
    if order_id is not None:
        case.path_parameters["id"] = order_id
    return case


# Negative cases need an input to break; these operations take none.
NO_INPUT = {("GET", "/api/buckets/"), ("GET", "/api/stats/")}
CASES = [
    pytest.param(method, path, mode, id=f"{method} {path} {label}")
    for method, path in OPERATIONS
    for mode, label in [(GenerationMode.POSITIVE, "valid"), (GenerationMode.NEGATIVE, "invalid")]
    if mode == GenerationMode.POSITIVE or (method, path) not in NO_INPUT
]


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "path", "mode"), CASES)
def test_the_api_honours_its_schema_and_never_fails(
    api_schema: Any, token: str, method: str, path: str, mode: GenerationMode
) -> None:
    operation = api_schema[path][method]
    strategy = operation.as_strategy(generation_mode=mode)
    if mode == GenerationMode.POSITIVE:
        strategy = strategy.map(on_the_menu)
    if mode == GenerationMode.POSITIVE and "{id}" in path:
        # Mostly real orders (200 and, once cancelled, 409), sometimes a random id (404).
        known = [str(pk) for pk in Order.objects.values_list("pk", flat=True)]
        strategy = st.tuples(strategy, st.sampled_from([*known, None])).map(with_order_id)

    @given(case=strategy)
    @settings(max_examples=50, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
    def call(case: Any) -> None:
        case.call_and_validate(headers={"Authorization": f"Token {token}"}, checks=CHECKS)

    call()
    if (method, path, mode) == ("POST", "/api/orders/", GenerationMode.POSITIVE):
        assert Order.objects.count() > FIXTURE_ORDERS, "no generated order got through intake"
