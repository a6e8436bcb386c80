"""The house menu every new installation starts with."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

# (slug, name, description, prices (small, medium, large), kitchen seconds for a medium)
HOUSE_MENU: tuple[tuple[str, str, str, tuple[str, str, str], int], ...] = (
    ("margherita", "Margherita", "Tomato, mozzarella, basil.", ("7.50", "9.00", "11.50"), 40),
    ("marinara", "Marinara", "Tomato, garlic, oregano.", ("6.50", "8.00", "10.50"), 35),
    ("diavola", "Diavola", "Tomato, mozzarella, spicy salami.", ("9.00", "11.00", "14.00"), 45),
    (
        "quattro-formaggi",
        "Quattro formaggi",
        "Mozzarella, gorgonzola, fontina, parmesan.",
        ("10.00", "12.00", "15.50"),
        50,
    ),
    ("capricciosa", "Capricciosa", "Ham, mushrooms, artichokes, olives.", ("10.50", "12.50", "16.00"), 55),
    ("funghi", "Funghi", "Tomato, mozzarella, mushrooms.", ("8.00", "10.00", "13.00"), 42),
)


def seed_menu(pizza_model: Any) -> int:
    """Create the house pizzas that are missing; returns how many were added.

    Takes the model as an argument so the data migration can pass its
    historical model.
    """
    existing = set(pizza_model.objects.values_list("slug", flat=True))
    new = [
        pizza_model(
            slug=slug,
            name=name,
            description=description,
            price_small=Decimal(small),
            price_medium=Decimal(medium),
            price_large=Decimal(large),
            bake_seconds=seconds,
        )
        for slug, name, description, (small, medium, large), seconds in HOUSE_MENU
        if slug not in existing
    ]
    pizza_model.objects.bulk_create(new)
    return len(new)
