"""The shipped HAProxy config (deploy/haproxy.cfg), with its addresses filled in, and
the settings the web processes behind it need (deploy/web.env).

`demo --web N` and the web-tier tests run HAProxy from this one file, and their
daphne processes with that environment, so what they prove is what operators
are given: only the listening address and the daphne servers are replaced.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from django.conf import settings


def shipped_config() -> Path:
    return Path(settings.BASE_DIR) / "deploy" / "haproxy.cfg"


def web_environment() -> dict[str, str]:
    """deploy/web.env as a dict: what every daphne behind the shipped HAProxy runs with
    (`PIZZAQUEUE_TRUSTED_PROXIES`, so each client is itself, not the proxy)."""
    entries = {}
    for line in (Path(settings.BASE_DIR) / "deploy" / "web.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            entries[name.strip()] = value.strip()
    return entries


def render(bind: str, servers: Sequence[str]) -> str:
    """deploy/haproxy.cfg listening on `bind` ("host:port") in front of `servers` ("host:port" each)."""
    text = shipped_config().read_text()
    text, binds = re.subn(r"(?m)^(\s*bind )\S+$", lambda m: f"{m.group(1)}{bind}", text)
    lines = "".join(f"    server web{n} {address}\n" for n, address in enumerate(servers, start=1))
    text, blocks = re.subn(r"(?m)(^\s*server \S+ \S+\n)+", lambda m: lines, text)
    if binds != 1 or blocks != 1:
        raise ValueError(f"{shipped_config()} needs one bind line and one block of server lines")
    return text
