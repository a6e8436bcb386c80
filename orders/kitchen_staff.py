"""Who may work a kitchen's display: one check, so roles can replace it in one place."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse


def may_work_in(user: Any, shop: str) -> bool:
    """Whether `user` may tap orders through the stages of the kitchen named `shop`.

    Staff for now: every staff member may work every kitchen.
    """
    return bool(user.is_active and user.is_staff)


def kitchen_staff_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """For views of one kitchen (a `name` argument): anyone else goes to the login page."""

    @wraps(view)
    def checked(request: HttpRequest, *args: Any, name: str, **kwargs: Any) -> HttpResponse:
        if not may_work_in(request.user, name):
            return redirect_to_login(request.get_full_path())
        return view(request, *args, name=name, **kwargs)

    return checked
