"""Where each role belongs: its home page after logging in, the pages it may open, its navigation.

A person who logs in lands on the page of their job (an operator on the
board, kitchen staff on their display, an integrator on the API docs), and
a page that is not theirs sends them there with a sentence saying why,
never back to the login form they just filled in.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.http import HttpRequest
from django.urls import Resolver404, resolve, reverse

from orders import roles
from orders.models import Driver, KitchenStaff
from orders.shops import display_name
from workers.models import reads_every_order

# The pages only operators open, by URL name (and everything under the admin).
OPERATOR_PAGES = {"board": "The operations board"}
KITCHEN_PAGES = {"kitchen", "kitchen-tap", "raise-order-priority", "counter-collect"}
SHELF_PAGES = {"shelf", "shelf-take", "shelf-deliver", "shelf-give-back"}


def kitchen_shops(user: Any) -> list[str]:
    """The shops whose display this person works (kitchen staff), in name order."""
    if not (user.is_authenticated and user.has_perm(roles.WORK_KITCHEN)):
        return []
    return list(KitchenStaff.objects.filter(user=user).order_by("shop").values_list("shop", flat=True))


def driver_shops(user: Any) -> list[str]:
    """The shops whose shelf this person drives for (drivers), in name order."""
    if not (user.is_authenticated and user.has_perm(roles.DRIVE)):
        return []
    return list(Driver.objects.filter(user=user).order_by("shop").values_list("shop", flat=True))


def home_for(user: Any) -> str:
    """The page a person's job starts on."""
    if user.is_authenticated and user.is_active:
        if reads_every_order(user):
            return reverse("board")
        shops = kitchen_shops(user)
        if shops:
            return reverse("kitchen", args=[shops[0]])
        shelves = driver_shops(user)
        if shelves:
            return reverse("shelf", args=[shelves[0]])
        if user.has_perm(roles.PLACE_ORDERS):
            return reverse("docs")
    return reverse("menu")


def refusal(user: Any, path: str) -> str | None:
    """Why this person may not open `path` (a sentence), or None if they may.

    A path that resolves to nothing is theirs to open: it answers 404 itself.
    """
    try:
        match = resolve(urlsplit(path).path)
    except Resolver404:
        return None
    if match.namespace == "admin" or match.url_name in OPERATOR_PAGES:
        if reads_every_order(user):
            return None
        page = OPERATOR_PAGES.get(match.url_name or "", "The admin")
        return f"{page} is for operators; here is your page."
    if match.url_name in KITCHEN_PAGES and not roles.works_kitchen(user, match.kwargs.get("name", "")):
        return f"The kitchen display of {match.kwargs.get('name', '')} is for its kitchen staff; here is your page."
    if match.url_name in SHELF_PAGES and not roles.drives_for(user, match.kwargs.get("name", "")):
        return f"The shelf of {match.kwargs.get('name', '')} is for its drivers; here is your page."
    return None


def navigation(request: HttpRequest) -> dict[str, Any]:
    """Template context: the links of the pages this person may open, in the header of every page."""
    user = request.user
    links: list[tuple[str, str]] = [("Menu", reverse("menu"))]
    if user.is_authenticated and user.is_active:
        if reads_every_order(user):
            links += [("Board", reverse("board")), ("Admin", reverse("admin:index"))]
        links += [(f"Kitchen {display_name(shop)}", reverse("kitchen", args=[shop])) for shop in kitchen_shops(user)]
        links += [(f"Shelf {display_name(shop)}", reverse("shelf", args=[shop])) for shop in driver_shops(user)]
    if not user.is_authenticated or reads_every_order(user) or user.has_perm(roles.PLACE_ORDERS):
        links.append(("API docs", reverse("docs")))
    return {"nav_links": links}
