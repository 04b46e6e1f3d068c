from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    # The tables exist already (created by core's migrations, which owned these models before):
    # this only moves the models' state into the hub app.
    dependencies = [
        ('core', '0004_tenant_channels'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(state_operations=[
            migrations.CreateModel(
                name='PubKey',
                fields=[
                    ('pk', models.CompositePrimaryKey('channel', 'key', blank=True, editable=False, primary_key=True, serialize=False)),
                    ('channel', models.CharField(max_length=260)),
                    ('key', models.CharField(max_length=64)),
                    ('offset', models.BigIntegerField()),
                    ('created_at', models.BigIntegerField()),
                ],
                options={
                    'db_table': 'hub_pubkey',
                },
            ),
            migrations.CreateModel(
                name='Stream',
                fields=[
                    ('name', models.CharField(max_length=260, primary_key=True, serialize=False)),
                    ('top', models.BigIntegerField(default=0)),
                    ('epoch', models.CharField(max_length=16)),
                    ('created_at', models.BigIntegerField(help_text='ms since the epoch')),
                ],
                options={
                    'db_table': 'hub_stream',
                },
            ),
            migrations.CreateModel(
                name='TokenRevocation',
                fields=[
                    ('id', models.BigAutoField(primary_key=True, serialize=False)),
                    ('tenant', models.CharField(blank=True, default='', max_length=64)),
                    ('user', models.CharField(blank=True, default='', max_length=128)),
                    ('jti', models.CharField(blank=True, default='', max_length=128)),
                    ('not_before', models.BigIntegerField(default=0, help_text='seconds since the epoch')),
                    ('created_at', models.DateTimeField(auto_now_add=True)),
                    ('actor', models.CharField(blank=True, default='', max_length=128)),
                ],
                options={
                    'db_table': 'hub_revocation',
                },
            ),
            migrations.CreateModel(
                name='Publication',
                fields=[
                    ('pk', models.CompositePrimaryKey('channel', 'offset', blank=True, editable=False, primary_key=True, serialize=False)),
                    ('channel', models.CharField(max_length=260)),
                    ('offset', models.BigIntegerField()),
                    ('ts', models.BigIntegerField(help_text='ms since the epoch')),
                    ('sender', models.CharField(max_length=128, null=True)),
                    ('data', models.TextField(help_text='compact JSON; null for a tombstone', null=True)),
                ],
                options={
                    'db_table': 'hub_publication',
                    'indexes': [models.Index(fields=['sender'], name='hub_pub_sender'), models.Index(fields=['ts'], name='hub_pub_ts')],
                },
            ),
        ], database_operations=[]),
    ]
