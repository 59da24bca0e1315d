"""StoreHour: how the headline levels moved per hour (filled by 0015)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("store", "0013_ledger_fold"),
    ]

    operations = [
        migrations.CreateModel(
            name="StoreHour",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("hour", models.DateTimeField()),
                ("slot", models.PositiveSmallIntegerField()),
                ("products", models.BigIntegerField(db_default=0, default=0)),
                ("units", models.BigIntegerField(db_default=0, default=0)),
                ("low_stock", models.BigIntegerField(db_default=0, default=0)),
                ("out_of_stock", models.BigIntegerField(db_default=0, default=0)),
                ("open_orders", models.BigIntegerField(db_default=0, default=0)),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(fields=("hour", "slot"), name="storehour_key")
                ],
            },
        ),
    ]
