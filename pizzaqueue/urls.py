"""Top-level URL routes: the REST API, the web pages, admin and operations."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("pizzaqueue.ops_urls")),
    path("", include("orders.api_urls")),
    path("", include("orders.web_urls")),
]
