"""`make bench`: run every benchmark in turn; each prints its own figures and targets."""
from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path


def main() -> int:
    names = sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if m.name.startswith("bench_"))
    only = sys.argv[1:]
    failed = 0
    for name in names:
        if only and name not in only:
            continue
        print(f"\n===== bench.{name} =====", flush=True)
        importlib.invalidate_caches()
        rc = subprocess.call([sys.executable, "-m", f"bench.{name}"])
        failed += rc != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
