"""docs/rbac.md is the rbac_table command's output, and every role outside a method's set is refused."""
from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.core.management import call_command

from core.errors import HubError
from hub import auth, rpc
from hub.rpc import Caller

ROOT = Path(__file__).resolve().parent.parent.parent


def test_docs_rbac_matches_the_registry() -> None:
    out = io.StringIO()
    call_command("rbac_table", stdout=out)
    committed = (ROOT / "docs" / "rbac.md").read_text(encoding="utf-8")
    assert committed == out.getvalue(), "docs/rbac.md is stale: python manage.py rbac_table > docs/rbac.md"


def test_every_method_is_in_the_table() -> None:
    out = io.StringIO()
    call_command("rbac_table", stdout=out)
    for name in rpc.REGISTRY:
        assert f"| `{name}` |" in out.getvalue()


@pytest.mark.parametrize("name", sorted(rpc.REGISTRY))
def test_roles_outside_the_set_are_forbidden(name: str) -> None:
    m = rpc.REGISTRY[name]
    assert m.roles, f"{name} allows nobody"
    for role in auth.ALL_ROLES:
        caller = Caller(user="rbac-probe", role=role, tenant="t1")
        if role in m.roles:
            # An allowed role gets past the role check (empty params may still be a bad_request).
            try:
                rpc.check(caller, name, {})
            except HubError as exc:
                assert exc.code == "bad_request", (name, role, exc.code)
            continue
        with pytest.raises(HubError) as info:
            rpc.check(caller, name, {})
        assert info.value.code == "forbidden", (name, role)
