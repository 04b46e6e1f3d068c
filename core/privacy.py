"""The privacy registry: what each app exports, erases and purges about people.

Each app ships a `privacy.py` and registers its entry in `AppConfig.ready()`; the commands
`export_user`, `erase_user` and `purge` iterate the registry and know no app. Entries run in
registration order (INSTALLED_APPS order).

- export(user) -> {section: rows}: JSON-ready sections of the data-subject export.
- erase(user, pseudonym) -> {what: count}: runs inside the erasure's one transaction; an entry
  that must reach running processes (caches, in-memory indexes) uses transaction.on_commit.
- retention: kinds of data with their own retention period (a setting in core.settings), each
  with purge(days, dry_run) -> {what: count}.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Model
from django.forms.models import model_to_dict

# Erased senders, and the prefix of each erasure's pseudonym ("erased-<hex>").
ERASED = "erased"

Export = Callable[[str], dict[str, Any]]
Erase = Callable[[str, str], dict[str, int]]
Purge = Callable[[int, bool], dict[str, int]]


@dataclass(frozen=True)
class Retention:
    kind: str  # the purge command's --<kind>-days
    setting: str  # the core.settings name holding the default, in days
    purge: Purge
    # Never below this many days (a setting name), e.g. messages inside the recovery window.
    floor_setting: str = ""


@dataclass(frozen=True)
class Entry:
    app: str
    export: Export | None = None
    erase: Erase | None = None
    retention: tuple[Retention, ...] = field(default_factory=tuple)


REGISTRY: dict[str, Entry] = {}


def register(entry: Entry) -> Entry:
    if entry.app in REGISTRY and REGISTRY[entry.app] != entry:
        raise ValueError(f"privacy entry for {entry.app} registered twice")
    kinds = {r.kind for e in REGISTRY.values() if e.app != entry.app for r in e.retention}
    clash = kinds & {r.kind for r in entry.retention}
    if clash:
        raise ValueError(f"retention kinds {sorted(clash)} registered twice")
    REGISTRY[entry.app] = entry
    return entry


def entries() -> list[Entry]:
    return list(REGISTRY.values())


def retentions() -> list[Retention]:
    return [r for e in REGISTRY.values() for r in e.retention]


def row(obj: Model) -> dict[str, Any]:
    """A model instance as an export row: every concrete field (model_to_dict skips non-editable ones)."""
    out = model_to_dict(obj)
    for f in obj._meta.concrete_fields:
        if f.attname not in out and f.name not in out:
            out[f.name] = getattr(obj, f.attname)
    return out


def _audit_rows(user: str) -> dict[str, Any]:
    from django.db.models import Q

    from core.models import AuditLog

    rows = AuditLog.objects.filter(Q(actor=user) | Q(target__in=[user, f"user:{user}"])).order_by("id")
    return {"audit": [row(a) for a in rows]}


# The audit log is the legal record: exported, never erased here (its rows name no personal text).
AUDIT = Entry("core", export=_audit_rows)
