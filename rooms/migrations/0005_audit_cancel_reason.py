"""`jobs.cancel` audit rows written before the audit held no personal text keep the canceller's
words in `detail.reason`. The audit is append-only and never erased, so those words would outlive
every erasure: this rewrites them to the current shape (`reason_given: true|false`, the reason
itself stays on the job, where erasure reaches it). The table's append-only trigger is lifted for
this one statement set and put back in the same transaction."""
import json

from django.db import migrations

PG_OFF = "ALTER TABLE core_audit DISABLE TRIGGER core_audit_append_only"
PG_ON = "ALTER TABLE core_audit ENABLE TRIGGER core_audit_append_only"
SQLITE_OFF = "DROP TRIGGER IF EXISTS core_audit_no_update"
SQLITE_ON = ("CREATE TRIGGER IF NOT EXISTS core_audit_no_update BEFORE UPDATE ON core_audit "
             "BEGIN SELECT RAISE(ABORT, 'core_audit is append-only'); END;")


def strip_reasons(apps, schema_editor):
    conn = schema_editor.connection
    with conn.cursor() as cursor:
        cursor.execute("SELECT id, detail FROM core_audit WHERE action = %s", ["jobs.cancel"])
        rows = cursor.fetchall()
        changed = []
        for row_id, raw in rows:
            detail = json.loads(raw) if isinstance(raw, (str, bytes)) else raw
            if isinstance(detail, dict) and "reason" in detail:
                kept = {k: v for k, v in detail.items() if k != "reason"}
                kept["reason_given"] = bool(detail["reason"])
                changed.append((json.dumps(kept), row_id))
        if not changed:
            return
        pg = conn.vendor == "postgresql"
        cursor.execute(PG_OFF if pg else SQLITE_OFF)
        cast = "::jsonb" if pg else ""
        cursor.executemany(f"UPDATE core_audit SET detail = %s{cast} WHERE id = %s", changed)
        cursor.execute(PG_ON if pg else SQLITE_ON)


class Migration(migrations.Migration):
    dependencies = [("core", "0002_audit_append_only"), ("rooms", "0004_bid_privacy")]
    operations = [migrations.RunPython(strip_reasons, migrations.RunPython.noop, elidable=True)]
