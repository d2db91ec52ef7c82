"""`make bench`: what the proxy costs, measured with wrk against the same fake upstream.

In one run: the fake upstream called directly, through a bare aiohttp pass-through
(bench/bare_passthrough.py, the floor any Python proxy pays; on uvloop, as the proxy is) and
through `python -m proxy` doing all its work (sessions, usage parsing, pricing, Prometheus, one
JSON log line per request at the default level, the SQLite writer), at concurrency 1 and 32, JSON
and streaming; rounds rotate the
order of the paths so drift on a shared machine hits all alike. Then the writer's sustained rows/s
with the event loop kept busy (bench/writer_rate.py) and RSS growth over 50,000 one-message
conversations (bench/session_memory.py), and what admission costs with limits on, in process and
in Redis (bench/limits.py).

    .venv/bin/python -m bench.proxy_overhead            # full run, about 4 minutes
    .venv/bin/python -m bench.proxy_overhead --quick    # one short round, about 1 minute
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import attrs
import structlog

from . import limits, session_memory, writer_rate, wrk
from .servers import Proxy, Server, cpu_seconds

HIGH = 32
PATHS = ("direct", "bare", "proxy")
TITLES = {"direct": "Direct", "bare": "Bare pass-through", "proxy": "Vidurai proxy"}


@attrs.frozen
class Scenario:
    """One kind of request, as the Anthropic or OpenAI SDK sends it."""

    name: str
    provider: str  # "anthropic" or "openai"
    stream: bool

    def path(self, target: str) -> str:
        """The request path on a target: the fake upstream serves each provider under a prefix."""
        upstream = target != "proxy"  # the bare pass-through forwards paths to the upstream as they are
        if self.provider == "anthropic":
            return ("/anthropic" if upstream else "") + "/v1/messages"
        return ("/openai" if upstream else "") + "/v1/chat/completions"

    def headers(self) -> dict[str, str]:
        common = {"content-type": "application/json", "user-agent": "vidurai-bench/2"}
        if self.provider == "anthropic":
            return {**common, "x-api-key": "sk-ant-bench", "anthropic-version": "2023-06-01"}
        return {**common, "authorization": "Bearer sk-bench"}

    def body(self, first_message: str) -> str:
        """A one-message conversation (below any compression threshold)."""
        body: dict[str, object] = {
            "model": "claude-fake-1" if self.provider == "anthropic" else "gpt-fake-1",
            "max_tokens": 64,
            "messages": [{"role": "user", "content": first_message}],
        }
        if self.stream:
            body["stream"] = True  # OpenAI without stream_options, as the SDK sends it by default
        return json.dumps(body)

    def script(self, directory: Path) -> Path:
        """A wrk script cycling through HIGH conversations, one per connection at concurrency 32."""
        bodies = [self.body(f"Benchmark conversation {n}: say hello.") for n in range(HIGH)]
        name = self.name.replace(" ", "_").replace(",", "")
        return wrk.script(directory / f"{name}.lua", self.headers(), bodies)


SCENARIOS = (
    Scenario("Anthropic messages, JSON", "anthropic", False),
    Scenario("Anthropic messages, stream", "anthropic", True),
    Scenario("OpenAI chat, stream", "openai", True),
)


@attrs.frozen
class Plan:
    rounds: int
    low_seconds: float  # per cell at concurrency 1
    high_seconds: float  # per cell at concurrency HIGH
    conversations: int  # for the memory measurement
    writer_rows: int

    @classmethod
    def of(cls, quick: bool) -> Plan:
        return cls(1, 1, 2, 5_000, 20_000) if quick else cls(3, 2, 3, 50_000, 50_000)


@attrs.define
class Cell:
    """One (scenario, path, concurrency) over all rounds."""

    runs: list[wrk.WrkResult] = attrs.Factory(list)
    cpu_seconds: float = 0.0

    @property
    def requests(self) -> int:
        return sum(r.requests for r in self.runs)

    @property
    def rps(self) -> float:
        return statistics.median(r.rps for r in self.runs)

    @property
    def p50(self) -> float:
        return statistics.median(r.p50_ms for r in self.runs)

    @property
    def p99(self) -> float:
        return statistics.median(r.p99_ms for r in self.runs)

    @property
    def errors(self) -> int:
        return sum(r.errors + r.status_errors for r in self.runs)

    @property
    def cpu_ms(self) -> float:
        return self.cpu_seconds * 1000 / self.requests if self.requests else math.nan


Key = tuple[str, str, int]  # scenario, path, concurrency


def measure(
    plan: Plan, urls: dict[str, str], pids: dict[str, int], scripts: dict[str, Path]
) -> dict[Key, Cell]:
    """Every cell, round after round; the CPU of the process behind each path is charged to it."""
    cells: dict[Key, Cell] = {}
    for scenario in SCENARIOS:  # connections, sessions and caches warm up before anything counts
        for path in PATHS:
            wrk.run(urls[path] + scenario.path(path), scripts[scenario.name], connections=HIGH, seconds=1)
    for round_no in range(plan.rounds):
        order = PATHS[round_no % 3 :] + PATHS[: round_no % 3]
        print(f"  round {round_no + 1}/{plan.rounds}: {', '.join(order)}", file=sys.stderr)
        for scenario in SCENARIOS:
            for concurrency, seconds in ((1, plan.low_seconds), (HIGH, plan.high_seconds)):
                for path in order:
                    cell = cells.setdefault((scenario.name, path, concurrency), Cell())
                    before = cpu_seconds(pids[path])
                    url = urls[path] + scenario.path(path)
                    cell.runs.append(
                        wrk.run(url, scripts[scenario.name], connections=concurrency, seconds=seconds)
                    )
                    cell.cpu_seconds += cpu_seconds(pids[path]) - before
    return cells


def _verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def render(
    cells: dict[Key, Cell],
    writer: writer_rate.WriterRate,
    memory: session_memory.SessionMemoryResult,
    admission: limits.LimitsResult,
    plan: Plan,
) -> str:
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    lines = [
        "### Proxy overhead (`make bench`)",
        "",
        f"wrk, {platform.python_implementation()} {platform.python_version()}, "
        f"aiohttp {aiohttp.__version__}, "
        f"{os.cpu_count()} CPUs shared by wrk, the upstream and the path measured (load average {load} "
        f"at the end). {plan.rounds} rounds; per round and cell {plan.low_seconds:g} s at concurrency 1 and "
        f"{plan.high_seconds:g} s at concurrency {HIGH}; medians over rounds. One-message conversations "
        "(below the compression threshold), 32 of them cycled. The bare pass-through and the proxy "
        "both run on uvloop (bench/floor.py compares the loops and a byte relay at concurrency 1).",
        "",
        f"Throughput at concurrency {HIGH}, requests/second, and CPU per request of each server process "
        "(all its threads; least disturbed by other load on the machine):",
        "",
        "| Request | Direct | Bare pass-through | Vidurai proxy | Proxy vs bare | Upstream CPU ms/req "
        "| Bare CPU ms/req | Proxy CPU ms/req |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    worst_share, worst_added, peak = math.inf, -math.inf, 0.0
    for scenario in SCENARIOS:
        high = {path: cells[(scenario.name, path, HIGH)] for path in PATHS}
        ratios = [p.rps / b.rps for p, b in zip(high["proxy"].runs, high["bare"].runs, strict=True) if b.rps]
        share = statistics.median(ratios) if ratios else math.nan
        worst_share = min(worst_share, share)
        peak = max(peak, high["proxy"].rps)
        rates = " | ".join(f"{high[path].rps:.0f}" for path in PATHS)
        cpu = " | ".join(f"{high[path].cpu_ms:.2f}" for path in PATHS)
        lines.append(f"| {scenario.name} | {rates} | {share:.0%} | {cpu} |")
    lines += [
        "",
        "Latency, milliseconds, p50 / p99 (wrk --latency):",
        "",
        "| Request | Conc. | Direct | Bare pass-through | Vidurai proxy | Proxy adds to direct, p50 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for concurrency in (1, HIGH):
        for scenario in SCENARIOS:
            c = {path: cells[(scenario.name, path, concurrency)] for path in PATHS}
            added = c["proxy"].p50 - c["direct"].p50
            if concurrency == 1:
                worst_added = max(worst_added, added)
            pairs = " | ".join(f"{c[path].p50:.2f} / {c[path].p99:.2f}" for path in PATHS)
            lines.append(f"| {scenario.name} | {concurrency} | {pairs} | {added:+.2f} |")
    errors = [
        f"{k[1]} / {k[0]} / concurrency {k[2]}: {cell.errors}" for k, cell in cells.items() if cell.errors
    ]
    if errors:
        lines += ["", "Errors (socket errors, timeouts, status >= 400): " + "; ".join(errors)]
    writer_ratio = writer.busy_rows_per_s / peak if peak else math.nan
    lines += [
        "",
        writer.describe(),
        "",
        memory.describe(),
        "",
        admission.describe(),
        "",
        "Targets of issue 11:",
        "",
        f"- proxy ≥ 70% of the bare pass-through's req/s at concurrency {HIGH}: worst {worst_share:.0%}, "
        f"{_verdict(worst_share >= 0.7)}",
        f"- added p50 over direct at concurrency 1 ≤ 0.6 ms: worst {worst_added:+.2f} ms, "
        f"{_verdict(worst_added <= 0.6)}",
        f"- writer ≥ 3x the proxy's peak rate ({peak:.0f} req/s, one row each): {writer_ratio:.1f}x, "
        f"{_verdict(writer_ratio >= 3)}",
        f"- RSS growth after {memory.conversations:,} one-message conversations ≤ 100 MiB: "
        f"{memory.growth_mib:.0f} MiB, {_verdict(memory.growth_mib <= 100)}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.proxy_overhead", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="one short round and fewer conversations")
    parser.add_argument("--rounds", type=int, help="number of rounds (default 3, --quick 1)")
    args = parser.parse_args(argv)
    plan = Plan.of(args.quick)
    if args.rounds:
        plan = attrs.evolve(plan, rounds=args.rounds)
    wrk.binary()
    # The writer measured in this process logs only what matters (stdout carries the report).
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="vidurai-bench-") as tmp:
        work = Path(tmp)
        upstream = Server.start("upstream")
        bare = Server.start("bare", upstream.url)
        proxy: Proxy | None = None
        try:
            proxy = Proxy.start(upstream.url, work / "proxy")
            urls = {"direct": upstream.url, "bare": bare.url, "proxy": proxy.url}
            pids = {"direct": upstream.pid, "bare": bare.pid, "proxy": proxy.pid}
            scripts = {s.name: s.script(work) for s in SCENARIOS}
            print("Measuring direct, bare and proxy...", file=sys.stderr)
            cells = measure(plan, urls, pids, scripts)
            code = proxy.stop()
            stored = writer_rate.stored_requests(proxy.database)
            print(f"  the proxy stored {stored} request rows; exit code {code}", file=sys.stderr)
            proxy = None
            print("Measuring the writer...", file=sys.stderr)
            writer = asyncio.run(writer_rate.measure(work / "writer.db", plan.writer_rows))
            print(f"Measuring memory over {plan.conversations:,} conversations...", file=sys.stderr)
            memory = session_memory.measure(upstream.url, work / "memory", plan.conversations)
            print("Measuring admission (limits off and on, with and without Redis)...", file=sys.stderr)
            admission = limits.measure(upstream.url, work / "limits", plan.rounds, plan.high_seconds)
        finally:
            if proxy is not None:
                proxy.stop()
            bare.stop()
            upstream.stop()
    print(render(cells, writer, memory, admission, plan))
    print(f"\n(run took {time.monotonic() - started:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
