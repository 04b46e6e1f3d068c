"""`manage.py mint_token` (and `serve` start-up) as a newcomer runs them: one-line errors, working tokens."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from hub import auth
from tests.support import ROOT, free_port

# What a fresh shell has: none of the test session's secrets.
UNSET = ("HUB_ENV", "HUB_SECRET", "DJANGO_SECRET_KEY", "HUB_TOKEN_ISSUER", "HUB_TOKEN_AUDIENCE")


def manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in UNSET}
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env={**clean, **env},
                          capture_output=True, text=True, timeout=60)


MINT = ("mint_token", "--user", "ada", "--role", "admin")


@pytest.mark.parametrize("args", [MINT, ("serve", "--port", "0"), ("migrate", "--check")])
@pytest.mark.parametrize("env,says", [
    ({}, "HUB_SECRET is not set"),
    ({"HUB_SECRET": "too-short"}, "HUB_SECRET must be at least 32 characters"),
    ({"HUB_ENV": "dev"}, "HUB_ENV must be production, development or test"),
    ({"HUB_SECRET": "s" * 40}, "DJANGO_SECRET_KEY is not set"),
])
def test_configuration_errors_are_one_line(args, env, says):
    run = manage(*args, **env)
    assert run.returncode != 0
    assert run.stdout == ""
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("error: ") and says in lines[0]


def test_development_mints_an_admin_token():
    run = manage(*MINT, "--ttl", "600", HUB_ENV="development")
    assert run.returncode == 0, run.stderr
    from django.conf import settings

    claims = auth.verify(run.stdout.strip(), settings.DEV_SECRET)
    assert (claims.user, claims.role, claims.tenant) == ("ada", "admin", "default")


def test_bad_arguments_are_one_line():
    run = manage("mint_token", "--user", "ada", "--role", "customer", "--ttl", "0", HUB_ENV="development")
    assert run.returncode != 0 and "Traceback" not in run.stderr
    assert run.stderr.strip() == "CommandError: --ttl must be positive"


def test_serve_on_a_busy_port_is_one_line():
    import socket

    port = free_port()
    with socket.socket() as held:
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        held.bind(("127.0.0.1", port))
        held.listen(1)
        run = manage("serve", "--port", str(port), HUB_ENV="development")
    assert run.returncode != 0 and "Traceback" not in run.stderr
    last = run.stderr.strip().splitlines()[-1]  # after the start-up hooks' log lines
    assert last.startswith("CommandError: cannot listen on 127.0.0.1:") and "in use" in last


def test_production_mints_with_the_hubs_secrets():
    secret = "p" * 40
    run = manage(*MINT, HUB_SECRET=secret, DJANGO_SECRET_KEY="k" * 60)
    assert run.returncode == 0, run.stderr
    assert auth.verify(run.stdout.strip(), secret).role == "admin"
