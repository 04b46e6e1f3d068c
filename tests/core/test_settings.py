"""Start-up refuses unsafe configurations with a reason; a documented production one is clean."""
from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
DEV_SECRET = "dev-only-secret-never-use-in-production-0123456789"

# The production configuration docs/operations.md lists ("Production settings").
PRODUCTION = {
    "HUB_ENV": "production",
    "HUB_SECRET": secrets.token_urlsafe(40),
    "DJANGO_SECRET_KEY": secrets.token_urlsafe(60),
    "ALLOWED_HOSTS": "hub.example.com",
    "CSRF_TRUSTED_ORIGINS": "https://hub.example.com",
    "HUB_BEHIND_TLS_PROXY": "1",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "1",
    "SECURE_HSTS_PRELOAD": "1",
}


def manage(*args: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("HUB_", "DJANGO_", "SECURE_", "ALLOWED_", "CSRF_")) and k != "HOST"}
    clean.update({"DATABASE_URL": f"sqlite:///{tmp_path / 'hub.sqlite3'}", "REDIS_URL": "", **env})
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=clean, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize(("env", "reason"), [
    ({"HUB_ENV": "production"}, "HUB_SECRET is not set"),
    ({**PRODUCTION, "HUB_SECRET": DEV_SECRET}, "development secret"),
    ({"HUB_ENV": "development", "HOST": "0.0.0.0"}, "non-loopback HOST"),
    ({**PRODUCTION, "HUB_SECRET": "short"}, "at least 32"),
    ({**PRODUCTION, "DJANGO_SECRET_KEY": ""}, "DJANGO_SECRET_KEY is not set"),
    ({**PRODUCTION, "DJANGO_SECRET_KEY": PRODUCTION["HUB_SECRET"]}, "differ from HUB_SECRET"),
    ({**PRODUCTION, "HUB_ENV": "prod"}, "HUB_ENV must be"),
])
def test_unsafe_configurations_refuse_to_start(env: dict[str, str], reason: str, tmp_path: Path) -> None:
    out = manage("check", tmp_path=tmp_path, **env)
    assert out.returncode != 0
    assert reason in out.stderr


def test_development_on_loopback_starts_with_the_development_secret(tmp_path: Path) -> None:
    out = manage("check", tmp_path=tmp_path, HUB_ENV="development", HOST="127.0.0.1")
    assert out.returncode == 0, out.stderr


def test_serve_refuses_the_development_secret_on_a_public_address(tmp_path: Path) -> None:
    out = manage("serve", "--host", "0.0.0.0", "--port", "1", tmp_path=tmp_path, HUB_ENV="development")
    assert out.returncode != 0
    assert "non-loopback address" in out.stderr


def test_check_deploy_is_clean_in_the_production_configuration(tmp_path: Path) -> None:
    out = manage("check", "--deploy", "--fail-level", "WARNING", tmp_path=tmp_path, **PRODUCTION)
    assert out.returncode == 0, out.stdout + out.stderr
