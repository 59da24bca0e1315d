"""Create the ops-viewer and ops-operator groups with their permissions."""

from django.db import migrations

from store.permissions import OPS_GROUPS, ops_groups_sync


def create_groups(apps, schema_editor):
    ops_groups_sync(apps=apps, using=schema_editor.connection.alias)


def drop_groups(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=OPS_GROUPS).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("store", "0002_product_name_trigram"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.RunPython(create_groups, drop_groups, hints={"model_name": "group"}),
    ]
