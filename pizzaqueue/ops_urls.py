"""Operations endpoints: health for load balancers, metrics for Prometheus."""

from __future__ import annotations

from django.urls import path

from pizzaqueue import ops

urlpatterns = [
    path("healthz", ops.healthz, name="healthz"),
    path("metrics", ops.metrics, name="metrics"),
]
