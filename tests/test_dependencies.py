"""The runtime lock is enough to run the hub: every third-party module the running code imports
comes from a distribution in requirements.lock, and every such distribution's own requirements are
in it too. So a production image that installs only requirements.lock (no pytest, mypy, Locust)
imports nothing it lacks."""
from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import PackageNotFoundError, packages_distributions, requires
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
# What a hub process loads: the apps, the entry points. Not tests, bench, loadtests (dev only).
RUNTIME = ("core", "hub", "rooms", "matching", "ai_assist", "notify", "console", "asgi.py", "manage.py")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock(path: str) -> set[str]:
    names = set()
    for line in (ROOT / path).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            names.add(canonical(re.split(r"[=<>!~\[; ]", line)[0]))
    return names


def runtime_files() -> list[Path]:
    files: list[Path] = []
    for item in RUNTIME:
        path = ROOT / item
        files += [path] if path.is_file() else sorted(path.rglob("*.py")) if path.is_dir() else []
    return files


def _type_checking_only(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def third_party_imports() -> dict[str, set[str]]:
    """Top-level module -> files importing it (imports under `if TYPE_CHECKING:` never run)."""
    local = {p.name for p in ROOT.iterdir() if p.is_dir()} | {"asgi", "manage"}
    found: dict[str, set[str]] = {}
    for path in runtime_files():
        tree = ast.parse(path.read_text(), str(path))
        parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            if _type_checking_only(node, parents):
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in local:
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_runtime_import_is_in_the_runtime_lock() -> None:
    runtime = lock("requirements.lock")
    by_module = packages_distributions()
    imports = third_party_imports()
    assert {"django", "daphne", "psycopg", "redis", "whitenoise"} <= set(imports)  # the scan sees them
    missing = {}
    for module, files in sorted(imports.items()):
        dists = {canonical(d) for d in by_module.get(module, [])}
        if not dists & runtime:
            missing[module] = (sorted(dists) or ["not installed"], sorted(files)[:3])
    assert not missing, f"imported by the running hub but not in requirements.lock: {missing}"


def test_the_runtime_lock_is_closed_under_requirements() -> None:
    runtime = lock("requirements.lock")
    assert not runtime & {"pytest", "mypy", "locust", "ruff", "hypothesis"}
    missing: dict[str, list[str]] = {}
    for dist in sorted(runtime):
        try:
            reqs = requires(dist) or []
        except PackageNotFoundError:
            missing.setdefault(dist, []).append("(pinned but not installed)")
            continue
        for text in reqs:
            req = Requirement(text)
            # Unconditional ones for this interpreter (extras are opt-in and pinned when wanted).
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            if canonical(req.name) not in runtime:
                missing.setdefault(dist, []).append(req.name)
    assert not missing, f"runtime distributions needing something outside requirements.lock: {missing}"
