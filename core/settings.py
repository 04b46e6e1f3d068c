"""All configuration, read from the environment in one place.

The embedded default (no DATABASE_URL, no REDIS_URL) is SQLite plus in-process broker and state,
so `make run` needs nothing but Python. Outside development HUB_SECRET is mandatory.
"""
from __future__ import annotations

import ipaddress
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


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name} must be 1/0 (or true/false), got {raw!r}")


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


HUB_ENV = os.environ.get("HUB_ENV", "production")
if HUB_ENV not in ("production", "development", "test"):
    raise ImproperlyConfigured(f"HUB_ENV must be production, development or test, got {HUB_ENV!r}")
DEVELOPMENT = HUB_ENV in ("development", "test")
DEV_SECRET = "dev-only-secret-never-use-in-production-0123456789"
HOST = os.environ.get("HOST", "127.0.0.1")
PORT = env_int("PORT", 8000)

# The development secret is in the source: it signs tokens only for a development hub that
# listens on a loopback address (serve checks its --host the same way).
HUB_SECRET = os.environ.get("HUB_SECRET", "") or (DEV_SECRET if DEVELOPMENT else "")
if not HUB_SECRET:
    raise ImproperlyConfigured(
        "HUB_SECRET is not set: set HUB_SECRET (32+ random characters), or HUB_ENV=development for local use")
USING_DEV_SECRET = HUB_SECRET == DEV_SECRET
if USING_DEV_SECRET and not DEVELOPMENT:
    raise ImproperlyConfigured("HUB_SECRET is the development secret, which is refused outside development")
if USING_DEV_SECRET and not is_loopback(HOST):
    raise ImproperlyConfigured(
        f"the development secret is refused on a non-loopback HOST ({HOST}); set HUB_SECRET")
if len(HUB_SECRET) < 32 and not DEVELOPMENT:
    raise ImproperlyConfigured("HUB_SECRET must be at least 32 characters outside development")

# Django's own signing key (sessions, CSRF of the admin) is not the token secret: a leak of one must
# not forge the other.
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if not DEVELOPMENT:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY is not set (50+ random characters, not HUB_SECRET)")
    SECRET_KEY = "dev-only-django-key-" + "x" * 40
elif not DEVELOPMENT and (len(SECRET_KEY) < 50 or SECRET_KEY == HUB_SECRET):
    raise ImproperlyConfigured("DJANGO_SECRET_KEY must be 50+ characters and differ from HUB_SECRET")

# Token policy (hub.credentials): optional issuer/audience checks, a longest lifetime.
HUB_TOKEN_ISSUER = os.environ.get("HUB_TOKEN_ISSUER", "")
HUB_TOKEN_AUDIENCE = os.environ.get("HUB_TOKEN_AUDIENCE", "")
HUB_TOKEN_MAX_TTL_S = env_int("HUB_TOKEN_MAX_TTL_S", 24 * 3600)
# Each process re-reads the revocation table this often (hub.revocation): the path for a revocation
# whose Redis message was lost, and the only one between processes without Redis.
HUB_REVOCATION_POLL_S = env_int("HUB_REVOCATION_POLL_S", 5)
# Outside development /metrics is never open: this token, or an admin/service JWT.
HUB_METRICS_TOKEN = os.environ.get("HUB_METRICS_TOKEN", "")

DEBUG = DEVELOPMENT and env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")
# Behind a TLS-terminating proxy that sets X-Forwarded-Proto (and strips it from clients).
if env_bool("HUB_BEHIND_TLS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEVELOPMENT)
# Load balancers and scrapers probe over plain HTTP inside the private network.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEVELOPMENT)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not DEVELOPMENT)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEVELOPMENT else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)

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
    "console",
    "notify",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    # For the admin's cookie session; the token-authenticated API views are csrf_exempt.
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "hub.urls"
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
    # pg_stat_activity shows which process holds which connections.
    _db["OPTIONS"].setdefault("application_name", f"hub-{os.getpid()}")
    # Parameters travel beside the statement instead of quoted into it, and a statement run
    # DB_PREPARE_THRESHOLD times on a connection is prepared once (0: never, e.g. behind a pooler
    # without prepared-statement support): less parsing and planning in Postgres, less quoting here.
    if env_bool("DB_SERVER_SIDE_BINDING", True):
        _db["OPTIONS"]["server_side_binding"] = True
        _threshold = env_int("DB_PREPARE_THRESHOLD", 5)
        _db["OPTIONS"]["prepare_threshold"] = _threshold if _threshold > 0 else None
    # DB_POOL=0: one persistent connection per thread instead of the pool (e.g. behind PgBouncer).
    if env_bool("DB_POOL", True):
        _db["CONN_MAX_AGE"] = 0  # the pool keeps connections; Django hands them back (see below)
DATABASES = {"default": _db}
DB_IS_POSTGRES = _db["ENGINE"].endswith("postgresql")

REDIS_URL = os.environ.get("REDIS_URL", "")
# Connections of one process's event-loop client to Redis. Past the limit a command waits for one to
# come free (up to REDIS_POOL_TIMEOUT_S) instead of failing: hundreds of sockets closing at once each
# release a budget and a presence entry.
REDIS_MAX_CONNECTIONS = max(1, env_int("REDIS_MAX_CONNECTIONS", 50))
REDIS_POOL_TIMEOUT_S = env_float("REDIS_POOL_TIMEOUT_S", 5.0)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LANGUAGE_CODE = "en-gb"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True
STATIC_URL = "static/"
# `collectstatic` (run by `make install`) gathers the admin's CSS and JS here, gzip-compressed;
# hub.static serves them under every server (without it, from the apps' own directories).
STATIC_ROOT = os.environ.get("HUB_STATIC_ROOT", "") or str(BASE_DIR / "var" / "static")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# The console's map draws no tiles unless this is set (e.g. https://tiles.example.com/{z}/{x}/{y}.png):
# nothing is fetched from another host otherwise.
CONSOLE_TILE_URL = os.environ.get("CONSOLE_TILE_URL", "")

# Channels is used for routing only; the hub's fan-out does not go through channel layers.
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# --- protocol limits (protocol.md "Limits") ---
HUB_COMMANDS_PER_S = env_float("HUB_COMMANDS_PER_S", 20)
HUB_COMMAND_BURST = env_int("HUB_COMMAND_BURST", 40)
HUB_MAX_SUBSCRIPTIONS = env_int("HUB_MAX_SUBSCRIPTIONS", 128)
HUB_MAX_QUEUE_BYTES = env_int("HUB_MAX_QUEUE_BYTES", 1024 * 1024)
HUB_MAX_FRAME_BYTES = env_int("HUB_MAX_FRAME_BYTES", 64 * 1024)
# A subscribe (recovery) or history reply carries at most this much; past it recovery says
# `recovered: false` and history returns fewer publications with `truncated: true`.
HUB_MAX_REPLY_BYTES = env_int("HUB_MAX_REPLY_BYTES", HUB_MAX_QUEUE_BYTES // 2)
# Hot cache of the newest publications: per channel, and for all channels of a process.
HUB_CACHE_BYTES = env_int("HUB_CACHE_BYTES", 256 * 1024)
HUB_CACHE_TOTAL_BYTES = env_int("HUB_CACHE_TOTAL_BYTES", 256 * 1024 * 1024)
HUB_CONNECT_TIMEOUT_S = env_float("HUB_CONNECT_TIMEOUT_S", 10)
HUB_MAX_BAD_FRAMES = env_int("HUB_MAX_BAD_FRAMES", 20)
HUB_PING_S = env_int("HUB_PING_S", 25)
HUB_IDLE_TIMEOUT_S = env_int("HUB_IDLE_TIMEOUT_S", 60)
# After the hub sends a close frame, how long a client has to answer it. The clock starts when
# the frame is queued, behind whatever the client has not read yet: too short, and a slow reader
# loses its close code (and the replies before it) to a dropped connection.
HUB_CLOSE_TIMEOUT_S = env_float("HUB_CLOSE_TIMEOUT_S", 10)
HUB_HISTORY_DAYS = env_int("HUB_HISTORY_DAYS", 1)
# Retention per kind of data (`manage.py purge`; docs/operations.md "Retention"), in days.
HUB_RETAIN_MESSAGES_DAYS = env_int("HUB_RETAIN_MESSAGES_DAYS", 365)
HUB_RETAIN_TRANSCRIPTS_DAYS = env_int("HUB_RETAIN_TRANSCRIPTS_DAYS", 30)
HUB_RETAIN_CALLS_DAYS = env_int("HUB_RETAIN_CALLS_DAYS", 365)
HUB_CALL_WINDOW_S = env_int("HUB_CALL_WINDOW_S", 600)
HUB_CALL_RING_S = env_float("HUB_CALL_RING_S", 30.0)  # an invite rings this long before it is missed
HUB_CALL_ABANDON_S = env_float("HUB_CALL_ABANDON_S", 120.0)  # every joined participant offline this long
HUB_MATCH_RADIUS_M = env_float("HUB_MATCH_RADIUS_M", 50_000.0)  # match.find and offers look this far
HUB_CREW_RADIUS_M = env_float("HUB_CREW_RADIUS_M", 20_000.0)  # a crew's members all this close to the job
HUB_MATCH_SNAPSHOT_S = env_float("HUB_MATCH_SNAPSHOT_S", 5.0)  # provider snapshot flush interval
HUB_OFFER_TTL_S = env_float("HUB_OFFER_TTL_S", 30.0)
HUB_OFFER_FANOUT = env_int("HUB_OFFER_FANOUT", 3)
HUB_PRESENCE_TTL_S = env_int("HUB_PRESENCE_TTL_S", 30)  # a process counts as gone this long after its heartbeat
HUB_IDEMPOTENCY_S = env_int("HUB_IDEMPOTENCY_S", 24 * 3600)
HUB_BATCH_MAX = env_int("HUB_BATCH_MAX", 2000)
# Publications waiting for the group commit, per process: past either, publishes get unavailable.
HUB_MAX_PENDING_PUBLICATIONS = env_int("HUB_MAX_PENDING_PUBLICATIONS", 50_000)
HUB_MAX_PENDING_BYTES = env_int("HUB_MAX_PENDING_BYTES", 128 * 1024 * 1024)
HUB_DRAIN_S = env_float("HUB_DRAIN_S", 10)
# After the drain the process keeps answering (readyz 503, sockets refused) this long before the
# server stops, for load balancers that only notice a draining process by its health check.
HUB_DRAIN_GRACE_S = env_float("HUB_DRAIN_GRACE_S", 0)

# --- what one user / one address may hold, across processes (hub.budgets) ---
HUB_MAX_SOCKETS_PER_USER = env_int("HUB_MAX_SOCKETS_PER_USER", 8)
HUB_MAX_SOCKETS_PER_ADDRESS = env_int("HUB_MAX_SOCKETS_PER_ADDRESS", 256)
HUB_NEW_SOCKETS_PER_ADDRESS_PER_S = env_float("HUB_NEW_SOCKETS_PER_ADDRESS_PER_S", 20)
HUB_USER_COMMANDS_PER_S = env_float("HUB_USER_COMMANDS_PER_S", 2 * HUB_COMMANDS_PER_S)
HUB_USER_COMMAND_BURST = env_int("HUB_USER_COMMAND_BURST", 2 * HUB_COMMAND_BURST)

# --- domain budgets: what one user may set in motion for others, across processes (core.domain_budgets) ---
# Open things are counted in the database; rates are per minute (bursts of a minute's worth). 0 = off.
HUB_MAX_OPEN_BOOKINGS_PER_USER = env_int("HUB_MAX_OPEN_BOOKINGS_PER_USER", 5)  # still offering
HUB_MAX_OPEN_JOBS_PER_USER = env_int("HUB_MAX_OPEN_JOBS_PER_USER", 20)  # custom jobs still open to bids
HUB_BIDS_PER_MIN = env_int("HUB_BIDS_PER_MIN", 30)  # jobs.bid per provider
HUB_CALL_INVITES_PER_MIN = env_int("HUB_CALL_INVITES_PER_MIN", 30)  # people rung by one caller
HUB_MAX_CALL_PEOPLE = env_int("HUB_MAX_CALL_PEOPLE", 8)  # room members, caller included, calls.start rings
HUB_MATCH_FIND_PER_MIN = env_int("HUB_MATCH_FIND_PER_MIN", 60)  # match.find per user

# What one service zone may cost the matcher's index (cells; matching.zoneindex.estimate_cells):
# a larger zone is refused with bad_request before it is stored. 0 switches the cap off.
HUB_ZONE_MAX_CELLS = env_int("HUB_ZONE_MAX_CELLS", 40_000)

# --- HTTP budgets (hub.guard) ---
HUB_HTTP_MAX_BODY_BYTES = env_int("HUB_HTTP_MAX_BODY_BYTES", 2 * 1024 * 1024)  # the zones REST limit
HUB_HTTP_REQUEST_TIMEOUT_S = env_float("HUB_HTTP_REQUEST_TIMEOUT_S", 10)
HUB_HTTP_PER_MIN = env_int("HUB_HTTP_PER_MIN", 600)
HUB_HTTP_ANON_PER_MIN = env_int("HUB_HTTP_ANON_PER_MIN", 120)
# Proxies (addresses or networks) whose X-Forwarded-For names the client; unset: the peer is the client.
HUB_TRUSTED_PROXIES = env_list("HUB_TRUSTED_PROXIES", "")
# Blocking rpc methods (ORM) run on their own bounded thread pool, one DB connection per thread.
# Few: the calls are mostly CPU under one interpreter lock, and every extra thread adds lock
# hand-overs that the event loop waits through (docs/operations.md "How domain calls run"); raise
# it when the database is far and the calls mostly wait on round trips.
HUB_DOMAIN_WORKERS = max(1, env_int("HUB_DOMAIN_WORKERS", 2))
# Postgres connections of one process come from one bounded pool (Django's psycopg pool). A thread
# that used the database keeps its connection (no pool round trip per query), so the pool must
# hold one per such thread: the domain workers, the loop's default executor (the socket path's
# reads: min(32, CPUs + 4) threads), the group-commit writer, the matcher's two sync threads and the
# transcript writer, and a few for Django's own request threads (the admin), which hand theirs
# back at the end of each request. Past max_size a thread waits DB_POOL_TIMEOUT_S, then the call
# answers unavailable. docs/operations.md "Connection budget".
DB_POOL_MAX = env_int("DB_POOL_MAX", HUB_DOMAIN_WORKERS + min(32, (os.cpu_count() or 1) + 4) + 8)
DB_POOL_MIN = min(DB_POOL_MAX, env_int("DB_POOL_MIN", 2))
# Also how long a thread waits for a new connection while the database is down: as fast as a connect.
DB_POOL_TIMEOUT_S = env_float("DB_POOL_TIMEOUT_S", env_int("DB_CONNECT_TIMEOUT", 3))
if DB_IS_POSTGRES and _db["CONN_MAX_AGE"] == 0:
    _db["OPTIONS"]["pool"] = {"min_size": DB_POOL_MIN, "max_size": DB_POOL_MAX, "timeout": DB_POOL_TIMEOUT_S,
                              "max_idle": 300, "name": f"hub-{os.getpid()}"}
HUB_DOMAIN_WAIT_S = env_float("HUB_DOMAIN_WAIT_S", 2.0)  # a call waits this long for a worker, then unavailable
HUB_DOMAIN_QUEUE = max(0, env_int("HUB_DOMAIN_QUEUE", 500))  # calls waiting beyond this are refused at once
HUB_DB_RETRIES = max(0, env_int("HUB_DB_RETRIES", 3))  # re-runs of an action after a deadlock/serialization failure

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

# --- notify: Android (FCM HTTP v1) and iOS (APNs token auth) push; docs/notifications.md ---
# Each is off until its key is configured. Keys are read from files and never logged.
NOTIFY_FCM_CREDENTIALS_FILE = os.environ.get("NOTIFY_FCM_CREDENTIALS_FILE", "")  # service-account JSON key
# Or the key's JSON itself (a secret store that fills the environment); the name has KEY so Django masks it.
NOTIFY_FCM_SERVICE_ACCOUNT_KEY = os.environ.get("NOTIFY_FCM_SERVICE_ACCOUNT_KEY", "")
NOTIFY_FCM_PROJECT_ID = os.environ.get("NOTIFY_FCM_PROJECT_ID", "")  # default: the key's project_id
NOTIFY_FCM_BASE_URL = os.environ.get("NOTIFY_FCM_BASE_URL", "https://fcm.googleapis.com")
NOTIFY_FCM_TOKEN_URL = os.environ.get("NOTIFY_FCM_TOKEN_URL", "")  # default: the key's token_uri
NOTIFY_FCM_CA_FILE = os.environ.get("NOTIFY_FCM_CA_FILE", "")  # a private CA (staging, fakes); default: system's
NOTIFY_FCM_TIMEOUT_S = env_float("NOTIFY_FCM_TIMEOUT_S", 10.0)
NOTIFY_APNS_KEY_FILE = os.environ.get("NOTIFY_APNS_KEY_FILE", "")  # the .p8 signing key (ES256)
NOTIFY_APNS_KEY = os.environ.get("NOTIFY_APNS_KEY", "")  # or the .p8 file's text itself (\n may stand for newlines)
NOTIFY_APNS_KEY_ID = os.environ.get("NOTIFY_APNS_KEY_ID", "")
NOTIFY_APNS_TEAM_ID = os.environ.get("NOTIFY_APNS_TEAM_ID", "")
NOTIFY_APNS_TOPIC = os.environ.get("NOTIFY_APNS_TOPIC", "")  # the app's bundle id, unless a device names its own
NOTIFY_APNS_BASE_URL = os.environ.get("NOTIFY_APNS_BASE_URL", "https://api.push.apple.com")
NOTIFY_APNS_CA_FILE = os.environ.get("NOTIFY_APNS_CA_FILE", "")
NOTIFY_APNS_TIMEOUT_S = env_float("NOTIFY_APNS_TIMEOUT_S", 10.0)

# --- notifications: routing, outbox, Web Push (docs/notifications.md) ---
NOTIFY_MAX_DEVICES_PER_USER = env_int("NOTIFY_MAX_DEVICES_PER_USER", 10)
# Per-tenant defaults, JSON: {"<tenant>": {"kinds": {"job": false}, "quiet_override": true}}.
NOTIFY_TENANT_DEFAULTS = os.environ.get("NOTIFY_TENANT_DEFAULTS", "")
NOTIFY_WORKER = env_bool("NOTIFY_WORKER", True)  # deliver the outbox in this process
NOTIFY_CONCURRENCY = max(1, env_int("NOTIFY_CONCURRENCY", 128))  # sends in flight per process
NOTIFY_BATCH = max(1, env_int("NOTIFY_BATCH", 256))  # rows claimed per round trip
NOTIFY_POLL_S = env_float("NOTIFY_POLL_S", 1.0)  # look for due rows (retries, other processes' rows)
NOTIFY_LEASE_S = env_float("NOTIFY_LEASE_S", 30)  # a claimed row is retried after this if its process died
NOTIFY_SEND_TIMEOUT_S = env_float("NOTIFY_SEND_TIMEOUT_S", 10)
NOTIFY_MAX_ATTEMPTS = max(1, env_int("NOTIFY_MAX_ATTEMPTS", 8))
NOTIFY_BACKOFF_S = env_float("NOTIFY_BACKOFF_S", 1.0)  # first retry; doubles per attempt
NOTIFY_BACKOFF_MAX_S = env_float("NOTIFY_BACKOFF_MAX_S", 300)
NOTIFY_JOB_TTL_S = env_int("NOTIFY_JOB_TTL_S", 3600)  # how long a new-job push may wait for its device
NOTIFY_TTL_S = env_int("NOTIFY_TTL_S", 24 * 3600)  # the others (bids, missed calls, room invites)
NOTIFY_KEEP_S = env_int("NOTIFY_KEEP_S", 24 * 3600)  # finished outbox rows are deleted after this
NOTIFY_DEAD_KEEP_S = env_int("NOTIFY_DEAD_KEEP_S", 7 * 24 * 3600)
# Web Push (VAPID). The private key: a PEM in WEBPUSH_VAPID_PRIVATE_KEY, or a file; in development a
# pair is generated under var/ on first start.
WEBPUSH_VAPID_PRIVATE_KEY = os.environ.get("WEBPUSH_VAPID_PRIVATE_KEY", "")
WEBPUSH_VAPID_KEY_FILE = os.environ.get("WEBPUSH_VAPID_KEY_FILE", "") or (
    str(BASE_DIR / "var" / "vapid-private.pem") if DEVELOPMENT else "")
WEBPUSH_VAPID_SUBJECT = os.environ.get("WEBPUSH_VAPID_SUBJECT", "mailto:push@example.com")
# Hosts a subscription endpoint may name (suffix match); anything else is refused at registration,
# so the hub never posts to an address a client chose. "*" allows any https host.
WEBPUSH_ALLOWED_HOSTS = env_list(
    "WEBPUSH_ALLOWED_HOSTS", "fcm.googleapis.com,push.services.mozilla.com,notify.windows.com,push.apple.com")
# Development and tests: plain-http endpoints on loopback (the fake push service).
WEBPUSH_ALLOW_LOOPBACK = env_bool("WEBPUSH_ALLOW_LOOPBACK", DEVELOPMENT)
WEBPUSH_TIMEOUT_S = env_float("WEBPUSH_TIMEOUT_S", 5)

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
        # hub.http.RequestIds logs every request once; Django's 4xx warnings would repeat it (5xx still are).
        "django.request": {"level": "ERROR"},
        "daphne": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
    },
}
