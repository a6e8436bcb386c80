"""The admin site operators use, in the shop's words, with its door on the roles.

The engine names its tables after what they are to a queue (workers, order
events); operators read the same things as the site names them (kitchens,
the order's timeline), so the admin index and headings use those words
(docs/glossary.md). The board and admin link to each other.

Django's admin lets in `is_staff` users and then shows each model by its
view and change permissions. The operators' role is those permissions, so an
operator whose account lacks `is_staff` would be turned away here while the
API, the board and its stream let them in (`workers.models.reads_every_order`).
This site lets in whoever reads every order as well; behind the door Django's
permissions decide, as before.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.http import HttpRequest

from workers.models import reads_every_order

# Each model's name in the admin index where the site's word differs from the table's.
MODEL_NAMES = {
    "Worker": "Kitchens",
    "OrderEvent": "Order timeline events",
    "BucketMove": "Bucket moves",
    "MonitorLease": "Monitor lease",
    "KitchenStaff": "Kitchen staff",
}
APP_NAMES = {"workers": "Orders and kitchens", "orders": "Menu and staff"}


def may_enter(user: Any) -> bool:
    return bool(user.is_active and (user.is_staff or reads_every_order(user)))


class OperatorsAuthenticationForm(AdminAuthenticationForm):
    """The admin's login form, letting in whom the site lets in."""

    def confirm_login_allowed(self, user: Any) -> None:
        if not may_enter(user):
            super().confirm_login_allowed(user)  # refuses, with Django's own message


class OperationsAdminSite(admin.AdminSite):
    login_form = OperatorsAuthenticationForm
    site_header = "pizzaqueue operations"
    site_title = "pizzaqueue admin"
    index_title = "Orders, kitchens and the menu"
    # No "View site": the header links the operations board and the menu (templates/admin/base_site.html).
    site_url = None
    # The lists need the width (an order's list fits 1280 px without it); the index links every table.
    enable_nav_sidebar = False

    def has_permission(self, request: HttpRequest) -> bool:
        return may_enter(request.user)

    def get_app_list(self, request: HttpRequest, app_label: str | None = None) -> list[dict[str, Any]]:
        apps = super().get_app_list(request, app_label)
        for app in apps:
            app["name"] = APP_NAMES.get(app["app_label"], app["name"])
            for model in app["models"]:
                model["name"] = MODEL_NAMES.get(model["object_name"], model["name"])
        return apps
