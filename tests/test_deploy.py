"""The deploy files (deploy/) checked as far as this machine can: HAProxy's own config check, systemd's
unit check, the compose file parsed, every file they name present, and their timeouts consistent
with the hub's ping interval, idle close and drain.

No container daemon runs in CI, so the image is not built and compose is not started here
(docs/operations.md, "Deploying", says what was run where).
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"


def _seconds(value: str) -> float:
    m = re.fullmatch(r"(\d+)(ms|s|m)?", value.strip())
    assert m, value
    n = float(m.group(1))
    return {"ms": n / 1000, "m": n * 60}.get(m.group(2) or "s", n)


def _haproxy() -> str:
    found = shutil.which("haproxy") or "/usr/sbin/haproxy"
    assert Path(found).exists(), "HAProxy is needed (apt-get install haproxy; .ci/run installs it)"
    return found


def test_haproxy_config_is_valid_and_its_timeouts_fit_the_hub() -> None:
    cfg = DEPLOY / "haproxy.cfg"
    check = subprocess.run([_haproxy(), "-c", "-f", str(cfg)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    _check_haproxy_timeouts(cfg.read_text())


def test_the_drills_generated_haproxy_config_is_valid_and_matches_the_deploy_one(tmp_path: Path) -> None:
    from bench.drill import haproxy_config

    text = haproxy_config("127.0.0.1:1", [("hub1", "127.0.0.2:8000"), ("hub2", "127.0.0.3:8000")])
    (tmp_path / "h.cfg").write_text(text)
    check = subprocess.run([_haproxy(), "-c", "-f", str(tmp_path / "h.cfg")], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    _check_haproxy_timeouts(text)
    deploy = (DEPLOY / "haproxy.cfg").read_text()
    for name in ("connect", "tunnel", "http-request", "check", "client", "server"):
        assert _timeout(text, name) == _timeout(deploy, name), name
    for line in ("balance leastconn", "http-check send meth GET uri /readyz", "option redispatch 1", "retries 3",
                 "option allbackups"):
        assert line in text and line in deploy, line


def _timeout(text: str, name: str) -> float:
    m = re.search(rf"^\s*timeout {re.escape(name)} (\S+)", text, re.M)
    assert m, f"timeout {name} missing"
    return _seconds(m.group(1))


def _check_haproxy_timeouts(text: str) -> None:
    # A live WebSocket is never silent longer than the ping interval; a dead one is closed by the
    # hub (idle timeout) before the proxy gives up on it.
    assert _timeout(text, "tunnel") > settings.HUB_IDLE_TIMEOUT_S > settings.HUB_PING_S
    assert _timeout(text, "http-request") == settings.HUB_HTTP_REQUEST_TIMEOUT_S
    assert "option httpchk" in text and "http-check expect status 200" in text


def test_nginx_snippet_timeouts_fit_the_hub() -> None:
    text = (DEPLOY / "nginx-hub.conf").read_text()
    assert text.count("{") == text.count("}")
    ws = text[text.index("location /ws"):]
    ws = ws[:ws.index("}")]
    for name in ("proxy_read_timeout", "proxy_send_timeout"):
        m = re.search(rf"{name} (\S+);", ws)
        assert m, name
        assert _seconds(m.group(1)) > settings.HUB_IDLE_TIMEOUT_S > settings.HUB_PING_S
    assert "proxy_set_header Upgrade $http_upgrade;" in ws and "proxy_http_version 1.1;" in text
    m = re.search(r"client_max_body_size (\d+)m;", text)
    assert m and int(m.group(1)) * 1024 * 1024 == settings.HUB_HTTP_MAX_BODY_BYTES


def test_systemd_unit_stops_later_than_the_drain(tmp_path: Path) -> None:
    text = (DEPLOY / "hub@.service").read_text()
    m = re.search(r"^TimeoutStopSec=(\d+)$", text, re.M)
    assert m and int(m.group(1)) >= settings.HUB_DRAIN_S + 10, "the drain must finish before systemd kills"
    assert re.search(r"^KillSignal=SIGTERM$", text, re.M)
    assert re.search(r"^User=(?!root)\w+", text, re.M)
    analyze = shutil.which("systemd-analyze")
    if analyze:  # where systemd is installed: its own check, with the interpreter this suite runs on
        unit = tmp_path / "hub@.service"
        unit.write_text(text.replace("/srv/hub/.venv/bin/python", sys.executable))
        check = subprocess.run([analyze, "verify", "hub@8001.service"], cwd=tmp_path, capture_output=True,
                               text=True)
        assert check.returncode == 0, check.stdout + check.stderr


def test_dockerfile_installs_the_runtime_set_only_compiles_kernels_and_runs_unprivileged() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", text, re.M)
    for args in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for src in args.split():
            assert src == "." or (ROOT / src).exists(), f"COPY {src}: no such file"
    assert re.search(r"^RUN node console/web/build\.mjs$", text, re.M)
    assert "manage.py collectstatic --noinput" in text
    assert "pip install -r requirements.lock" in text and "requirements-dev.lock" not in text
    assert 'python -c "import matching.kernels as k; k.warm_up()"' in text
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")
    runtime = (ROOT / "requirements.lock").read_text().lower()
    for dev_only in ("pytest", "mypy", "locust", "ruff"):
        assert not re.search(rf"^{dev_only}\b", runtime, re.M), f"{dev_only} in the runtime lock"
    ignored = (ROOT / ".dockerignore").read_text().split()
    for path in ("tests", "bench", "loadtests", ".venv", "var", "node_modules"):
        assert path in ignored, path
    assert "manage.py serve" in text


def test_compose_file_parses_and_names_what_exists() -> None:
    doc = parse_yaml((DEPLOY / "compose.yaml").read_text())
    services = doc["services"]
    assert {"postgres", "redis", "hub1", "hub2", "haproxy", "prometheus", "otel-collector"} <= set(services)
    for name in ("hub1", "hub2"):
        hub = services[name]
        assert (DEPLOY / hub["build"]["context"] / hub["build"]["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
        assert _seconds(hub["stop_grace_period"]) >= settings.HUB_DRAIN_S + 10
        env = hub["environment"]
        assert env["HUB_ENV"] == "production" and env["DATABASE_URL"].startswith("postgres://")
        assert env["REDIS_URL"].startswith("redis://redis:")
        assert hub["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    for svc in services.values():
        for volume in svc.get("volumes", []):
            src = volume.split(":")[0]
            if src.startswith("./"):
                assert (DEPLOY / src).exists(), f"{src} is mounted but missing"
    # HAProxy's servers and Prometheus' targets are the compose services.
    assert re.findall(r"^\s*server ([\w-]+) (\w+):8000", (DEPLOY / "haproxy.cfg").read_text(), re.M) == [
        ("hub1", "hub1"), ("hub2", "hub2"), ("hub1-open", "hub1"), ("hub2-open", "hub2")]
    prom = parse_yaml((DEPLOY / "prometheus.yml").read_text())
    job = prom["scrape_configs"][0]
    assert job["static_configs"][0]["targets"] == ["hub1:8000", "hub2:8000"]
    assert job["metrics_path"] == "/metrics" and job["authorization"]["type"] == "Bearer"
    assert job["authorization"]["credentials_file"] == "/run/secrets/hub_metrics_token"
    assert "hub_metrics_token" in doc["secrets"]
    otel = parse_yaml((DEPLOY / "otel-collector.yaml").read_text())
    assert otel["service"]["pipelines"]["traces"]["receivers"] == ["otlp"]
    assert services["hub1"]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"].endswith(":4318")


def test_the_yaml_reader_handles_what_the_deploy_files_use() -> None:
    doc = parse_yaml('a: &x\n  b: "1"\n  c: [d, "e f"]\nlist:\n  - k: v\n    m: {}\n  - plain\n'
                     "z:\n  <<: *x\n  c: over  # comment\n")
    assert doc == {"a": {"b": "1", "c": ["d", "e f"]}, "list": [{"k": "v", "m": {}}, "plain"],
                   "z": {"b": "1", "c": "over"}}


# --- a YAML reader for the block subset the deploy files use ------------------------------------
# (mappings, sequences, flow lists, quoted and plain scalars, anchors, aliases, merge keys; PyYAML
# is not a dependency of the hub.)

def parse_yaml(text: str) -> Any:
    lines: list[tuple[int, str]] = []
    for raw in text.splitlines():
        assert "\t" not in raw, "tabs in YAML"
        line = _strip_comment(raw).rstrip()
        if line.strip():
            lines.append((len(line) - len(line.lstrip()), line.strip()))
    anchors: dict[str, Any] = {}
    value, pos = _block(lines, 0, lines[0][0] if lines else 0, anchors)
    assert pos == len(lines), f"unparsed YAML from: {lines[pos][1] if pos < len(lines) else ''}"
    return value


def _strip_comment(line: str) -> str:
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i]
    return line


def _block(lines: list[tuple[int, str]], pos: int, indent: int, anchors: dict[str, Any]) -> tuple[Any, int]:
    if lines[pos][1].startswith("- ") or lines[pos][1] == "-":
        items: list[Any] = []
        while pos < len(lines) and lines[pos][0] == indent and (lines[pos][1].startswith("- ") or lines[pos][1] == "-"):
            rest = lines[pos][1][2:].strip()
            if re.match(r"^[\w.<-]+:(\s|$)", rest):  # "- key: value": a mapping item
                sub = [(indent + 2, rest)]
                end = pos + 1
                while end < len(lines) and lines[end][0] > indent:
                    sub.append(lines[end])
                    end += 1
                value, _ = _block(sub, 0, indent + 2, anchors)
                items.append(value)
                pos = end
            else:
                items.append(_scalar(rest, anchors))
                pos += 1
        return items, pos
    out: dict[str, Any] = {}
    while pos < len(lines) and lines[pos][0] == indent:
        m = re.match(r"^([^:]+?|\"[^\"]*\"):(?:\s+(.*))?$", lines[pos][1])
        assert m, f"not a mapping entry: {lines[pos][1]}"
        key, rest = m.group(1).strip('"'), (m.group(2) or "").strip()
        anchor = None
        if rest.startswith("&"):
            anchor, _, rest = rest.partition(" ")
            anchor, rest = anchor[1:], rest.strip()
        pos += 1
        if rest:
            value = _scalar(rest, anchors)
        elif pos < len(lines) and lines[pos][0] > indent:
            value, pos = _block(lines, pos, lines[pos][0], anchors)
        elif pos < len(lines) and lines[pos][0] == indent and lines[pos][1].startswith("- "):
            value, pos = _block(lines, pos, indent, anchors)
        else:
            value = None
        if anchor:
            anchors[anchor] = value
        if key == "<<":
            out = {**value, **out}
        else:
            out[key] = value
    return out, pos


def _scalar(text: str, anchors: dict[str, Any]) -> Any:
    if text.startswith("*"):
        return anchors[text[1:]]
    if text.startswith("[") and text.endswith("]"):
        inner = text[1:-1].strip()
        return [_scalar(part.strip(), anchors) for part in _split_flow(inner)] if inner else []
    if text == "{}":
        return {}
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    assert not text.startswith(("{", "|", ">")), f"unsupported YAML: {text}"
    return text


def _split_flow(text: str) -> list[str]:
    parts, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts
