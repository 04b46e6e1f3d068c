"""The privacy registry: every app's entry is registered in ready(), and the GDPR commands use them."""
from __future__ import annotations

import io
import uuid

import pytest
from django.core.management import call_command

from core import privacy


def test_every_app_with_personal_data_registers_an_entry() -> None:
    assert [e.app for e in privacy.entries()][:5] == ["core", "hub", "rooms", "matching", "ai_assist"]
    assert {r.kind for r in privacy.retentions()} >= {"messages", "transcripts", "calls"}


def test_an_app_registers_once_and_kinds_never_clash() -> None:
    hub = privacy.REGISTRY["hub"]
    assert privacy.register(hub) is hub  # ready() running twice is harmless
    with pytest.raises(ValueError):
        privacy.register(privacy.Entry("hub"))
    with pytest.raises(ValueError):
        privacy.register(privacy.Entry("other", retention=(privacy.Retention("messages", "X", lambda d, r: {}),)))
    assert "other" not in privacy.REGISTRY


def test_commands_report_each_entry_at_verbosity_2(tmp_path: object) -> None:
    user = f"u{uuid.uuid4().hex[:8]}"
    err = io.StringIO()
    call_command("export_user", user=user, out=str(tmp_path) + "/x.json", verbosity=2, stderr=err)
    assert [line.split(":")[0] for line in err.getvalue().splitlines()[:5]] == [
        "core", "hub", "rooms", "matching", "ai_assist"]
    err = io.StringIO()
    call_command("erase_user", user=user, yes=True, verbosity=2, stdout=io.StringIO(), stderr=err)
    assert {"hub", "rooms", "matching", "ai_assist"} <= {line.split(":")[0] for line in err.getvalue().splitlines()}
    err, out = io.StringIO(), io.StringIO()
    call_command("purge", dry_run=True, verbosity=2, stdout=out, stderr=err)
    assert {line.split(" ")[0] for line in err.getvalue().splitlines()} >= {"messages", "transcripts", "calls"}
    out = io.StringIO()
    call_command("purge", dry_run=True, verbosity=0, stdout=out, stderr=io.StringIO())
    assert out.getvalue() == ""
