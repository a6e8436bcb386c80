"""Every order records who placed it: an API user, or a browser's placing key.

Orders placed before this have neither, and are visible to staff only.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('workers', '0004_bucketmove_drain_reason'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name='order',
            name='placed_by',
            field=models.ForeignKey(blank=True, db_index=False, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL),
        ),
        migrations.AddField(
            model_name='order',
            name='placed_by_session',
            field=models.CharField(blank=True, max_length=64),
        ),
        migrations.AddIndex(
            model_name='order',
            index=models.Index(condition=models.Q(('placed_by__isnull', False)), fields=['placed_by', 'status', 'created_at'], name='order_placed_by_idx'),
        ),
    ]
