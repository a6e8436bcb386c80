"""`GET /api/stats/`: the queue at a glance, without counting a big table."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from django.db import connection
from django.db.models import Count
from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from orders import sql
from orders.api import _errors
from orders.serializers import StatsSerializer
from workers import clock
from workers.models import Order, OrderEvent, Worker

# Above this many orders (the planner's estimate), finished orders are estimated, not counted.
EXACT_COUNT_BELOW = 100_000


def _planner_rows(statement: str, params: list[Any]) -> int:
    """The row estimate of an `EXPLAIN (FORMAT JSON)` statement."""
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        plan = cursor.fetchone()[0]
    plan = json.loads(plan) if isinstance(plan, str) else plan
    return int(plan[0]["Plan"]["Plan Rows"])


def order_counts() -> dict[str, dict[str, Any]]:
    """Orders by status without counting a big table.

    Queued and preparing are exact (their partial indexes make that cheap
    and they are what operators act on). Finished orders pile up: on
    PostgreSQL, past EXACT_COUNT_BELOW rows they are the planner's estimates
    from `pg_class.reltuples` and the column statistics.
    """
    counts = {s: {"count": 0, "exact": True} for s in Order.Status.values}
    estimate = (
        connection.vendor == "postgresql" and _planner_rows(sql.queries["estimate_orders"], []) >= EXACT_COUNT_BELOW
    )
    exact = (
        Order.objects.filter(status__in=[Order.Status.QUEUED, Order.Status.PREPARING])
        if estimate
        else Order.objects.all()
    )
    for status_value, n in exact.order_by().values_list("status").annotate(n=Count("*")):
        counts[status_value]["count"] = n
    if estimate:
        for status_value in Order.FINAL_STATUSES:
            rows = _planner_rows(sql.queries["estimate_orders_with_status"], [status_value])
            counts[status_value] = {"count": rows, "exact": False}
    return counts


class StatsView(APIView):
    @extend_schema(responses={200: StatsSerializer, **_errors(401, 403)})
    def get(self, request: Request) -> Response:
        """Queue depth by status, throughput over the last minute, live kitchens."""
        now = clock.now()
        done = OrderEvent.objects.done_since(now - timedelta(minutes=1))
        data = {
            "orders": order_counts(),
            "done_last_minute": done,
            "throughput_per_second": round(done / 60, 2),
            "live_workers": Worker.objects.live().count(),
            "generated_at": now,
        }
        return Response(StatsSerializer(data).data)
