"""The audit table refuses UPDATE and DELETE in the database itself, not only in the model."""
from django.db import migrations

PG = """
CREATE OR REPLACE FUNCTION core_audit_append_only() RETURNS trigger AS $$
BEGIN RAISE EXCEPTION 'core_audit is append-only'; END; $$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS core_audit_append_only ON core_audit;
CREATE TRIGGER core_audit_append_only BEFORE UPDATE OR DELETE ON core_audit
FOR EACH ROW EXECUTE FUNCTION core_audit_append_only();
"""
PG_REVERSE = "DROP TRIGGER IF EXISTS core_audit_append_only ON core_audit; DROP FUNCTION IF EXISTS core_audit_append_only();"

SQLITE = [
    "CREATE TRIGGER IF NOT EXISTS core_audit_no_update BEFORE UPDATE ON core_audit "
    "BEGIN SELECT RAISE(ABORT, 'core_audit is append-only'); END;",
    "CREATE TRIGGER IF NOT EXISTS core_audit_no_delete BEFORE DELETE ON core_audit "
    "BEGIN SELECT RAISE(ABORT, 'core_audit is append-only'); END;",
]
SQLITE_REVERSE = ["DROP TRIGGER IF EXISTS core_audit_no_update;", "DROP TRIGGER IF EXISTS core_audit_no_delete;"]


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(PG)
    elif schema_editor.connection.vendor == "sqlite":
        for sql in SQLITE:
            schema_editor.execute(sql)


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(PG_REVERSE)
    elif schema_editor.connection.vendor == "sqlite":
        for sql in SQLITE_REVERSE:
            schema_editor.execute(sql)


class Migration(migrations.Migration):
    dependencies = [("core", "0001_initial")]
    operations = [migrations.RunPython(forward, backward)]
