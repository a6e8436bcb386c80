"""The Content-Security-Policy header, on every response.

Django 5.2 has no CSP of its own, and one fixed policy needs no library: the
pages load every script and style from this host (`static/`, Swagger UI from
drf-spectacular-sidecar) and run nothing inline, so the policy
(`settings.CONTENT_SECURITY_POLICY`) refuses whatever an injected `<script>`
or an `onclick=` would try.
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponseBase


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        if "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = settings.CONTENT_SECURITY_POLICY
        return response
