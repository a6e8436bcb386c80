"""The staff login form, throttled (SPEC §9: throttles count across every web process).

Failed guesses are limited per client address and per username, each at
`REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["login"]` (PIZZAQUEUE_LOGIN_RATE),
with the same DRF rate machinery and shared cache as the order form's
throttle (`orders.views.FormIntakeThrottle`): one more scope, no new
dependency. django-axes would add its own tables, middleware and
authentication backend to count what the shared cache already counts.

Per address stops one client guessing many accounts; per username stops many
addresses guessing one. Every attempt counts, a successful one too, so the
throttle never tells a right password from a wrong one; at a human's pace
it is never met. A throttled attempt is refused before its password is
checked, with 429 and Retry-After.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from typing import Any

from django.contrib.auth.views import LoginView
from django.http import HttpRequest, HttpResponse
from rest_framework.throttling import SimpleRateThrottle

from orders import clients


class LoginThrottle(SimpleRateThrottle):
    """Login attempts for one key: a client address or a username."""

    scope = "login"

    def __init__(self, ident: str) -> None:
        self.ident = ident
        super().__init__()

    def get_cache_key(self, request: Any, view: Any) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.ident}


def throttles(request: HttpRequest) -> list[LoginThrottle]:
    username = request.POST.get("username", "")[:150].strip().lower()
    # Hashed: a cache key holds no user's name, and any text makes a valid key.
    user_key = hashlib.sha256(username.encode("utf-8", "replace")).hexdigest()
    return [LoginThrottle(f"address:{clients.request_client(request)}"), LoginThrottle(f"user:{user_key}")]


def refused(request: HttpRequest) -> float | None:
    """Seconds to wait when this login attempt is over a limit (it is then refused
    unchecked); None when it may go on. Counts the attempt either way."""
    waits = [t.wait() or 60 for t in throttles(request) if not t.allow_request(request, None)]  # type: ignore[arg-type]
    return max(waits) if waits else None


def throttled(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """A login view (the admin's) whose POSTs are throttled, refused with a plain 429."""

    @functools.wraps(view)
    def login(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.method == "POST" and (wait := refused(request)) is not None:
            response = HttpResponse(TOO_MANY.format(wait), status=429, content_type="text/plain")
            response["Retry-After"] = f"{wait:.0f}"
            return response
        return view(request, *args, **kwargs)

    return login


TOO_MANY = "Too many login attempts; try again in {:.0f} seconds."


class ThrottledLoginView(LoginView):
    """The staff login page: a throttled attempt gets the form again, with why, and 429."""

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        wait = refused(request)
        if wait is None:
            return super().post(request, *args, **kwargs)
        context = self.get_context_data(form=self.get_form_class()(request), throttled=TOO_MANY.format(wait))
        response = self.render_to_response(context, status=429)
        response["Retry-After"] = f"{wait:.0f}"
        return response
