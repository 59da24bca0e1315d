"""Orders store their total and item count, so the orders table can sort on them.

Existing orders are backfilled from their items in one set-based UPDATE (SQLite
3.33+ and PostgreSQL both support UPDATE ... FROM); the indexes come after it.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("store", "0006_ledger_product_index_covered_by_composite"),
    ]

    operations = [
        migrations.AddField(
            model_name="order",
            name="item_count",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="order",
            name="total",
            field=models.PositiveBigIntegerField(default=0, help_text="cents; sum of the items"),
        ),
        migrations.RunSQL(
            """
            UPDATE store_order
               SET total = items.total, item_count = items.n
              FROM (SELECT order_id, SUM(quantity * unit_price) AS total, COUNT(*) AS n
                      FROM store_orderitem GROUP BY order_id) AS items
             WHERE items.order_id = store_order.id
            """,
            migrations.RunSQL.noop,
            hints={"model_name": "order"},
        ),
        migrations.AddIndex(
            model_name="order",
            index=models.Index(fields=["total"], name="order_total"),
        ),
        migrations.AddIndex(
            model_name="order",
            index=models.Index(fields=["item_count"], name="order_item_count"),
        ),
    ]
