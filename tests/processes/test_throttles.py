"""Throttles count across every web process (SPEC §9): two real daphne processes
share one count, through the database cache by default and Redis when REDIS_URL is set."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection
from rest_framework.authtoken.models import Token

from orders import roles
from tests.base import in_role, wait_until
from tests.conftest import Daphne
from tests.factory import order_data

pytestmark = [pytest.mark.processes, pytest.mark.django_db(transaction=True)]

REDIS_SERVER = shutil.which("redis-server")


@contextlib.contextmanager
def redis_server(tmp_path: Path) -> Iterator[str]:
    """A throwaway redis-server on a free port of 127.0.0.1, nothing written to disk."""
    if REDIS_SERVER is None:
        message = "redis-server is missing: apt-get install redis-server"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
    )
    try:

        def answers() -> bool:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
            return False

        wait_until(answers, timeout=10, what="redis-server")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.terminate()
        server.wait(timeout=10)


def post_order(server: Daphne, token: str) -> int:
    request = urllib.request.Request(  # noqa: S310 - our own server
        server.url("/api/orders/"),
        data=json.dumps(order_data()).encode(),
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - our own server
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.mark.parametrize("backend", ["database", "redis"])
def test_two_web_processes_share_one_throttle_count(live_menu: None, tmp_path: Path, backend: str) -> None:
    env = {"PIZZAQUEUE_API_CREATE_RATE": "4/minute"}
    with contextlib.ExitStack() as stack:
        if backend == "redis":
            env["REDIS_URL"] = stack.enter_context(redis_server(tmp_path))
        servers = []
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            server = Daphne(tmp_path / name)
            stack.callback(server.stop)
            server.start(**env)
            servers.append(server)
        token = Token.objects.create(user=in_role(User.objects.create_user("ivy"), roles.INTEGRATORS)).key

        # Alternating between the two processes: each alone would allow 4.
        statuses = [post_order(servers[n % 2], token) for n in range(6)]

        assert statuses == [201, 201, 201, 201, 429, 429]
        # And the count is where the settings say.
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT cache_key FROM {settings.CACHE_TABLE}")  # noqa: S608 - the setting's name
            in_table = [key for (key,) in cursor.fetchall()]
        if backend == "redis":
            assert in_table == []
            assert redis.Redis.from_url(env["REDIS_URL"]).keys("*throttle_order-create*")
        else:
            assert [key for key in in_table if "throttle_order-create" in key]
