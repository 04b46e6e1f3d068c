"""docs/alerts.yml: every rule's expression uses only metrics (and labels, and label values) the hub
really exports. The repository has no YAML library, so a small reader of the subset the file
uses (block mappings and lists, `>-` folded scalars, quoted strings) is here."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client.metrics import MetricWrapperBase

from core import metrics

ROOT = Path(__file__).resolve().parent.parent.parent
RULES = ROOT / "docs" / "alerts.yml"
SOURCES = ("core", "hub", "ai_assist", "matching", "rooms")

# PromQL words that are not metric names.
PROMQL = {"sum", "max", "min", "avg", "count", "rate", "irate", "increase", "histogram_quantile", "by",
          "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
          "abs", "clamp_min", "clamp_max", "delta", "deriv", "topk", "bottomk", "offset", "absent"}


# --- a reader for the YAML subset of the rules file -------------------------------------------

def _scalar(text: str) -> Any:
    if text.startswith('"'):
        return json.loads(text)
    if text.startswith("'") and text.endswith("'"):
        return text[1:-1].replace("''", "'")
    return text


def read_yaml(text: str) -> Any:
    lines: list[tuple[int, str]] = []
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped and not stripped.startswith("#"):
            lines.append((len(raw) - len(raw.lstrip(" ")), stripped))

    def block(i: int) -> tuple[Any, int]:
        indent, content = lines[i]
        return (sequence if content.startswith("- ") else mapping)(i, indent)

    def mapping(i: int, indent: int) -> tuple[dict[str, Any], int]:
        out: dict[str, Any] = {}
        while i < len(lines) and lines[i][0] == indent and not lines[i][1].startswith("- "):
            key, sep, rest = lines[i][1].partition(":")
            assert sep, f"not a mapping line: {lines[i][1]!r}"
            rest = rest.strip()
            i += 1
            if rest in (">-", ">", "|", "|-"):
                parts = []
                while i < len(lines) and lines[i][0] > indent:
                    parts.append(lines[i][1])
                    i += 1
                out[key] = (" " if rest.startswith(">") else "\n").join(parts)
            elif rest == "":
                assert i < len(lines) and lines[i][0] > indent, f"{key}: empty value"
                out[key], i = block(i)
            else:
                out[key] = _scalar(rest)
        return out, i

    def sequence(i: int, indent: int) -> tuple[list[Any], int]:
        out: list[Any] = []
        while i < len(lines) and lines[i][0] == indent and lines[i][1].startswith("- "):
            lines[i] = (indent + 2, lines[i][1][2:].strip())  # "- key: v" opens a mapping one level in
            item, i = mapping(i, indent + 2)
            out.append(item)
        return out, i

    value, end = block(0)
    assert end == len(lines), f"unread from line {lines[end] if end < len(lines) else end}"
    return value


# --- what the hub exports -----------------------------------------------------------------------

def exported() -> dict[str, set[str]]:
    """Every sample name the hub's /metrics can carry -> the labels its samples have."""
    labels: dict[str, tuple[str, ...]] = {}
    for obj in vars(metrics).values():
        if isinstance(obj, MetricWrapperBase):
            labels[obj._name] = tuple(obj._labelnames)
    out: dict[str, set[str]] = {}
    for family in metrics.registry.collect():
        names = {"counter": ["_total", "_created"], "histogram": ["_bucket", "_sum", "_count", "_created"],
                 "gauge": [""]}.get(family.type, [""])
        for suffix in names:
            label_set = set(labels.get(family.name, ()))
            if suffix == "_bucket":
                label_set.add("le")
            for sample in family.samples:
                label_set |= set(sample.labels)
            out[family.name + suffix] = label_set
    return out


def selectors(expr: str) -> list[tuple[str, dict[str, str]]]:
    """(metric name, {label: value}) for every metric an expression reads."""
    expr = re.sub(r"\[[^\]]*\]", " ", expr)  # range selectors
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    found: list[tuple[str, dict[str, str]]] = []
    for m in re.finditer(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?", expr):
        name, matchers = m.group(1), m.group(2) or ""
        if name in PROMQL or expr[m.end():].lstrip().startswith("(") and not matchers:
            continue  # a function or aggregation
        found.append((name, dict(re.findall(r'(\w+)\s*=~?\s*"([^"]*)"', matchers))))
    return found


def test_rules_file_reads_and_has_the_alerts_asked_for() -> None:
    doc = read_yaml(RULES.read_text())
    rules = [r for g in doc["groups"] for r in g["rules"]]
    names = {r["alert"] for r in rules}
    assert names >= {"HubUnavailableReplies", "HubCommitLatencyHigh", "HubSlowConsumerCuts", "HubAssistBreakerOpen",
                     "HubOfferExpiries", "HubSocketsPerProcess"}
    for rule in rules:
        assert rule["expr"] and rule["for"] and rule["labels"]["severity"] in ("page", "warn"), rule
        assert rule["annotations"]["summary"], rule


def test_every_expression_uses_what_the_hub_exports() -> None:
    known = exported()
    source = "\n".join(p.read_text() for d in SOURCES for p in (ROOT / d).rglob("*.py"))
    rules = [r for g in read_yaml(RULES.read_text())["groups"] for r in g["rules"]]
    used = set()
    for rule in rules:
        sels = selectors(rule["expr"])
        assert sels, rule["alert"]
        for name, matchers in sels:
            assert name in known, f"{rule['alert']}: {name} is not exported by the hub"
            used.add(name)
            for label, value in matchers.items():
                assert label in known[name], f"{rule['alert']}: {name} has no label {label}"
                # The value is one the code really records (a literal somewhere in the apps).
                assert f'"{value}"' in source, f"{rule['alert']}: {name}{{{label}=\"{value}\"}} is never recorded"
    assert {"hub_commands_total", "hub_publish_commit_seconds_bucket", "hub_slow_consumer_cutoffs_total",
            "hub_assist_fallbacks_total", "hub_offers_total", "hub_open_sockets"} <= used


def test_the_checker_catches_a_wrong_name() -> None:
    """The check above fails for a metric, label or value the hub does not have."""
    known = exported()
    assert selectors('rate(hub_command_total{outcome="x"}[5m])') == [("hub_command_total", {"outcome": "x"})]
    assert "hub_command_total" not in known
    assert "reason" not in known["hub_commands_total"]
    assert [n for n, _ in selectors("histogram_quantile(0.99, sum by (le) (rate(hub_match_seconds_bucket[5m])))")
            ] == ["hub_match_seconds_bucket"]
