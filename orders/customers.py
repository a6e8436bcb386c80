"""A web customer without an account: the browser that placed an order.

The first order a browser places gives its session a random *placing key*,
recorded on the order (`Order.placed_by_session`). Holding the session is
what lets that browser, and only that browser, change the order later
(cancel it); anyone with the order's link may still follow it. The key is not
the session key itself: that is a credential, rotated on login, and would be
readable by anyone who can read the orders table.
"""

from __future__ import annotations

import secrets

from django.http import HttpRequest

from workers import queue

SESSION_KEY = "pizzaqueue_placing_key"


def placing_key(request: HttpRequest, create: bool = False) -> str:
    """This browser's placing key; "" if it has placed nothing (and `create` is off)."""
    key = request.session.get(SESSION_KEY, "")
    if not key and create:
        key = secrets.token_urlsafe(32)
        request.session[SESSION_KEY] = key
    return key


def owner(request: HttpRequest) -> queue.Owner:
    """Who places an order from this request: the logged-in user, if any, and the browser."""
    user = request.user
    return queue.Owner(user_id=user.pk if user.is_authenticated else None, session=placing_key(request, create=True))
