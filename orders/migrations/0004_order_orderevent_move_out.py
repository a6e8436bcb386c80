"""Orders and their events now belong to the queue engine (`workers.0002`); the tables stay."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("orders", "0003_claim_index_matches_claim_order"),
        ("workers", "0002_order_orderevent_move_in"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.DeleteModel(name="OrderEvent"),
                migrations.DeleteModel(name="Order"),
            ],
        ),
    ]
