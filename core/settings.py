"""All configuration, read from the environment in one place.

The embedded default (no DATABASE_URL, no REDIS_URL) is SQLite plus in-process broker and state,
so `make run` needs nothing but Python. Outside development HUB_SECRET is mandatory.
"""
from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from exc


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be a number, got {raw!r}") from exc


HUB_ENV = os.environ.get("HUB_ENV", "production")
DEVELOPMENT = HUB_ENV in ("development", "test")
DEV_SECRET = "dev-only-secret-never-use-in-production-0123456789"

HUB_SECRET = os.environ.get("HUB_SECRET", "")
if not HUB_SECRET:
    if not DEVELOPMENT:
        raise ImproperlyConfigured(
            "HUB_SECRET is not set. Set HUB_SECRET (32+ random bytes) or HUB_ENV=development for local use."
        )
    HUB_SECRET = DEV_SECRET
elif len(HUB_SECRET) < 32 and not DEVELOPMENT:
    raise ImproperlyConfigured("HUB_SECRET must be at least 32 characters outside development")

SECRET_KEY = HUB_SECRET
DEBUG = os.environ.get("DJANGO_DEBUG", "") == "1"
ALLOWED_HOSTS = [h for h in os.environ.get("ALLOWED_HOSTS", "*").split(",") if h]
HOST = os.environ.get("HOST", "127.0.0.1")
PORT = env_int("PORT", 8000)

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "core",
    "hub",
    "rooms",
    "matching",
    "ai_assist",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "core.urls"
ASGI_APPLICATION = "asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

DATABASE_URL = os.environ.get("DATABASE_URL", "") or f"sqlite:///{BASE_DIR / 'var' / 'hub.sqlite3'}"
_db = dj_database_url.parse(DATABASE_URL, conn_max_age=None)
if _db["ENGINE"] == "django.db.backends.sqlite3":
    Path(_db["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # WAL lets readers run beside the group-commit writer; the timeout absorbs writer contention.
    _db["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    _db["TEST"] = {"NAME": str(Path(_db["NAME"]).with_suffix(".test.sqlite3"))}
else:
    # A stopped database must fail fast (unavailable), never hang a command.
    _db.setdefault("OPTIONS", {})["connect_timeout"] = env_int("DB_CONNECT_TIMEOUT", 3)
    _db["CONN_HEALTH_CHECKS"] = True
DATABASES = {"default": _db}
DB_IS_POSTGRES = _db["ENGINE"].endswith("postgresql")

REDIS_URL = os.environ.get("REDIS_URL", "")

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LANGUAGE_CODE = "en-gb"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True
STATIC_URL = "static/"

# Channels is used for routing only; the hub's fan-out does not go through channel layers.
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# --- protocol limits (protocol.md "Limits") ---
HUB_COMMANDS_PER_S = env_float("HUB_COMMANDS_PER_S", 20)
HUB_COMMAND_BURST = env_int("HUB_COMMAND_BURST", 40)
HUB_MAX_SUBSCRIPTIONS = env_int("HUB_MAX_SUBSCRIPTIONS", 128)
HUB_MAX_QUEUE_BYTES = env_int("HUB_MAX_QUEUE_BYTES", 1024 * 1024)
HUB_MAX_FRAME_BYTES = env_int("HUB_MAX_FRAME_BYTES", 64 * 1024)
HUB_CONNECT_TIMEOUT_S = env_float("HUB_CONNECT_TIMEOUT_S", 10)
HUB_MAX_BAD_FRAMES = env_int("HUB_MAX_BAD_FRAMES", 20)
HUB_PING_S = env_int("HUB_PING_S", 25)
HUB_IDLE_TIMEOUT_S = env_int("HUB_IDLE_TIMEOUT_S", 60)
HUB_HISTORY_DAYS = env_int("HUB_HISTORY_DAYS", 1)
HUB_CALL_WINDOW_S = env_int("HUB_CALL_WINDOW_S", 600)
HUB_IDEMPOTENCY_S = env_int("HUB_IDEMPOTENCY_S", 24 * 3600)
HUB_BATCH_MAX = env_int("HUB_BATCH_MAX", 2000)
HUB_DRAIN_S = env_float("HUB_DRAIN_S", 10)

# --- agora ---
AGORA_DEV_APP_ID = "0" * 24 + "devdevdevdev"  # clearly marked development credentials
AGORA_DEV_APP_CERTIFICATE = "d" * 32
AGORA_APP_ID = os.environ.get("AGORA_APP_ID", "")
AGORA_APP_CERTIFICATE = os.environ.get("AGORA_APP_CERTIFICATE", "")
if not (AGORA_APP_ID and AGORA_APP_CERTIFICATE):
    if not DEVELOPMENT:
        # Calls still work in production without Agora configured? No: refuse clearly at call time.
        pass
    AGORA_APP_ID = AGORA_APP_ID or AGORA_DEV_APP_ID
    AGORA_APP_CERTIFICATE = AGORA_APP_CERTIFICATE or AGORA_DEV_APP_CERTIFICATE
AGORA_USING_DEV = AGORA_APP_ID == AGORA_DEV_APP_ID
AGORA_TOKEN_TTL_S = min(env_int("AGORA_TOKEN_TTL_S", 3600), 24 * 3600)

# --- AI providers ---
OPENAI_API_KEY = os.environ.get("OPENAI_API_KEY", "")
OPENAI_BASE_URL = os.environ.get("OPENAI_BASE_URL", "")
ANTHROPIC_API_KEY = os.environ.get("ANTHROPIC_API_KEY", "")
ANTHROPIC_BASE_URL = os.environ.get("ANTHROPIC_BASE_URL", "")

LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "core.logs.JsonFormatter"}},
    "filters": {"context": {"()": "core.logs.ContextFilter"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "json", "filters": ["context"]}
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.server": {"level": "WARNING"},
        "daphne": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
    },
}
