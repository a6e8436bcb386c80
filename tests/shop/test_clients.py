"""A request's client address believes X-Forwarded-For from the configured proxies only."""

from __future__ import annotations

from typing import Any

import pytest

from orders.clients import client_address


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "client"),
    [
        # No trusted proxy in front: the header is anyone's to write, and ignored.
        ("203.0.113.5", "198.51.100.1", "203.0.113.5"),
        ("10.0.0.1", None, "10.0.0.1"),
        # Through the load balancer: the address it appended.
        ("10.0.0.1", "198.51.100.1", "198.51.100.1"),
        # ... past every trusted hop, whatever the client wrote to the left of them.
        ("10.0.0.1", "6.6.6.6, 198.51.100.1, 10.0.0.2", "198.51.100.1"),
        # Garbage in the header stops the walk at the last hop known to be true.
        ("10.0.0.1", "not-an-address", "10.0.0.1"),
        ("10.0.0.1", "10.0.0.2, ", "10.0.0.2"),
        # Only proxies in the header: the farthest one.
        ("10.0.0.1", "10.0.0.2", "10.0.0.2"),
        ("::1", "2001:db8::7", "2001:db8::7"),
    ],
)
def test_the_client_is_the_first_untrusted_hop_from_the_right(
    settings: Any, peer: str, forwarded_for: str | None, client: str
) -> None:
    settings.PIZZAQUEUE_TRUSTED_PROXIES = ["10.0.0.0/24", "::1"]
    assert client_address(peer, forwarded_for) == client


def test_with_no_trusted_proxies_the_header_is_ignored(settings: Any) -> None:
    settings.PIZZAQUEUE_TRUSTED_PROXIES = []
    assert client_address("127.0.0.1", "198.51.100.1") == "127.0.0.1"
