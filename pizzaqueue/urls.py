"""Top-level URL routes: the REST API, the web pages, admin and operations."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from orders import logins

urlpatterns = [
    # The admin's own login form, throttled as the staff login page is (`orders.logins`).
    path("admin/login/", logins.throttled(admin.site.login)),
    path("admin/", admin.site.urls),
    path("", include("pizzaqueue.ops_urls")),
    path("", include("orders.api_urls")),
    path("", include("orders.web_urls")),
]
