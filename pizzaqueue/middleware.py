"""Refusing, at the edge, a NUL character in a request's query string.

PostgreSQL refuses a NUL in any text value, a lookup's parameter included, so a
NUL that reaches a filter (an admin list filter or search, say) is a DataError
and a 500 there, and a quiet empty answer on SQLite. Refused here instead, it
is a 400 naming the parameter on both engines. Bodies are checked where they
are read: `orders.intake` for orders (JSON or form), and Django's form fields,
which refuse a NUL themselves; a path segment names a resource, and one with
a NUL names none (a 404, from the view or its URL converter).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.utils.decorators import sync_and_async_middleware

NUL_MESSAGE = "Must not contain NUL characters."


def nul_field(request: HttpRequest) -> str | None:
    """The name of the first query parameter whose name or value holds a NUL."""
    for name, values in request.GET.lists():
        if "\x00" in name or any("\x00" in value for value in values):
            return name.replace("\x00", "\\x00")
    return None


def refusal(request: HttpRequest, field: str) -> HttpResponse:
    """A 400 naming the field, in the API's JSON shape under api/ and as plain text elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse(
            {"detail": "Invalid input.", "code": "invalid", "errors": {field: [NUL_MESSAGE]}}, status=400
        )
    return HttpResponseBadRequest(f"{field}: {NUL_MESSAGE}", content_type="text/plain; charset=utf-8")


@sync_and_async_middleware
def refuse_nul(get_response: Callable[[HttpRequest], Any]) -> Callable[[HttpRequest], Any]:
    # Both kinds, so the ASGI handler needs no thread hop for this middleware.
    if iscoroutinefunction(get_response):

        async def async_middleware(request: HttpRequest) -> HttpResponse:
            field = nul_field(request)
            if field is not None:
                return refusal(request, field)
            response: Awaitable[HttpResponse] = get_response(request)
            return await response

        return async_middleware

    def middleware(request: HttpRequest) -> HttpResponse:
        field = nul_field(request)
        return refusal(request, field) if field is not None else get_response(request)

    return middleware
