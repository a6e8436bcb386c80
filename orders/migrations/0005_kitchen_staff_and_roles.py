"""The three roles as Django groups with their permissions, and who staffs which kitchen.

- kitchen staff: the kitchen display of the shops they staff (`KitchenStaff`)
  and its actions, nothing else;
- operators: the board, admin, and every operator action: requeue, cancel,
  rush (orders), drain, declare dead (kitchens), and the menu;
- integrators: the REST API, for the orders they place.

The roles and their permissions are listed in `orders/roles.py`.
"""

import django.db.models.deletion
from django.conf import settings
from django.contrib.auth.management import create_permissions
from django.db import migrations, models


def roles(apps, schema_editor):
    # Permissions are made after `migrate` by a signal; the groups need them now.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    from orders.roles import create_roles

    create_roles(apps.get_model("auth", "Group"), apps.get_model("auth", "Permission"))


def remove_roles(apps, schema_editor):
    from orders.roles import ROLES

    apps.get_model("auth", "Group").objects.filter(name__in=ROLES).delete()


class Migration(migrations.Migration):

    dependencies = [
        ('orders', '0004_order_orderevent_move_out'),
        ('workers', '0006_orderevent_actor'),
        ('auth', '0012_alter_user_first_name_max_length'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='KitchenStaff',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('shop', models.CharField(max_length=100)),
                ('user', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='kitchens', to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'verbose_name_plural': 'kitchen staff',
                'permissions': [('work_kitchen_display', 'Can work the kitchen display of the shops they staff')],
                'constraints': [models.UniqueConstraint(fields=('user', 'shop'), name='kitchen_staff_unique_shop')],
            },
        ),
        migrations.RunPython(roles, remove_roles),
    ]
