"""A request body over the limit is refused before it is read (SPEC §9): on its
Content-Length alone, or, sent without one, as soon as it passes the limit.
Through a real daphne, which otherwise reads a whole body before Django sees it."""

from __future__ import annotations

import json
import socket

import pytest
from django.conf import settings

from tests.conftest import Daphne

pytestmark = [pytest.mark.processes, pytest.mark.django_db(transaction=True)]

TOO_LARGE = {"detail": "Request body larger than 65536 bytes.", "code": "too_large"}


def answer(conn: socket.socket) -> tuple[int, dict[str, object]]:
    """The status and JSON body of the response on the connection (read until it closes)."""
    data = b""
    while chunk := conn.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


def request_head(daphne: Daphne, *headers: str) -> bytes:
    lines = ["POST /api/orders/ HTTP/1.1", f"Host: 127.0.0.1:{daphne.port}", "Content-Type: application/json", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_a_declared_length_over_the_limit_is_refused_before_any_body_is_sent(daphne: Daphne) -> None:
    daphne.start()
    with socket.create_connection(("127.0.0.1", daphne.port), timeout=10) as conn:
        conn.sendall(request_head(daphne, f"Content-Length: {50 * 1024 * 1024}"))
        # Not one byte of the 50 MB follows: the server answers on the header alone.
        assert answer(conn) == (413, TOO_LARGE)


def test_a_chunked_body_is_cut_off_once_it_passes_the_limit(daphne: Daphne) -> None:
    daphne.start()
    chunk = b"x" * 16384
    with socket.create_connection(("127.0.0.1", daphne.port), timeout=10) as conn:
        conn.sendall(request_head(daphne, "Transfer-Encoding: chunked"))
        for _ in range(settings.DATA_UPLOAD_MAX_MEMORY_SIZE // len(chunk) + 1):
            conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        # No final chunk is ever sent: only a server that stops reading can answer.
        assert answer(conn) == (413, TOO_LARGE)


def test_a_body_within_the_limit_is_read_and_answered(daphne: Daphne) -> None:
    daphne.start()
    body = json.dumps({"items": []}).encode()
    with socket.create_connection(("127.0.0.1", daphne.port), timeout=10) as conn:
        conn.sendall(request_head(daphne, f"Content-Length: {len(body)}", "Connection: close") + body)
        status, _body = answer(conn)
    assert status == 401  # read in full and handled: no token
