"""Health and metrics endpoints."""

from __future__ import annotations

from typing import Any
from unittest import mock

import pytest
from django.db import OperationalError
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from orders.metrics import QueueCollector
from tests.base import make_worker
from tests.factory import make_order
from workers import queue

pytestmark = pytest.mark.django_db


def samples(collector: QueueCollector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_healthz_answers_ok_when_the_database_answers(client: Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok"}


def test_healthz_answers_503_when_the_database_does_not(client: Client) -> None:
    with mock.patch("django.db.backends.utils.CursorWrapper.execute", side_effect=OperationalError("gone")):
        response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["database"] == "unreachable"


def test_metrics_count_the_work_done_since_the_first_scrape(menu: None) -> None:
    collector = QueueCollector()
    worker = make_worker("oven-1")
    samples(collector)  # the first scrape starts the counters at zero
    first, second, third = make_order(), make_order(), make_order()
    claims = {c.order.pk: c for c in queue.claim(worker.pk, 2)}
    for order_id, claim in claims.items():
        queue.complete(order_id, claim.token, worker.pk)

    values = samples(collector)

    assert values[("pizzaqueue_events_total", (("kind", "placed"),))] == 3
    assert values[("pizzaqueue_events_total", (("kind", "claimed"),))] == 2
    assert values[("pizzaqueue_events_total", (("kind", "done"),))] == 2
    assert values[("pizzaqueue_pickup_seconds_count", ())] == 2
    assert values[("pizzaqueue_order_seconds_count", ())] == 2
    assert values[("pizzaqueue_orders", (("status", "queued"),))] == 1
    assert values[("pizzaqueue_orders", (("status", "preparing"),))] == 0
    assert values[("pizzaqueue_worker_heartbeat_age_seconds", (("worker", "oven-1"),))] >= 0
    assert values[("pizzaqueue_buckets_orphaned", ())] == 0
    assert {first.pk, second.pk, third.pk} >= set(claims)


def test_metrics_endpoint_serves_prometheus_text(client: Client, menu: None) -> None:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    assert b"pizzaqueue_orders" in response.content


@pytest.mark.django_db
def test_metrics_refuse_an_address_off_the_allow_list(menu: None) -> None:
    response = Client(REMOTE_ADDR="203.0.113.9").get("/metrics")
    assert response.status_code == 403
    assert b"pizzaqueue_" not in response.content
    # A header the client wrote itself is no way in.
    assert Client(REMOTE_ADDR="203.0.113.9").get("/metrics", HTTP_X_FORWARDED_FOR="127.0.0.1").status_code == 403


@pytest.mark.django_db
def test_metrics_admit_the_scrapers_token_from_anywhere(menu: None, settings: Any) -> None:
    settings.PIZZAQUEUE_METRICS_TOKEN = "s3cret-scrape-token"  # noqa: S105
    elsewhere = Client(REMOTE_ADDR="203.0.113.9")
    assert elsewhere.get("/metrics", headers={"Authorization": "Bearer s3cret-scrape-token"}).status_code == 200
    assert elsewhere.get("/metrics", headers={"Authorization": "Bearer guess"}).status_code == 403


@pytest.mark.django_db
def test_metrics_admit_a_configured_network(menu: None, settings: Any) -> None:
    settings.PIZZAQUEUE_METRICS_ALLOW = ["10.1.0.0/16"]
    assert Client(REMOTE_ADDR="10.1.2.3").get("/metrics").status_code == 200
    assert Client(REMOTE_ADDR="127.0.0.1").get("/metrics").status_code == 403
