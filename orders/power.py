"""Power cuts for the demo: `manage.py shop down NAME` asks, `manage.py demo` does it.

The demo owns its kitchens' processes, so it is the one that cuts a kitchen's
power (SIGKILL: no goodbye, no hand-back, exactly like a power cut) and
starts it again. The request travels through the cache every process
shares (the database's cache table, or Redis), so the command works from any
terminal on any machine that reaches the database, and it knows whether a
demo took the request: the demo deletes the key once it has acted.
"""

from __future__ import annotations

from django.core.cache import cache

DOWN = "down"
UP = "up"
ACTIONS = (DOWN, UP)
# A request nobody takes (no demo running) lapses after this many seconds.
REQUEST_TTL = 30


def _key(shop: str) -> str:
    return f"pizzaqueue:demo:power:{shop}"


def request(shop: str, action: str) -> None:
    """Ask the running demo to take `shop` down or bring it up."""
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {', '.join(ACTIONS)}, not {action!r}")
    cache.set(_key(shop), action, REQUEST_TTL)


def pending(shops: list[str]) -> dict[str, str]:
    """The demo's look: each of its shops with a request waiting, and the action asked."""
    found = cache.get_many([_key(shop) for shop in shops])
    return {shop: found[_key(shop)] for shop in shops if found.get(_key(shop)) in ACTIONS}


def taken(shop: str) -> None:
    """The demo acted on the request (or refused it with a message in its terminal)."""
    cache.delete(_key(shop))


def waiting(shop: str) -> bool:
    """Whether the request is still there, not yet taken by a demo."""
    return cache.get(_key(shop)) is not None


def withdraw(shop: str) -> None:
    """Nobody took it: remove it, so a demo started later does not act on an old request."""
    cache.delete(_key(shop))
