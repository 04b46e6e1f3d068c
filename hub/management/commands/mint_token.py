"""Print a JWT for development and tests: mint_token --user U --role R [--tenant T] [--ttl S]."""
from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from hub import auth, credentials


class Command(BaseCommand):
    help = "Mint a hub token (HS256, signed with HUB_SECRET)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--user", required=True)
        parser.add_argument("--role", required=True, choices=auth.ALL_ROLES)
        parser.add_argument("--tenant", default="default")
        parser.add_argument("--ttl", type=int, default=3600, help="seconds")

    def handle(self, *args: Any, **opts: Any) -> None:
        if opts["ttl"] <= 0:
            raise CommandError("--ttl must be positive")
        try:
            token = credentials.mint(opts["user"], opts["role"], tenant=opts["tenant"], ttl=opts["ttl"])
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(token)
