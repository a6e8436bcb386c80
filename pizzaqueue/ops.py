"""Health and metrics views."""

from __future__ import annotations

import hmac
import logging

from django.conf import settings
from django.db import DatabaseError, connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from orders import clients
from workers import sql

logger = logging.getLogger(__name__)


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """200 when the database answers, 503 otherwise (for load balancers)."""
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql.queries["ping"])
            cursor.fetchone()
    except DatabaseError as exc:
        logger.warning("health check failed: %s", exc)
        return JsonResponse({"status": "unavailable", "database": "unreachable"}, status=503)
    return JsonResponse({"status": "ok", "database": "ok"})


def may_scrape(request: HttpRequest) -> bool:
    """The metrics token (`Authorization: Bearer …`), or an address on the allow-list."""
    token = settings.PIZZAQUEUE_METRICS_TOKEN
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    if token and scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), token.encode()):
        return True
    return clients.within(clients.request_client(request), settings.PIZZAQUEUE_METRICS_ALLOW)


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus text, for Prometheus only: it names the kitchens and their heartbeats."""
    if not may_scrape(request):
        return HttpResponse(
            "A scrape needs the metrics token or an allowed address.\n", status=403, content_type="text/plain"
        )
    from orders.metrics import registry

    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
