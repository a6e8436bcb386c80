"""Prometheus metrics, read from the database at scrape time.

The workers are separate processes (often on other machines), so in-process
counters in the web process would see nothing of their work. The event rows
already record every claim, completion, retry and lost lease, so the web
process keeps its counters by reading the events committed since its last
scrape, in id order — an indexed range scan whose cost is proportional to the
new events, never to the size of the table. Counters start at zero at the
process's first scrape (the first read of the events' high-water mark), and
their help text says so; Prometheus's `rate()` takes the reset in its stride.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta

from django.db.models import Count, Max
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from orders.deadlines import late_count, overdue_stages
from workers import clock
from workers.models import Bucket, Order, OrderEvent, Worker

# Seconds; pickup is milliseconds on PostgreSQL, orders take minutes in a real kitchen.
PICKUP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
ORDER_BUCKETS = (0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600, 1200, 3600)
# Seconds a made order waits at its shop, and a driver takes from shelf to door.
HANDOVER_BUCKETS = (5, 15, 30, 60, 120, 300, 600, 900, 1200, 1800, 2700, 3600, 7200)
# Most events read per scrape; a backlog is caught up over the next scrapes.
MAX_EVENTS_PER_SCRAPE = 100_000


class _Histogram:
    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.total += value
        for index, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[index] += 1
                return
        self.counts[-1] += 1

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        cumulative, running = [], 0
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            cumulative.append((bound, running))
        return HistogramMetricFamily(name, documentation, buckets=cumulative, sum_value=self.total)


class QueueCollector(Collector):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_event_id: int | None = None
        self._events: Counter[str] = Counter()
        self._pickup = _Histogram(PICKUP_BUCKETS)
        self._order = _Histogram(ORDER_BUCKETS)
        self._overdue_retries = 0
        self._shelf = _Histogram(HANDOVER_BUCKETS)
        self._delivery = _Histogram(HANDOVER_BUCKETS)

    def _read_new_events(self) -> None:
        if self._last_event_id is None:
            self._last_event_id = OrderEvent.objects.aggregate(m=Max("id"))["m"] or 0
            return
        rows = list(
            OrderEvent.objects.filter(id__gt=self._last_event_id)
            .order_by("id")
            .values_list("id", "kind", "created_at", "data", "order__created_at")[:MAX_EVENTS_PER_SCRAPE]
        )
        for event_id, kind, created_at, data, order_created in rows:
            self._events[kind] += 1
            waited = (created_at - order_created).total_seconds()
            if kind == OrderEvent.Kind.CLAIMED and data.get("attempt") == 1:
                self._pickup.observe(max(waited, 0.0))
            elif kind == OrderEvent.Kind.DONE:
                self._order.observe(max(waited, 0.0))
            elif kind == OrderEvent.Kind.OUT_FOR_DELIVERY and data.get("shelf_seconds") is not None:
                self._shelf.observe(float(data["shelf_seconds"]))
            elif kind == OrderEvent.Kind.DELIVERED and data.get("delivery_seconds") is not None:
                self._delivery.observe(float(data["delivery_seconds"]))
            elif kind == OrderEvent.Kind.RETRIED and data.get("reason") == "stage-overdue":
                self._overdue_retries += 1
            self._last_event_id = event_id

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            self._read_new_events()
            events = CounterMetricFamily(
                "pizzaqueue_events",
                "Order events committed since this web process was first scraped, by kind.",
                labels=["kind"],
            )
            for kind in OrderEvent.Kind.values:
                events.add_metric([kind], self._events[kind])
            yield events
            yield self._pickup.family("pizzaqueue_pickup_seconds", "From placing an order to its first claim.")
            yield self._order.family("pizzaqueue_order_seconds", "From placing an order to done.")
            yield self._shelf.family(
                "pizzaqueue_shelf_seconds", "From a delivery order made (done) to a driver taking it off the shelf."
            )
            yield self._delivery.family(
                "pizzaqueue_delivery_seconds", "From a driver taking a delivery order to it delivered and paid."
            )
            yield CounterMetricFamily(
                "pizzaqueue_stage_overdue_retries",
                "Orders given to another kitchen because a stage overran its limit, since this web process was first scraped.",
                value=self._overdue_retries,
            )

        depth = GaugeMetricFamily("pizzaqueue_orders", "Orders waiting or in the oven, by status.", labels=["status"])
        # Both counts are served by partial indexes that finished orders are not in.
        counts = dict(
            Order.objects.filter(status__in=[Order.Status.QUEUED, Order.Status.PREPARING])
            .values_list("status")
            .annotate(n=Count("id"))
        )
        for status in (Order.Status.QUEUED, Order.Status.PREPARING):
            depth.add_metric([status], counts.get(status, 0))
        yield depth
        handover = GaugeMetricFamily(
            "pizzaqueue_orders_awaiting_handover",
            "Made orders not yet handed over, by where they are: counter, shelf, out (with a driver).",
            labels=["at"],
        )
        # Served by `order_handover_pending_idx`, which holds only these.
        waiting = dict(Order.objects.awaiting_handover().values_list("handover").annotate(n=Count("id")).order_by())
        for step in Order.HANDOVER_PENDING:
            handover.add_metric([step], waiting.get(step, 0))
        yield handover

        now = clock.now()
        yield GaugeMetricFamily(
            "pizzaqueue_stages_overdue",
            "Orders in a kitchen whose current stage has gone without progress past its limit.",
            value=len(overdue_stages(now)),
        )
        yield GaugeMetricFamily(
            "pizzaqueue_orders_late",
            "Unfinished orders past their promised time, counted from when each became due.",
            value=late_count(now),
        )
        ages = GaugeMetricFamily(
            "pizzaqueue_worker_heartbeat_age_seconds",
            "Seconds since each live worker's last heartbeat.",
            labels=["worker"],
        )
        for name, beat in Worker.objects.live().values_list("name", "last_heartbeat"):
            ages.add_metric([name], (now - beat).total_seconds())
        yield ages
        workers = GaugeMetricFamily(
            "pizzaqueue_workers", "Workers seen in the last hour, by status.", labels=["status"]
        )
        recent = dict(
            Worker.objects.filter(last_heartbeat__gte=now - timedelta(hours=1))
            .values_list("status")
            .annotate(n=Count("id"))
        )
        for worker_status in Worker.Status.values:
            workers.add_metric([worker_status], recent.get(worker_status, 0))
        yield workers
        yield GaugeMetricFamily(
            "pizzaqueue_buckets_orphaned", "Buckets without a live owner.", value=Bucket.objects.orphaned().count()
        )


registry = CollectorRegistry(auto_describe=False)
registry.register(QueueCollector())
