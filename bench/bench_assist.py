"""AI assist relay overhead: the relay (run_assist, transcripts written) vs a direct SDK stream.

    .venv/bin/python -m bench.bench_assist [--concurrency 200] [--requests 1000] [--tokens 20] [--delay-ms 100]

Both sides stream chat completions through the official openai SDK, read the same way (each chunk as
the dict the SDK parsed, as ai_assist.providers does), from the same fake upstream
(`tests.fakes.ai_upstream`, started here as a separate process so it does not share this
process's CPU; it sends token i at start + i * delay, so a stream's length does not drift with
load). "total" is the time from the request to the end of the answer (the `done` event for the
relay), "first" the time to the first text delta.

Paired design: 200 pairs in flight (200 relay streams through this process at once, plus their
200 direct twins), each pair one direct and one relay request started in the same event-loop turn
(which goes first alternates), so both see the same moment of load; the overhead is the median
of the per-pair differences (relay minus direct), which cancels the load noise common to both.
The difference of the two sides' p50s is printed too. A sequential
calibration with a zero-delay upstream measures the relay's own cost per request with nothing
else running. Budget: relay p50 overhead at most 2 ms in total and 5 ms to the first token, at
200 concurrent relay streams. Transcripts go to var/bench-assist.sqlite3 unless DATABASE_URL is
set.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BUDGET_TOTAL_MS = 2.0
BUDGET_FIRST_MS = 5.0
KEY = "sk-bench-0000000000000000"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _setup_django(base_url: str) -> None:
    os.environ.setdefault("HUB_ENV", "development")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "core.settings")
    if not os.environ.get("DATABASE_URL"):
        (ROOT / "var").mkdir(exist_ok=True)
        os.environ["DATABASE_URL"] = f"sqlite:///{ROOT / 'var' / 'bench-assist.sqlite3'}"
    os.environ.update({"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": base_url, "ANTHROPIC_API_KEY": "",
                       "AI_PROVIDERS": "openai", "AI_MAX_OUTPUT_TOKENS": "256"})
    os.environ.pop("OPENAI_API_KEY_FILE", None)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


@dataclass
class Samples:
    total: list[float] = field(default_factory=list)
    first: list[float] = field(default_factory=list)
    errors: int = 0


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


async def direct_one(client: Any, prompt: str, out: Samples) -> None:
    from ai_assist import config

    cfg = config.get()
    t0 = time.perf_counter()
    first = None
    try:
        # Exactly the request the relay sends (system prompt, model, limits), read the way it reads
        # it (each chunk the dict the SDK parsed: ai_assist.providers), so the difference is the relay.
        import openai

        stream = await client.post("/chat/completions", cast_to=object, stream=True,
                                   stream_cls=openai.AsyncStream[object], body={
                                       "model": cfg.provider_settings["openai"].model,
                                       "messages": [{"role": "system", "content": cfg.system_prompt},
                                                    {"role": "user", "content": prompt}],
                                       "stream": True, "stream_options": {"include_usage": True},
                                       "max_completion_tokens": cfg.max_output_tokens})
        try:
            async for chunk in stream:
                for choice in chunk.get("choices") or ():
                    if (choice.get("delta") or {}).get("content") and first is None:
                        first = time.perf_counter()
        finally:
            await stream.close()
    except Exception:  # noqa: BLE001 - counted, the bench goes on
        out.errors += 1
        return
    end = time.perf_counter()
    out.total.append((end - t0) * 1000)
    out.first.append(((first or end) - t0) * 1000)


class TimingSink:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.first: float | None = None
        self.end: float | None = None
        self.failed = False

    def delta(self, assist: str, text: str) -> None:
        if self.first is None:
            self.first = time.perf_counter()

    def done(self, assist: str, provider: str, usage: dict[str, int], finish: str) -> None:
        self.end = time.perf_counter()

    def error(self, assist: str, code: str, message: str, incomplete: bool) -> None:
        self.failed = True


@dataclass
class BenchCaller:
    user: str
    tenant: str = "bench"


async def relay_one(n: int, prompt: str, out: Samples, written: list[bool]) -> None:
    from ai_assist.actions import charge_answer
    from ai_assist.relay import run_assist

    sink = TimingSink()
    # Charged as the assist actions do, so the relay side does a real request's work.
    result = await run_assist(BenchCaller(f"bench-{n % 1000}"), prompt, [], sink, charge=charge_answer)
    written.append(result.transcript_written)
    if sink.failed or sink.end is None:
        out.errors += 1
        return
    out.total.append((sink.end - sink.t0) * 1000)
    out.first.append(((sink.first or sink.end) - sink.t0) * 1000)


async def run_pairs(n_pairs: int, concurrency: int, client: Any, direct: Samples, via_relay: Samples,
                    written: list[bool], diffs: Samples, ramp_s: float = 0.0) -> float:
    """`concurrency` workers, each running one direct and one relay request at a time, started
    together; per-pair differences go to `diffs` (pairs where either side failed are skipped)."""
    prompt = "please draft a short reply confirming the plumber visit tomorrow morning"
    pending = iter(range(n_pairs))
    workers = max(1, concurrency)

    async def worker(w: int) -> None:
        # Staggered starts: 200 streams opened in the same millisecond measure the burst, not the relay.
        await asyncio.sleep(ramp_s * w / workers)
        for n in pending:
            d, r = Samples(), Samples()
            if n % 2:
                await asyncio.gather(direct_one(client, prompt, d), relay_one(n, prompt, r, written))
            else:
                await asyncio.gather(relay_one(n, prompt, r, written), direct_one(client, prompt, d))
            direct.errors += d.errors
            via_relay.errors += r.errors
            direct.total += d.total
            direct.first += d.first
            via_relay.total += r.total
            via_relay.first += r.first
            if d.total and r.total:
                diffs.total.append(r.total[0] - d.total[0])
                diffs.first.append(r.first[0] - d.first[0])

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(workers)))
    return time.perf_counter() - t0


def _set_delay(base_url: str, delay_ms: float) -> None:
    req = urllib.request.Request(base_url.removesuffix("/v1") + "/_config", method="POST",
                                 data=json.dumps({"delay_ms": delay_ms}).encode(),
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=5).close()


async def bench(args: argparse.Namespace, base_url: str) -> int:
    from ai_assist import relay
    from ai_assist.providers import OpenAIProvider

    relay.reset()
    provider = relay.providers()[0]
    assert isinstance(provider, OpenAIProvider)
    # One client (one connection pool) for both sides, built exactly as the relay builds its own.
    client = provider._make(KEY)
    provider.use_client(client)
    direct, via_relay, diffs = Samples(), Samples(), Samples()
    written: list[bool] = []
    ramp = args.tokens * args.delay_ms / 1000
    # Sequential calibration against a zero-delay upstream: the relay's own cost per request.
    cal_d, cal_r = Samples(), Samples()
    if args.calibrate:
        _set_delay(base_url, 0.0)
        for i in range(args.calibrate):
            await direct_one(client, "calibration prompt", cal_d)
            await relay_one(i, "calibration prompt", cal_r, [])
        _set_delay(base_url, args.delay_ms)
    # Warm both paths (connection pools, imports, the transcript writer) and discard.
    await run_pairs(args.concurrency, args.concurrency, client, Samples(), Samples(), [], Samples(), ramp)
    elapsed = await run_pairs(args.requests, args.concurrency, client, direct, via_relay, written, diffs, ramp)
    print(f"assist relay bench: {args.requests} pairs (one direct and one relay request started together), "
          f"{args.concurrency} pairs in flight ({args.concurrency} concurrent relay streams), "
          f"{args.tokens} tokens/answer, "
          f"{args.delay_ms:g} ms between tokens, {elapsed:.1f} s")
    print(f"{'':8} {'total p50':>10} {'total p99':>10} {'first p50':>10} {'first p99':>10} errors   (ms)")
    for name, s in (("direct", direct), ("relay", via_relay)):
        print(f"{name:8} {pct(s.total, 50):10.2f} {pct(s.total, 99):10.2f} {pct(s.first, 50):10.2f} "
              f"{pct(s.first, 99):10.2f} {s.errors}")
    over_total = pct(diffs.total, 50)
    over_first = pct(diffs.first, 50)
    print(f"overhead, median of the {len(diffs.total)} paired differences: total {over_total:+.2f} ms "
          f"(budget {BUDGET_TOTAL_MS} ms), first token {over_first:+.2f} ms (budget {BUDGET_FIRST_MS} ms); "
          f"p90 of the differences: total {pct(diffs.total, 90):+.2f} ms, first {pct(diffs.first, 90):+.2f} ms")
    print(f"difference of the sides' p50s: total {pct(via_relay.total, 50) - pct(direct.total, 50):+.2f} ms, "
          f"first token {pct(via_relay.first, 50) - pct(direct.first, 50):+.2f} ms; "
          f"of their p99s: total {pct(via_relay.total, 99) - pct(direct.total, 99):+.2f} ms, "
          f"first token {pct(via_relay.first, 99) - pct(direct.first, 99):+.2f} ms")
    print(f"transcripts written: {sum(written)} of {len(written)} relay requests; "
          f"stdev of totals: direct {statistics.pstdev(direct.total):.1f} ms, "
          f"relay {statistics.pstdev(via_relay.total):.1f} ms")
    if args.calibrate:
        print(f"sequential, zero-delay upstream ({args.calibrate} pairs, one stream at a time): total p50 "
              f"direct {pct(cal_d.total, 50):.2f} ms, relay {pct(cal_r.total, 50):.2f} ms "
              f"(overhead {pct(cal_r.total, 50) - pct(cal_d.total, 50):+.2f} ms); first token overhead "
              f"{pct(cal_r.first, 50) - pct(cal_d.first, 50):+.2f} ms")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"machine: {os.cpu_count()} CPUs, load average {load:.2f} at the end")
    ok = (over_total <= BUDGET_TOTAL_MS and over_first <= BUDGET_FIRST_MS and not direct.errors
          and not via_relay.errors and all(written))
    print("PASS" if ok else "FAIL")
    await client.close()
    return 0 if ok or args.no_check else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--concurrency", type=int, default=200, help="pairs in flight = concurrent relay streams")
    parser.add_argument("--requests", type=int, default=1000, help="pairs (one direct, one relay)")
    parser.add_argument("--tokens", type=int, default=20)
    parser.add_argument("--delay-ms", type=float, default=100.0, help="fake upstream delay between tokens")
    parser.add_argument("--calibrate", type=int, default=100,
                        help="sequential pairs against a zero-delay upstream, measured first (0: skip)")
    parser.add_argument("--no-check", action="store_true", help="exit 0 even over budget")
    args = parser.parse_args()
    port = _free_port()
    fake = subprocess.Popen([sys.executable, "-m", "tests.fakes.ai_upstream", "--port", str(port),
                             "--tokens", str(args.tokens), "--delay-ms", str(args.delay_ms)],
                            cwd=ROOT, stdout=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 15
        while True:
            try:
                urllib.request.urlopen(url + "/_stats", timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.1)
        _setup_django(url + "/v1")
        code = asyncio.run(bench(args, url + "/v1"))
    finally:
        fake.terminate()
        fake.wait(5)
    sys.exit(code)


if __name__ == "__main__":
    main()
