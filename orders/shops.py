"""What customers call a shop: its display name, never a kitchen's internal name or incarnation.

A kitchen registers under a name operators use (`shop-2`, `staffed-1`);
customers read the shop's display name from PIZZAQUEUE_SHOP_NAMES
(`shop-1=Harbour Street,shop-2=Old Town`). A shop without one is shown
by its name in words ("Shop 2"), which is still better than a slug.
"""

from __future__ import annotations

from django.conf import settings


def display_name(name: str | None) -> str:
    """The customer's name for the shop called `name` ("" for none)."""
    if not name:
        return ""
    named = settings.PIZZAQUEUE_SHOP_NAMES.get(name)
    if named:
        return str(named)
    return name.replace("-", " ").replace("_", " ").strip().capitalize()
