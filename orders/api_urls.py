"""Routes of the REST API, its OpenAPI schema and its docs, all under api/."""

from __future__ import annotations

from django.urls import include, path, re_path
from rest_framework.routers import SimpleRouter

from orders import api, stats

router = SimpleRouter()
router.register("orders", api.OrderViewSet, basename="order")
router.register("workers", api.WorkerViewSet, basename="worker")
router.register("buckets", api.BucketViewSet, basename="bucket")

urlpatterns = [
    path("api/", include(router.urls)),
    path("api/stats/", stats.StatsView.as_view(), name="stats"),
    path("api/schema/", api.SchemaView.as_view(), name="schema"),
    path("api/docs/", api.DocsView.as_view(url_name="schema"), name="docs"),
    # Anything else under api/ is a JSON 404, like every other API error.
    re_path(r"^api/(?P<path>.*)$", api.not_found),
]
