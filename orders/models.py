"""The shop's own table: the menu orders are checked against."""

from __future__ import annotations

from django.db import models


class Size(models.TextChoices):
    SMALL = "small"
    MEDIUM = "medium"
    LARGE = "large"


# How much longer (and dearer) a size is than a medium.
SIZE_FACTOR = {Size.SMALL: 0.8, Size.MEDIUM: 1.0, Size.LARGE: 1.3}


class Pizza(models.Model):
    """A menu entry; orders name pizzas by slug and are validated against this table."""

    slug = models.SlugField(max_length=50, unique=True)
    name = models.CharField(max_length=100)
    description = models.CharField(max_length=300, blank=True)
    price_cents = models.PositiveIntegerField()
    # Seconds a medium one spends in the kitchen at speed 1.0.
    bake_seconds = models.PositiveIntegerField(default=60)
    available = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name
