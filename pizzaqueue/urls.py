"""Top-level URL routes: the REST API, the web pages, admin and operations."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
]

# Each interface keeps its routes in its own module, added here once it exists.
for module in ("orders.api_urls", "orders.web_urls", "pizzaqueue.ops_urls"):
    try:
        urlpatterns.append(path("", include(module)))
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise
