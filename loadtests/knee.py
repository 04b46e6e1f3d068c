"""The knee of a step run: the first user count at which any request name's p95 passes a limit.

    LOCUST_SHAPE=step LOCUST_USERS=800 LOCUST_STEP_USERS=100 LOCUST_STEP_S=40 LOCUST_RUN_TIME=330s make loadtest
    .venv/bin/python -m loadtests.knee [loadtests/reports/run_stats_history.csv] [--limit-ms 1000]

Reads Locust's full stats history (written by `make loadtest` under LOCUST_SHAPE=step): for each
user count, the worst current p95 (Locust's last-10-s window) per request name over the rows taken
at that count, skipping the first `--settle-s` seconds of each step and everything once the user
count falls (the run stopping). `PUSH assist` (an AI answer's whole length) is left out; its first
token counts. Prints one line per step and the knee.
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

EXCLUDED = {"assist"}


def steps(rows: list[dict[str, str]], settle_s: float = 10.0) -> dict[int, dict[str, float]]:
    """user count -> request name -> worst p95 (ms) seen at that count after it settled."""
    first_seen: dict[int, int] = {}
    out: dict[int, dict[str, float]] = {}
    peak = 0
    for row in rows:
        try:
            users, ts, p95 = int(row["User Count"]), int(row["Timestamp"]), row.get("95%", "N/A")
        except (KeyError, ValueError):
            continue
        if users < peak:
            break  # the run is stopping: users leave with their calls cut short
        peak = users
        name = row.get("Name", "")
        if not name or name == "Aggregated" or name in EXCLUDED or name.endswith(":retried"):
            continue
        first_seen.setdefault(users, ts)
        if ts - first_seen[users] < settle_s or p95 in ("N/A", ""):
            continue
        worst = out.setdefault(users, {})
        worst[name] = max(worst.get(name, 0.0), float(p95))
    return dict(sorted(out.items()))


def knee(by_users: dict[int, dict[str, float]], limit_ms: float) -> tuple[int, str, float] | None:
    for users, names in by_users.items():
        over = [(p95, name) for name, p95 in names.items() if p95 > limit_ms]
        if over:
            p95, name = max(over)
            return users, name, p95
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("path", nargs="?", default=str(Path(__file__).parent / "reports" / "run_stats_history.csv"))
    ap.add_argument("--limit-ms", type=float, default=1000.0)
    ap.add_argument("--settle-s", type=float, default=10.0)
    args = ap.parse_args(argv)
    with open(args.path, newline="") as f:
        by_users = steps(list(csv.DictReader(f)), args.settle_s)
    for users, names in by_users.items():
        name, p95 = max(names.items(), key=lambda kv: kv[1]) if names else ("-", 0.0)
        print(f"{users:>5} users: worst p95 {p95:,.0f} ms ({name})")
    found = knee(by_users, args.limit_ms)
    if found is None:
        print(f"knee: not reached (every p95 <= {args.limit_ms:,.0f} ms up to {max(by_users, default=0)} users)")
    else:
        print(f"knee: {found[0]} users ({found[1]} p95 {found[2]:,.0f} ms > {args.limit_ms:,.0f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
