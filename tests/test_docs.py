"""The docs hold together: links resolve, nothing points outside the repository, and
docs/protocol.md names every rpc method (with its params), namespace, error code and close code
the code has."""
from __future__ import annotations

import html
import re
import subprocess
from functools import cache
from pathlib import Path

from tests.support import ROOT

PROTOCOL = ROOT / "docs" / "protocol.md"
CODE_DIRS = ("hub", "rooms", "matching", "ai_assist", "core")

FENCE = re.compile(r"^(```|~~~)")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"`[^`]*`")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")
# Built from pieces so this file does not match its own patterns.
OUTSIDE = (re.compile(re.escape("../" + "shared")), re.compile(re.escape("/" + "work/")))
ISSUE_REF = re.compile(r"\bissue[ \t]+#?\d+\b|\bthe issue[ \t]+notes\b", re.IGNORECASE)


UNTRACKED_DIRS = {".git", ".venv", "var", "__pycache__", "reports", ".mypy_cache", ".ruff_cache"}


def tracked(*patterns: str) -> list[Path]:
    """The repository's files (git ls-files); in a copy without .git, every file outside build dirs."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--", *patterns], cwd=ROOT, capture_output=True,
                             check=True).stdout.decode()
    except (OSError, subprocess.CalledProcessError):
        files = [p for p in ROOT.rglob("*") if p.is_file()
                 and not UNTRACKED_DIRS & set(p.relative_to(ROOT).parts)]
        return [p for p in files if not patterns or any(p.match(pat) for pat in patterns)]
    return [ROOT / name for name in out.split("\0") if name and (ROOT / name).is_file()]


def markdown_files() -> list[Path]:
    files = set(tracked("*.md"))
    # Also the ones this suite is about when they are new and not yet added to git.
    files |= {ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "bench").rglob("README.md")}
    return sorted(f for f in files if f.is_file())


def prose_lines(path: Path) -> list[tuple[int, str]]:
    """Lines outside fenced code blocks, with their numbers."""
    out: list[tuple[int, str]] = []
    fenced = False
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if FENCE.match(line.lstrip()):
            fenced = not fenced
            continue
        if not fenced:
            out.append((n, line))
    return out


def slug(heading: str) -> str:
    """GitHub's heading anchor: markup dropped, lower case, punctuation removed, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = html.unescape(text.replace("`", "")).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    seen: dict[str, int] = {}
    out: set[str] = set()
    for _, line in prose_lines(path):
        m = HEADING.match(line)
        if m is None:
            continue
        base = slug(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return frozenset(out)


def test_relative_links_resolve_to_files_and_headings() -> None:
    broken: list[str] = []
    checked = 0
    for md in markdown_files():
        for n, line in prose_lines(md):
            for target in LINK.findall(INLINE_CODE.sub("", line)):
                if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):
                    continue  # http:, https:, mailto: ...
                checked += 1
                where = f"{md.relative_to(ROOT)}:{n}: {target}"
                path_part, _, fragment = target.partition("#")
                dest = (md.parent / path_part).resolve() if path_part else md
                if not dest.is_relative_to(ROOT):
                    broken.append(f"{where} (outside the repository)")
                elif not dest.exists():
                    broken.append(f"{where} (no such file)")
                elif fragment and dest.suffix == ".md" and fragment.lower() not in anchors(dest):
                    broken.append(f"{where} (no heading #{fragment} in {dest.relative_to(ROOT)})")
    assert checked > 10, "the link parser found almost no links"
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_no_tracked_file_points_outside_the_repository() -> None:
    found: list[str] = []
    for path in tracked():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # binary
        for pattern in OUTSIDE:
            for m in pattern.finditer(text):
                line = text.count("\n", 0, m.start()) + 1
                found.append(f"{path.relative_to(ROOT)}:{line}: {m.group(0)}")
    assert not found, "paths outside the repository:\n" + "\n".join(found)


def test_docs_and_code_cite_no_issue_numbers() -> None:
    found: list[str] = []
    for path in tracked("*.md", "*.py", "Makefile", "*.toml", "*.cfg", "*.txt", "*.sh"):
        text = path.read_text(encoding="utf-8")
        for m in ISSUE_REF.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            found.append(f"{path.relative_to(ROOT)}:{line}: {m.group(0)}")
    assert not found, "references to issues the reader cannot see:\n" + "\n".join(found)


def protocol_text() -> str:
    return PROTOCOL.read_text(encoding="utf-8")


def test_protocol_names_every_rpc_method() -> None:
    from hub.rpc import REGISTRY

    text = protocol_text()
    assert len(REGISTRY) > 20, "the rpc registry looks unloaded"
    missing = sorted(name for name in REGISTRY if f"`{name}`" not in text)
    assert not missing, f"rpc methods not described in docs/protocol.md: {missing}"


def test_protocol_names_every_namespace() -> None:
    from hub.channels import NAMESPACES

    text = protocol_text()
    missing = sorted(ns for ns in NAMESPACES if f"`{ns}:<" not in text)
    assert not missing, f"channel namespaces not described in docs/protocol.md: {missing}"


def code_sources() -> list[Path]:
    return [p for d in CODE_DIRS for p in sorted((ROOT / d).rglob("*.py")) if "migrations" not in p.parts]


def test_protocol_lists_every_error_code() -> None:
    from core import errors

    codes = set(errors.HTTP_STATUS)
    codes |= {v for k, v in vars(errors).items() if k.isupper() and isinstance(v, str)}
    literal = re.compile(r"HubError\(\s*[\"']([a-z_]+)[\"']")
    for path in code_sources():
        codes |= set(literal.findall(path.read_text(encoding="utf-8")))
    text = protocol_text()
    missing = sorted(c for c in codes if f"`{c}`" not in text)
    assert not missing, f"error codes not in docs/protocol.md: {missing}"
    # Each one in the error table, with its HTTP status.
    for code, status in errors.HTTP_STATUS.items():
        assert re.search(rf"^\| `{code}` \|.*\| {status} \|$", text, re.MULTILINE), \
            f"{code} ({status}) is not a row of the error table"


def test_protocol_lists_every_close_code() -> None:
    patterns = (re.compile(r"\bCLOSE_[A-Z_]+\s*=\s*(\d{4})\b"), re.compile(r"\.close\(\s*(\d{4})\s*\)"),
                re.compile(r"[\"']code[\"']\s*:\s*(\d{4})\b"))
    codes: set[str] = set()
    for path in code_sources():
        source = path.read_text(encoding="utf-8")
        for pattern in patterns:
            codes |= set(pattern.findall(source))
    assert {"1009", "4001", "4009"} <= codes, "the close-code scan found too little"
    text = protocol_text()
    missing = sorted(c for c in codes if not re.search(rf"^\| {c} \|", text, re.MULTILINE))
    assert not missing, f"close codes not in the table of docs/protocol.md: {missing}"


def test_protocol_gives_every_rpc_params_field() -> None:
    """Each method's entry (from its bold name to the next method's) names every field of its params."""
    from hub.rpc import REGISTRY

    text = protocol_text()
    starts = sorted((m.start(), m.group(1)) for m in re.finditer(r"\*\*`([a-z_]+\.[a-z_]+)`\*\*", text))
    entries: dict[str, str] = {}
    for (start, name), (end, _) in zip(starts, [*starts[1:], (len(text), "")], strict=True):
        entries.setdefault(name, text[start:end])
    missing: list[str] = []
    for name, m in sorted(REGISTRY.items()):
        entry = entries.get(name)
        if entry is None:
            missing.append(f"{name}: no **`{name}`** entry")
            continue
        missing += [f"{name}: {field}" for field in m.params.get("properties", {})
                    if not re.search(rf"\b{re.escape(field)}\b", entry)]
    assert not missing, "rpc params not described in docs/protocol.md:\n" + "\n".join(missing)
