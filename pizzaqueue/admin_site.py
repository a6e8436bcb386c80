"""The admin site, with its door on the same rule as every other page (SPEC §9).

Django's admin lets in `is_staff` users and then shows each model by its
view and change permissions. The operators' role is those permissions, so an
operator whose account lacks `is_staff` would be turned away here while the
API, the board and its stream let them in (`workers.models.reads_every_order`).
This site lets in whoever reads every order as well; behind the door Django's
permissions decide, as before.
"""

from __future__ import annotations

from typing import Any

from django.contrib.admin import AdminSite
from django.contrib.admin.forms import AdminAuthenticationForm
from django.http import HttpRequest

from workers.models import reads_every_order


def may_enter(user: Any) -> bool:
    return bool(user.is_active and (user.is_staff or reads_every_order(user)))


class OperatorsAuthenticationForm(AdminAuthenticationForm):
    """The admin's login form, letting in whom the site lets in."""

    def confirm_login_allowed(self, user: Any) -> None:
        if not may_enter(user):
            super().confirm_login_allowed(user)  # refuses, with Django's own message


class PizzaqueueAdminSite(AdminSite):
    login_form = OperatorsAuthenticationForm

    def has_permission(self, request: HttpRequest) -> bool:
        return may_enter(request.user)
