"""Request bodies bounded in daphne itself, before they are read.

Daphne's HTTP server (Twisted's) reads a request's whole body, into memory or
a temporary file, before the application sees any of it: a check in Django
(`DATA_UPLOAD_MAX_MEMORY_SIZE`, the API's parser) comes only after a
gigabyte has been taken in. Twisted tells the request its declared length as
soon as the headers are in (`gotLength`) and hands it the body chunk by chunk
(`handleContentChunk`). Refusing there answers 413 on the Content-Length
alone, and caps a body sent without one (chunked) as it arrives; the
connection is closed, since the rest of the body is never read.

`install` patches daphne's request class; `pizzaqueue/asgi.py` calls it, so
it applies wherever daphne serves this application. The ASGI handler checks
too (`OneHopASGIHandler`), for any other server.
"""

from __future__ import annotations

import io
import json
import logging
from typing import Any

from django.conf import settings

logger = logging.getLogger(__name__)


def too_large_body() -> bytes:
    """The API's 413 body (orders/api.py answers the same)."""
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return json.dumps({"detail": f"Request body larger than {limit} bytes.", "code": "too_large"}).encode()


def _refuse(request: Any) -> None:
    if getattr(request, "_pizzaqueue_refused", False):
        return
    request._pizzaqueue_refused = True
    request.content = io.BytesIO()  # keep nothing more of this body
    body = too_large_body()
    head = (
        b"HTTP/1.1 413 Payload Too Large\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
    )
    peer = request.channel.transport.getPeer()
    logger.warning("refused a request body over the limit from %s", getattr(peer, "host", peer))
    request.channel.transport.write(head + body)
    request.channel.transport.loseConnection()


def install() -> None:
    """Make daphne's requests refuse a body over DATA_UPLOAD_MAX_MEMORY_SIZE."""
    from daphne.http_protocol import WebRequest

    if getattr(WebRequest, "_pizzaqueue_bounded", False):
        return
    got_length, content_chunk, received = (
        WebRequest.gotLength,
        WebRequest.handleContentChunk,
        WebRequest.requestReceived,
    )

    def gotLength(self: Any, length: int | None) -> None:  # noqa: N802 - Twisted's name
        self._pizzaqueue_read = 0
        got_length(self, length)
        if length is not None and length > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
            _refuse(self)

    def handleContentChunk(self: Any, data: bytes) -> None:  # noqa: N802 - Twisted's name
        if getattr(self, "_pizzaqueue_refused", False):
            return
        self._pizzaqueue_read = getattr(self, "_pizzaqueue_read", 0) + len(data)
        if self._pizzaqueue_read > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
            _refuse(self)
            return
        content_chunk(self, data)

    def requestReceived(self: Any, command: bytes, path: bytes, version: bytes) -> None:  # noqa: N802
        if getattr(self, "_pizzaqueue_refused", False):
            return  # answered already; the application never sees it
        received(self, command, path, version)

    WebRequest.gotLength = gotLength
    WebRequest.handleContentChunk = handleContentChunk
    WebRequest.requestReceived = requestReceived
    WebRequest._pizzaqueue_bounded = True
