"""AI assist configuration, read from the environment (and core.settings for keys and base URLs).

Read once per process and cached; `reload()` re-reads (tests change the environment between cases).
API keys are never stored here: `keys.KeySource` re-reads a key file when it is rotated.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from core.settings import env_float, env_int  # one parser for every numeric variable

KNOWN_PROVIDERS = ("openai", "anthropic")


@dataclass(frozen=True)
class ProviderSettings:
    name: str
    model: str
    base_url: str
    key_value: str  # from settings (env); "" when a key file is used or no key is set
    key_file: str


@dataclass(frozen=True)
class AssistConfig:
    providers: tuple[str, ...]
    provider_settings: dict[str, ProviderSettings]
    max_attempts: int
    retry_base_s: float
    retry_max_s: float
    retry_after_cap_s: float
    breaker_failures: int
    breaker_open_s: float
    connect_timeout_s: float
    first_token_timeout_s: float
    idle_timeout_s: float
    user_rpm: int
    tenant_rpm: int
    user_tpm: int
    tenant_tpm: int
    max_output_tokens: int
    default_context: int
    system_prompt: str
    offline_delay_s: float
    transcript_journal_dir: str  # every transcript is journaled here (local disk) until committed
    extra: dict[str, str] = field(default_factory=dict)


DEFAULT_SYSTEM_PROMPT = (
    "You are the in-chat assistant of a home-services marketplace. Help the user draft replies, "
    "summarise jobs and answer questions about bookings. Be brief and concrete."
)


def load() -> AssistConfig:
    order = tuple(p.strip().lower() for p in os.environ.get("AI_PROVIDERS", "openai,anthropic").split(",")
                  if p.strip())
    unknown = [p for p in order if p not in KNOWN_PROVIDERS]
    if unknown:
        raise ImproperlyConfigured(f"AI_PROVIDERS: unknown providers {unknown}; known: {KNOWN_PROVIDERS}")
    provider_settings = {
        "openai": ProviderSettings(
            "openai", os.environ.get("AI_OPENAI_MODEL", "") or "gpt-4o-mini",
            settings.OPENAI_BASE_URL, settings.OPENAI_API_KEY,
            os.environ.get("OPENAI_API_KEY_FILE", "")),
        "anthropic": ProviderSettings(
            "anthropic", os.environ.get("AI_ANTHROPIC_MODEL", "") or "claude-haiku-4-5",
            settings.ANTHROPIC_BASE_URL, settings.ANTHROPIC_API_KEY,
            os.environ.get("ANTHROPIC_API_KEY_FILE", "")),
    }
    return AssistConfig(
        providers=order,
        provider_settings=provider_settings,
        max_attempts=max(1, env_int("AI_MAX_ATTEMPTS", 3)),
        retry_base_s=env_float("AI_RETRY_BASE_S", 0.2),
        retry_max_s=env_float("AI_RETRY_MAX_S", 2.0),
        retry_after_cap_s=env_float("AI_RETRY_AFTER_CAP_S", 5.0),
        breaker_failures=max(1, env_int("AI_BREAKER_FAILURES", 5)),
        breaker_open_s=env_float("AI_BREAKER_OPEN_S", 30.0),
        connect_timeout_s=env_float("AI_CONNECT_TIMEOUT_S", 5.0),
        first_token_timeout_s=env_float("AI_FIRST_TOKEN_TIMEOUT_S", 20.0),
        idle_timeout_s=env_float("AI_IDLE_TIMEOUT_S", 20.0),
        user_rpm=env_int("AI_USER_RPM", 20),
        tenant_rpm=env_int("AI_TENANT_RPM", 600),
        user_tpm=env_int("AI_USER_TPM", 20000),
        tenant_tpm=env_int("AI_TENANT_TPM", 200000),
        max_output_tokens=env_int("AI_MAX_OUTPUT_TOKENS", 1024),
        default_context=min(50, max(0, env_int("AI_DEFAULT_CONTEXT", 10))),
        system_prompt=os.environ.get("AI_SYSTEM_PROMPT", "") or DEFAULT_SYSTEM_PROMPT,
        offline_delay_s=env_float("AI_OFFLINE_DELAY_S", 0.0),
        transcript_journal_dir=os.environ.get("AI_TRANSCRIPT_JOURNAL_DIR", "")
        or str(settings.BASE_DIR / "var" / "assist-journal"),
    )


_config: AssistConfig | None = None


def get() -> AssistConfig:
    global _config
    if _config is None:
        _config = load()
    return _config


def reload() -> AssistConfig:
    global _config
    _config = load()
    return _config
