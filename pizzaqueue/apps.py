"""The project's app configurations."""

from __future__ import annotations

from django.contrib.admin.apps import AdminConfig


class PizzaqueueAdminConfig(AdminConfig):
    """django.contrib.admin with the project's site (`pizzaqueue.admin_site`), imported once apps are loaded."""

    default_site = "pizzaqueue.admin_site.PizzaqueueAdminSite"
