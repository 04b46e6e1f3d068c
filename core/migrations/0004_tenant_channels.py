"""Channels are stored under tenant-qualified names (`<tenant>/<namespace>:<id>`, hub.channels):
the columns grow to hold the tenant, and every existing stream, publication and idempotency key
moves to the `default` tenant (the tenant of every token before tenants were enforced)."""
from django.db import migrations, models

TABLES = (("hub_stream", "name"), ("hub_publication", "channel"), ("hub_pubkey", "channel"))


def qualify_existing(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        for table, column in TABLES:
            # Unqualified names have no "/" (neither tenants nor channel names can hold one).
            cursor.execute(f"UPDATE {table} SET {column} = %s || {column} WHERE {column} NOT LIKE %s",
                           ["default/", "%/%"])


def unqualify_existing(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        for table, column in TABLES:
            cursor.execute(f"UPDATE {table} SET {column} = SUBSTR({column}, 9) WHERE {column} LIKE %s",
                           ["default/%"])


class Migration(migrations.Migration):

    # After the bid privacy rewrite, which reads `job:` streams by their unqualified names.
    dependencies = [
        ('core', '0003_token_revocation'),
        ('rooms', '0004_bid_privacy'),
    ]

    operations = [
        migrations.AlterField(
            model_name='pubkey',
            name='channel',
            field=models.CharField(max_length=260),
        ),
        migrations.AlterField(
            model_name='publication',
            name='channel',
            field=models.CharField(max_length=260),
        ),
        migrations.AlterField(
            model_name='stream',
            name='name',
            field=models.CharField(max_length=260, primary_key=True, serialize=False),
        ),
        migrations.RunPython(qualify_existing, unqualify_existing),
    ]
