"""Metrics hooks the hub calls. The operations change fills these in (prometheus-client);
until then they are no-ops. Hot-path hooks must stay cheap (plain counters, exported at scrape)."""
from __future__ import annotations


def commit_latency(seconds: float) -> None:
    """Publish submitted -> committed, per publication."""


def delivery_latency(seconds: float) -> None:
    """Publication committed (its ts) -> written to a local subscriber, sampled."""
