from __future__ import annotations

from django.db import migrations


def seed(apps, schema_editor):
    from orders.menu import seed_menu

    seed_menu(apps.get_model("orders", "Pizza"))


class Migration(migrations.Migration):
    dependencies = [("orders", "0001_initial")]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
