from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('core', '0004_tenant_channels'),
        ('hub', '0001_initial'),
    ]

    # The models moved to the hub app (hub/models.py); their tables stay as they are.
    operations = [
        migrations.SeparateDatabaseAndState(state_operations=[
            migrations.DeleteModel(
                name='PubKey',
            ),
            migrations.DeleteModel(
                name='Publication',
            ),
            migrations.DeleteModel(
                name='Stream',
            ),
            migrations.DeleteModel(
                name='TokenRevocation',
            ),
        ], database_operations=[]),
    ]
