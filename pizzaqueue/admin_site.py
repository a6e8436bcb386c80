"""The admin site operators use, in the shop's words.

The engine names its tables after what they are to a queue (workers, order
events); operators read the same things as the site names them (kitchens,
the order's timeline), so the admin index and headings use those words
(docs/glossary.md). The board and admin link to each other.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig
from django.http import HttpRequest

# Each model's name in the admin index where the site's word differs from the table's.
MODEL_NAMES = {
    "Worker": "Kitchens",
    "OrderEvent": "Order timeline events",
    "BucketMove": "Bucket moves",
    "MonitorLease": "Monitor lease",
    "KitchenStaff": "Kitchen staff",
}
APP_NAMES = {"workers": "Orders and kitchens", "orders": "Menu and staff"}


class OperationsAdminSite(admin.AdminSite):
    site_header = "pizzaqueue operations"
    site_title = "pizzaqueue admin"
    index_title = "Orders, kitchens and the menu"
    # No "View site": the header links the operations board and the menu (templates/admin/base_site.html).
    site_url = None
    # The lists need the width (an order's list fits 1280 px without it); the index links every table.
    enable_nav_sidebar = False

    def get_app_list(self, request: HttpRequest, app_label: str | None = None) -> list[dict[str, Any]]:
        apps = super().get_app_list(request, app_label)
        for app in apps:
            app["name"] = APP_NAMES.get(app["app_label"], app["name"])
            for model in app["models"]:
                model["name"] = MODEL_NAMES.get(model["object_name"], model["name"])
        return apps


class OperationsAdminConfig(AdminConfig):
    default_site = "pizzaqueue.admin_site.OperationsAdminSite"
