from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

import django.core.validators
from django.db import migrations, models

HALF = Decimal("0.50")


def _rounded(value: Decimal) -> Decimal:
    """To the nearest half unit, as a menu prices."""
    return ((value / HALF).quantize(Decimal(1), rounding=ROUND_HALF_UP) * HALF).quantize(Decimal("0.01"))


def prices_per_size(apps, schema_editor):
    """Each pizza's one price (a medium's, in cents) becomes three: the house menu's
    own for its pizzas, and 0.8 and 1.3 times the medium for any other."""
    from orders.menu import HOUSE_MENU

    house = {slug: prices for slug, _name, _description, prices, _seconds in HOUSE_MENU}
    for pizza in apps.get_model("orders", "Pizza").objects.all():
        medium = (Decimal(pizza.price_cents) / 100).quantize(Decimal("0.01"))
        small, large = _rounded(medium * Decimal("0.8")), _rounded(medium * Decimal("1.3"))
        if pizza.slug in house and Decimal(house[pizza.slug][1]) == medium:
            small, medium, large = (Decimal(p) for p in house[pizza.slug])
        pizza.price_small, pizza.price_medium, pizza.price_large = small, medium, large
        pizza.save(update_fields=["price_small", "price_medium", "price_large"])


def cents_from_medium(apps, schema_editor):
    """Back to one price: the medium's, in cents."""
    for pizza in apps.get_model("orders", "Pizza").objects.all():
        pizza.price_cents = int(pizza.price_medium * 100)
        pizza.save(update_fields=["price_cents"])


def seed(apps, schema_editor):
    from orders.menu import seed_menu

    seed_menu(apps.get_model("orders", "Pizza"))


def _price(label):
    return models.DecimalField(
        label,
        decimal_places=2,
        max_digits=7,
        default=0,
        validators=[django.core.validators.MinValueValidator(Decimal("0"))],
    )


class Migration(migrations.Migration):
    dependencies = [("orders", "0007_shop_pace")]

    operations = [
        migrations.AddField("pizza", "price_small", _price("small price"), preserve_default=False),
        migrations.AddField("pizza", "price_medium", _price("medium price"), preserve_default=False),
        migrations.AddField("pizza", "price_large", _price("large price"), preserve_default=False),
        migrations.RunPython(prices_per_size, cents_from_medium),
        # A default, so that migrating back can add the column to a table with rows.
        migrations.AlterField("pizza", "price_cents", models.PositiveIntegerField(default=0)),
        migrations.RemoveField("pizza", "price_cents"),
        migrations.RunPython(seed, migrations.RunPython.noop),
        migrations.AddConstraint(
            "pizza",
            models.CheckConstraint(
                condition=models.Q(price_small__gte=0, price_medium__gte=0, price_large__gte=0),
                name="pizza_prices_not_negative",
            ),
        ),
        migrations.CreateModel(
            name="DeliveryFee",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("area", models.CharField(max_length=64, unique=True)),
                (
                    "fee",
                    models.DecimalField(
                        decimal_places=2,
                        max_digits=7,
                        validators=[django.core.validators.MinValueValidator(Decimal("0"))],
                        verbose_name="fee",
                    ),
                ),
            ],
            options={
                "ordering": ["area"],
                "constraints": [
                    models.CheckConstraint(condition=models.Q(fee__gte=0), name="delivery_fee_not_negative")
                ],
            },
        ),
    ]
