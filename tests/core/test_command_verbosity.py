"""Long management commands honour --verbosity: progress only from -v 2 (tests/core/test_privacy.py
checks its lines), the result at -v 1, nothing at all at -v 0."""
from __future__ import annotations

import io
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command


@pytest.mark.parametrize("command", ["export_user", "erase_user", "purge"])
def test_progress_only_from_verbosity_2(command: str, tmp_path: Path) -> None:
    user = f"u{uuid.uuid4().hex[:8]}"
    args: dict[str, Any] = {"export_user": {"user": user, "out": str(tmp_path / "x.json")},
                            "erase_user": {"user": user, "yes": True}, "purge": {"dry_run": True}}[command]
    seen = {}
    for verbosity in (0, 1, 2):
        out, err = io.StringIO(), io.StringIO()
        call_command(command, verbosity=verbosity, stdout=out, stderr=err, **args)
        seen[verbosity] = (out.getvalue(), err.getvalue())
    assert seen[0] == ("", "")
    assert seen[1][0] + seen[1][1] != ""  # the result (export_user: a summary on stderr, the file has it)
    # Progress lines go to stderr, at -v 2 only.
    assert len(seen[2][1].splitlines()) > len(seen[1][1].splitlines())
