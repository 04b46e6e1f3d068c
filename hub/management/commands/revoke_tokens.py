"""Token revocation: revoke_tokens --user U [--tenant T] | --jti J --tenant T.

`--user`: every token of U issued up to now (in tenant T; without --tenant, in every tenant).
`--jti`: the one token of tenant T carrying that id. Stored in `hub_revocation`; running hub
processes learn it through Redis at once (else from their poll) and close the sockets holding
such a token with 4001. Audited as "tokens.revoke".
"""
from __future__ import annotations

from typing import Any

import orjson
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from core import audit
from hub import auth, revocation


class Command(BaseCommand):
    help = "Revoke every token of a user issued up to now, or one token by its jti."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--user", default="")
        parser.add_argument("--jti", default="")
        parser.add_argument("--tenant", default="", help="the tenant (required with --jti)")
        parser.add_argument("--actor", default="operator", help="who revokes (audit)")

    def handle(self, *args: Any, **opts: Any) -> None:
        user, jti, tenant = opts["user"], opts["jti"], opts["tenant"]
        if not user and not jti:
            raise CommandError("give --user, --jti or both")
        if user and not auth.USER_ID.fullmatch(user):
            raise CommandError("--user must be a user id")
        if jti and not (tenant and auth.JTI.fullmatch(jti)):
            raise CommandError("--jti needs --tenant and a token id")
        if tenant and not auth.TENANT_ID.fullmatch(tenant):
            raise CommandError("--tenant must be a tenant id")
        out: dict[str, Any] = {"tenant": tenant or "*"}
        with transaction.atomic():
            if user:
                out["user"] = user
                out["not_before"] = revocation.revoke_user(tenant, user, opts["actor"]).not_before
            if jti:
                out["jti"] = revocation.revoke_jti(tenant, jti, opts["actor"]).jti
            audit.record(opts["actor"], "tokens.revoke", f"user:{user}" if user else "token", role="operator",
                         tenant=tenant, jti=jti)
        self.stdout.write(orjson.dumps({"revoked": out}).decode())
