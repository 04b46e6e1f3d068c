"""Tenants: zones belong to one, and the provider snapshot is keyed `<tenant>/<user>`; existing
zones and providers are the `default` tenant's."""
from django.db import migrations, models


def qualify_providers(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        cursor.execute('UPDATE matching_provider_state SET "user" = %s || "user" WHERE "user" NOT LIKE %s',
                       ["default/", "%/%"])


def unqualify_providers(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        cursor.execute('UPDATE matching_provider_state SET "user" = SUBSTR("user", 9) WHERE "user" LIKE %s',
                       ["default/%"])


class Migration(migrations.Migration):

    dependencies = [
        ('matching', '0001_initial'),
    ]

    operations = [
        migrations.AddField(
            model_name='zone',
            name='tenant',
            field=models.CharField(db_index=True, default='default', max_length=128),
        ),
        migrations.AlterField(
            model_name='providerstate',
            name='user',
            field=models.CharField(max_length=200, primary_key=True, serialize=False),
        ),
        migrations.RunPython(qualify_providers, unqualify_providers),
    ]
