"""A web tier as production runs it: real HAProxy, from deploy/haproxy.cfg, in front of daphne processes.

`WebTier` starts N daphne processes (tests.conftest.Daphne, each keeping its
port across restarts) and HAProxy with the shipped config rendered for them
(pizzaqueue.haproxy.render), plus a stats socket so a test can wait for
HAProxy's own view of a server (up after a restart) instead of sleeping.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from pizzaqueue.haproxy import render, web_environment
from tests.base import wait_until
from tests.conftest import Daphne

INSTALL = "apt-get install -y haproxy"


def post_order(url: str, token: str, key: str, body: dict[str, Any]) -> str | None:
    """POST an order to the API as an integrator's client does, with its Idempotency-Key:
    the order's id when it is confirmed (200 or 201), None when the web tier did not
    answer (no answer, a 5xx: the client sends it again). A 4xx fails the test: the
    request was good."""
    request = urllib.request.Request(  # noqa: S310 - our own server
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json", "Idempotency-Key": key},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - our own server
            assert response.status in (200, 201), response.status
            return str(json.load(response)["id"])
    except urllib.error.HTTPError as error:
        assert error.code >= 500, f"{error.code}: {error.read()!r}"
        return None
    except OSError:
        return None


def require_haproxy() -> str:
    """HAProxy's path; skips when it is missing, and fails in CI, which installs it."""
    path = shutil.which("haproxy")
    if path is None:
        message = f"HAProxy is missing: {INSTALL}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


class WebTier:
    def __init__(self, tmp_path: Path, size: int = 2) -> None:
        self.tmp_path = tmp_path
        self.daphnes = [Daphne(tmp_path, name=f"web{n}") for n in range(1, size + 1)]
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.stats = tmp_path / "haproxy.sock"

    def start(self, listen_on: str = "127.0.0.1", **env: str) -> None:
        """The daphnes, then HAProxy on `listen_on` (an address of this machine, or
        0.0.0.0 for hosts in other namespaces to reach it too) and a free port."""
        executable = require_haproxy()
        for daphne in self.daphnes:
            daphne.start(**{**web_environment(), **env})
        # HAProxy takes over a listening socket bound here (`bind fd@N`): no race for the port.
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind((listen_on, 0))
        listener.listen(128)
        self.port = listener.getsockname()[1]
        config = render(f"fd@{listener.fileno()}", [f"127.0.0.1:{d.port}" for d in self.daphnes])
        config = config.replace("\nglobal\n", f"\nglobal\n    stats socket {self.stats} level operator\n", 1)
        path = self.tmp_path / "haproxy.cfg"
        path.write_text(config)
        log = open(self.tmp_path / "haproxy.log", "wb")  # noqa: SIM115 - lives with the process
        self.proc = subprocess.Popen(  # noqa: S603 - our own command
            [executable, "-db", "-f", str(path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            pass_fds=[listener.fileno()],
        )
        listener.close()
        wait_until(lambda: self.servers_up() == len(self.daphnes), timeout=30, what="HAProxy to see every daphne")

    def server_states(self) -> dict[str, str]:
        """HAProxy's own view: server name → UP / DOWN / …"""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
                client.connect(str(self.stats))
                client.sendall(b"show stat\n")
                answer = b""
                while chunk := client.recv(65536):
                    answer += chunk
        except OSError:
            return {}
        rows = csv.DictReader(answer.decode().lstrip("# ").splitlines())
        return {
            row["svname"]: row["status"] for row in rows if row["pxname"] == "daphne" and row["svname"][:3] == "web"
        }

    def servers_up(self) -> int:
        return sum(1 for status in self.server_states().values() if status == "UP")

    def kill(self, daphne: Daphne) -> None:
        """SIGKILL one daphne: its sockets close with it, as when its machine fails."""
        assert daphne.proc is not None
        os.kill(daphne.proc.pid, signal.SIGKILL)
        daphne.proc.wait(timeout=10)

    def restart(self, daphne: Daphne, **env: str) -> None:
        daphne.start(**env)
        wait_until(
            lambda: self.server_states().get(daphne.name) == "UP", timeout=30, what=f"HAProxy to see {daphne.name} up"
        )

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return f"{self.origin}{path}"

    def get(self, path: str) -> int:
        with urllib.request.urlopen(self.url(path), timeout=10) as response:  # noqa: S310 - our own server
            return int(response.status)

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.tmp_path.glob("*.log")))

    def stop(self) -> None:
        for daphne in self.daphnes:
            daphne.stop()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout=10)
