"""Readiness checks that apps add to `GET /readyz` (hub.http.readyz).

An app registers a check from its AppConfig.ready():

    register_check("zones", zones_ready, critical=False)

A check is a cheap synchronous function (in-memory state only: it runs on the event loop) returning
either a bool or (bool, details); details are merged into the readyz body. A failing *critical*
check makes readyz answer 503 (the process leaves the load balancer); a failing non-critical one is
only reported, for problems that every process shares and that taking processes out would not fix.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("hub.ready")

CheckResult = bool | tuple[bool, dict[str, Any]]


@dataclass(frozen=True)
class Check:
    name: str
    fn: Callable[[], CheckResult]
    critical: bool


_checks: dict[str, Check] = {}


def register_check(name: str, fn: Callable[[], CheckResult], critical: bool = True) -> None:
    """Add (or replace, by name) a readiness check."""
    _checks[name] = Check(name, fn, critical)


def run_checks() -> tuple[bool, dict[str, bool], dict[str, Any]]:
    """(all critical checks passed, name -> passed, merged details). A check that raises fails."""
    ok = True
    results: dict[str, bool] = {}
    details: dict[str, Any] = {}
    for check in list(_checks.values()):
        try:
            got = check.fn()
        except Exception:  # a broken check must not break readyz
            log.exception("readiness check %s raised", check.name)
            got = False
        passed, extra = (got if isinstance(got, tuple) else (bool(got), {}))
        results[check.name] = bool(passed)
        details.update(extra)
        if check.critical and not passed:
            ok = False
    return ok, results, details
