"""The shop's own tables: the menu orders are checked against, and who staffs which kitchen."""

from __future__ import annotations

from django.conf import settings
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


class KitchenStaff(models.Model):
    """A person who works a shop's kitchen display (the `kitchen staff` role, `orders.roles`)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="kitchens")
    # A shop is a kitchen's (worker's) name, which outlives each incarnation of the process.
    shop = models.CharField(max_length=100)

    class Meta:
        verbose_name_plural = "kitchen staff"
        permissions = [("work_kitchen_display", "Can work the kitchen display of the shops they staff")]
        constraints = [models.UniqueConstraint(fields=["user", "shop"], name="kitchen_staff_unique_shop")]

    def __str__(self) -> str:
        return f"{self.user} at {self.shop}"


class ShopPace(models.Model):
    """How long a shop's kitchen takes over an order, measured from the orders it finished
    (`orders.promises`): `base` seconds per order plus `factor` seconds per second of the
    menu's estimate, a least-squares line through its recent orders.

    A simulated kitchen's line goes through its speed (no base); a staffed one's stand-in
    cook takes the same few seconds whatever the pizza (all base). Keyed by the shop's
    name, which outlives each incarnation of its process; the promise keeper (the
    monitor's duty) writes it, the quote at placing reads it.
    """

    shop = models.CharField(max_length=100, primary_key=True)
    base = models.FloatField(default=0.0)
    factor = models.FloatField()
    samples = models.PositiveIntegerField(default=0)
    # The recent orders' sums, each older order weighing less (`orders.promises.PACE_DECAY`):
    # their weight, estimates (x), kitchen seconds (y), x², and x·y.
    weight = models.FloatField(default=0.0)
    sum_x = models.FloatField(default=0.0)
    sum_y = models.FloatField(default=0.0)
    sum_xx = models.FloatField(default=0.0)
    sum_xy = models.FloatField(default=0.0)
    updated_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.shop}: {self.base:.1f} s + x{self.factor:.2f} ({self.samples} orders)"
