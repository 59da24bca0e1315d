"""Fill the rollups of a database that already has orders (empty ones are no-ops).

Uses today's rebuild code rather than historical models: the rollup definitions
live in one place (store.selectors.rollups). Whole tables at once (writers wait
while it runs); a large store that must keep writing can fake this migration and
run ``manage.py rollups rebuild`` (short batches) after migrating.
"""

from django.db import migrations


def fill(apps, schema_editor):
    if schema_editor.connection.alias != "default":
        return
    from store.services.rollup_rebuild import rollups_rebuild

    # The ledger was not folded yet (0013): every ledger row counts in the rollup.
    # The rollups that existed then (store hours came in 0014, which fills its own).
    rollups_rebuild(
        names=("product-revenue", "product-sales", "categories", "shops", "shop-sales"),
        batch_products=None,
        ledger_tail=False,
    )


class Migration(migrations.Migration):
    atomic = False  # the rebuild commits batch by batch

    dependencies = [("store", "0010_sales_windows")]

    operations = [migrations.RunPython(fill, migrations.RunPython.noop)]
