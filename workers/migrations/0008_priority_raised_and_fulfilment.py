from django.db import migrations, models


def rename_expedited(apps, schema_editor):
    apps.get_model("workers", "OrderEvent").objects.filter(kind="expedited").update(kind="priority-raised")


def rename_priority_raised(apps, schema_editor):
    apps.get_model("workers", "OrderEvent").objects.filter(kind="priority-raised").update(kind="expedited")


class Migration(migrations.Migration):
    dependencies = [
        ("workers", "0007_staffed_kitchens_and_stage_deadlines"),
    ]

    operations = [
        migrations.AlterField(
            model_name="orderevent",
            name="kind",
            field=models.CharField(
                choices=[
                    ("placed", "Placed"),
                    ("claimed", "Claimed"),
                    ("stage", "Stage"),
                    ("done", "Done"),
                    ("retried", "Retried"),
                    ("released", "Released"),
                    ("reassigned", "Reassigned"),
                    ("failed", "Failed"),
                    ("cancelled", "Cancelled"),
                    ("lease-lost", "Lease Lost"),
                    ("priority-raised", "Priority Raised"),
                ],
                max_length=15,
            ),
        ),
        migrations.RunPython(rename_expedited, rename_priority_raised),
    ]
