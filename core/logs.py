"""Structured JSON logs with a connection/request id, and a guard that keeps secrets out."""
from __future__ import annotations

import contextvars
import json
import logging
import re
import time

from core import tracing

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")

# Anything that looks like a bearer token, JWT or API key is masked before it reaches a handler.
_SECRET_PATTERNS = [
    re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+"),
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"\b(sk-[A-Za-z0-9_-]{8,}|sk-ant-[A-Za-z0-9_-]{8,})"),
    re.compile(r"(?i)(x-api-key|authorization|api[_-]?key)([\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+"),
]


def scrub(text: str) -> str:
    for pattern in _SECRET_PATTERNS:
        if pattern.groups >= 2:
            text = pattern.sub(lambda m: m.group(1) + m.group(2) + "[redacted]", text)
        elif pattern.groups == 1 and pattern.pattern.startswith("(?i)(bearer"):
            text = pattern.sub(lambda m: m.group(1) + "[redacted]", text)
        else:
            text = pattern.sub("[redacted]", text)
    return text


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        if tracing.ENABLED:
            ids = tracing.log_ids()
            if ids is not None:
                record.trace_id, record.span_id = ids
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": round(time.time(), 3),
            "level": record.levelname,
            "logger": record.name,
            "msg": scrub(record.getMessage()),
        }
        rid = getattr(record, "request_id", "")
        if rid:
            entry["request_id"] = rid
        for key in ("trace_id", "span_id", "event", "code", "channel", "method", "user", "duration_ms", "node"):
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = scrub(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)
