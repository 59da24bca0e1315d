"""Fill StoreHour from the history there is (its own migration: the table's unique
key, which the fill's upserts need, is only created at the end of 0014).

Like 0011, the fill uses today's rebuild, whole tables at once; a large store that
must keep writing can fake this migration and run ``manage.py rollups rebuild
--only store-hours`` after migrating.
"""

from django.db import migrations


def fill(apps, schema_editor):
    if schema_editor.connection.alias != "default":
        return
    from store.services.rollup_rebuild import rollups_rebuild

    rollups_rebuild(names=("store-hours",), batch_products=None)


class Migration(migrations.Migration):
    dependencies = [("store", "0014_store_hours")]

    operations = [migrations.RunPython(fill, migrations.RunPython.noop)]
