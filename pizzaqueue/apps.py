"""The project's app configurations: kept apart from the admin site, whose module
imports models and so may be imported only once the apps are loaded."""

from __future__ import annotations

from django.contrib.admin.apps import AdminConfig


class PizzaqueueAdminConfig(AdminConfig):
    """django.contrib.admin with the project's site (`pizzaqueue.admin_site`): in the shop's
    words, its door on the roles."""

    default_site = "pizzaqueue.admin_site.OperationsAdminSite"
