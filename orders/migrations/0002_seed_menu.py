from __future__ import annotations

from django.db import migrations

# The house menu is seeded by `0008_prices_per_size`, once its prices have their
# columns: this migration's model had one price in cents, which the menu no longer has.


class Migration(migrations.Migration):
    dependencies = [("orders", "0001_initial")]

    operations: list[migrations.operations.base.Operation] = []
