"""Which address a request comes from, trusting exactly the configured proxies.

`X-Forwarded-For` is a list anyone can write to: only the entries that the
trusted proxies appended are true. So the header counts only when the peer is
a trusted proxy (`PIZZAQUEUE_TRUSTED_PROXIES`), and it is read from the right:
past every address that is a trusted proxy, the first one that is not is the
client. With no trusted proxies (the default) the header is ignored and the
peer is the client. The web form's throttle, the WebSocket limits and the
`/metrics` allow-list all ask here.
"""

from __future__ import annotations

import ipaddress
from functools import cache
from typing import Any

from django.conf import settings
from django.http import HttpRequest

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@cache
def _networks(entries: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


def within(address: str, entries: list[str] | tuple[str, ...]) -> bool:
    """Whether the address is in any of the networks (addresses or CIDRs)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in _networks(tuple(entries)))


def client_address(peer: str, forwarded_for: str | None) -> str:
    """The client's address, from the peer's and the X-Forwarded-For header's."""
    trusted = settings.PIZZAQUEUE_TRUSTED_PROXIES
    if not trusted or not forwarded_for or not within(peer, trusted):
        return peer
    nearest = peer
    for hop in reversed([hop.strip() for hop in forwarded_for.split(",") if hop.strip()]):
        try:
            address = str(ipaddress.ip_address(hop))
        except ValueError:
            # Not an address: written by the client itself, so the hop that passed it on is as near as it gets.
            return nearest
        if not within(address, trusted):
            return address
        nearest = address
    return nearest


def request_client(request: HttpRequest) -> str:
    return client_address(request.META.get("REMOTE_ADDR", ""), request.META.get("HTTP_X_FORWARDED_FOR"))


def scope_client(scope: dict[str, Any]) -> str:
    """The client of a WebSocket connection (an ASGI scope)."""
    peer = (scope.get("client") or ("",))[0] or ""
    forwarded = [value.decode("latin-1") for name, value in scope.get("headers", []) if name == b"x-forwarded-for"]
    return client_address(peer, ",".join(forwarded) or None)
