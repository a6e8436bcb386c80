"""The database cache's table, which the throttles of every web process share.

`createcachetable` makes it (and does nothing where it exists, or where the
cache is Redis); running it here means `migrate` alone sets a database up.
"""

from django.core.management import call_command
from django.db import migrations


def create_cache_table(apps, schema_editor):
    call_command("createcachetable", database=schema_editor.connection.alias, verbosity=0)


class Migration(migrations.Migration):
    dependencies = [("orders", "0005_kitchen_staff_and_roles")]

    operations = [migrations.RunPython(create_cache_table, migrations.RunPython.noop)]
