"""`manage.py revoke_tokens` (hub/management/commands/revoke_tokens.py): what it refuses, what it
stores and audits. (Sockets closing on every process: tests/security/test_revocation.py.)"""
from __future__ import annotations

import io

import orjson
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from core.models import AuditLog
from hub.models import TokenRevocation
from tests.support import uid


@pytest.mark.parametrize("opts", [{}, {"user": "a b"}, {"jti": "j1"}, {"user": "al", "tenant": "t/1"}])
def test_bad_arguments_are_refused(opts: dict[str, str]) -> None:
    with pytest.raises(CommandError):
        call_command("revoke_tokens", stdout=io.StringIO(), **opts)


def test_a_user_and_a_token_are_revoked_stored_and_audited() -> None:
    user, tenant, jti = uid(), uid("t"), uid("j")
    out = io.StringIO()
    call_command("revoke_tokens", user=user, jti=jti, tenant=tenant, actor="ops", stdout=out)
    revoked = orjson.loads(out.getvalue())["revoked"]
    assert (revoked["tenant"], revoked["user"], revoked["jti"]) == (tenant, user, jti) and revoked["not_before"] > 0
    assert TokenRevocation.objects.filter(tenant=tenant, user=user).exists()
    assert TokenRevocation.objects.filter(tenant=tenant, jti=jti).exists()
    assert AuditLog.objects.filter(actor="ops", action="tokens.revoke", target=f"user:{user}", tenant=tenant).exists()
