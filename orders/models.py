"""The shop's own tables: the menu orders are checked against, and who staffs which kitchen."""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models


class Size(models.TextChoices):
    SMALL = "small"
    MEDIUM = "medium"
    LARGE = "large"


# How much longer a size takes in the kitchen than a medium (its price is the menu's own).
SIZE_FACTOR = {Size.SMALL: 0.8, Size.MEDIUM: 1.0, Size.LARGE: 1.3}
# Money: at most 99,999.99 a price, in the one currency (PIZZAQUEUE_CURRENCY).
PRICE_DIGITS, PRICE_PLACES = 7, 2


def price_field(label: str) -> models.DecimalField:
    return models.DecimalField(
        label, max_digits=PRICE_DIGITS, decimal_places=PRICE_PLACES, validators=[MinValueValidator(Decimal("0"))]
    )


class Pizza(models.Model):
    """A menu entry; orders name pizzas by slug and are validated against this table."""

    slug = models.SlugField(max_length=50, unique=True)
    name = models.CharField(max_length=100)
    description = models.CharField(max_length=300, blank=True)
    # One price per size, in PIZZAQUEUE_CURRENCY: orders are priced from these by the server only.
    price_small = price_field("small price")
    price_medium = price_field("medium price")
    price_large = price_field("large price")
    # Seconds a medium one spends in the kitchen at speed 1.0.
    bake_seconds = models.PositiveIntegerField(default=60)
    available = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(price_small__gte=0, price_medium__gte=0, price_large__gte=0),
                name="pizza_prices_not_negative",
            )
        ]

    def __str__(self) -> str:
        return self.name

    def price(self, size: str) -> Decimal:
        """The price of one pizza of this size."""
        return {Size.SMALL: self.price_small, Size.MEDIUM: self.price_medium, Size.LARGE: self.price_large}[Size(size)]


class DeliveryFee(models.Model):
    """A delivery area's own fee; other areas pay PIZZAQUEUE_DELIVERY_FEE. Matched ignoring case."""

    area = models.CharField(max_length=64, unique=True)
    fee = price_field("fee")

    class Meta:
        ordering = ["area"]
        constraints = [models.CheckConstraint(condition=models.Q(fee__gte=0), name="delivery_fee_not_negative")]

    def __str__(self) -> str:
        return f"{self.area}: {self.fee}"


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


class Driver(models.Model):
    """A person who delivers a shop's orders (the `drivers` role, `orders.roles`): they take
    them off the shop's shelf, one driver per order, and hand them over."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="deliveries_for")
    # A shop is a kitchen's (worker's) name, as for kitchen staff.
    shop = models.CharField(max_length=100)

    class Meta:
        permissions = [("drive_for_shop", "Can take and deliver the orders on the shelf of the shops they drive for")]
        constraints = [models.UniqueConstraint(fields=["user", "shop"], name="driver_unique_shop")]

    def __str__(self) -> str:
        return f"{self.user} drives for {self.shop}"
