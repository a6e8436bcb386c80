"""The house menu every new installation starts with."""

from __future__ import annotations

from typing import Any

# (slug, name, description, price in cents for a medium, kitchen seconds for a medium)
HOUSE_MENU: tuple[tuple[str, str, str, int, int], ...] = (
    ("margherita", "Margherita", "Tomato, mozzarella, basil.", 900, 40),
    ("marinara", "Marinara", "Tomato, garlic, oregano.", 800, 35),
    ("diavola", "Diavola", "Tomato, mozzarella, spicy salami.", 1100, 45),
    ("quattro-formaggi", "Quattro formaggi", "Mozzarella, gorgonzola, fontina, parmesan.", 1200, 50),
    ("capricciosa", "Capricciosa", "Ham, mushrooms, artichokes, olives.", 1250, 55),
    ("funghi", "Funghi", "Tomato, mozzarella, mushrooms.", 1000, 42),
)


def seed_menu(pizza_model: Any) -> int:
    """Create the house pizzas that are missing; returns how many were added.

    Takes the model as an argument so the data migration can pass its
    historical model.
    """
    existing = set(pizza_model.objects.values_list("slug", flat=True))
    new = [
        pizza_model(slug=slug, name=name, description=description, price_cents=price, bake_seconds=seconds)
        for slug, name, description, price, seconds in HOUSE_MENU
        if slug not in existing
    ]
    pizza_model.objects.bulk_create(new)
    return len(new)
