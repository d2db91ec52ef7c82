"""Paired CPU per request: two builds of the proxy side by side on one fake upstream.

A change to the hot path is a few percent of a request's CPU, less than what other work on a
shared machine moves a single figure by. So the old and the new proxy run at once, in front of the
same upstream, and take turns under the same wrk load (the order alternates every round), or with
--together both are loaded at once, each by its own wrk, so both see the same moment's load; each
round gives a ratio new/old of CPU per request (read from /proc/PID/stat, all threads), and the
median of those ratios is the figure.

    .venv/bin/python -m bench.paired --old /path/to/old/.venv/bin/python [--rounds 8] [--seconds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import wrk
from .proxy_overhead import HIGH, SCENARIOS
from .servers import Proxy, Server, cpu_seconds


def main(argv: list[str] | None = None) -> int:
    description = (__doc__ or "").splitlines()[0]
    parser = argparse.ArgumentParser(prog="python -m bench.paired", description=description)
    parser.add_argument("--old", required=True, help="the old build's interpreter (its venv's python)")
    parser.add_argument("--new", default=sys.executable, help="the new build's interpreter (this one)")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3)
    parser.add_argument("--connections", type=int, default=HIGH)
    parser.add_argument("--only", help="scenarios whose name contains this (e.g. JSON)")
    parser.add_argument(
        "--together",
        action="store_true",
        help="load both proxies at once (each its own wrk) rather than in turn: the same moment's load",
    )
    args = parser.parse_args(argv)
    wrk.binary()
    scenarios = [s for s in SCENARIOS if not args.only or args.only.lower() in s.name.lower()]
    with tempfile.TemporaryDirectory(prefix="vidurai-paired-") as tmp:
        work = Path(tmp)
        upstream = Server.start("upstream")
        proxies: dict[str, Proxy] = {}
        try:
            for name in ("old", "new"):
                python = args.old if name == "old" else args.new
                proxies[name] = Proxy.start(upstream.url, work / name, python=python)
            scripts = {s.name: s.script(work) for s in scenarios}
            for scenario in scenarios:  # warm-up: connections, sessions, caches
                for proxy in proxies.values():
                    wrk.run(
                        proxy.url + scenario.path("proxy"),
                        scripts[scenario.name],
                        connections=HIGH,
                        seconds=1,
                    )
            cpu: dict[tuple[str, str], list[float]] = {}
            rps: dict[tuple[str, str], list[float]] = {}
            p50: dict[tuple[str, str], list[float]] = {}
            for round_no in range(args.rounds):
                order = ("old", "new") if round_no % 2 == 0 else ("new", "old")
                for scenario in scenarios:
                    groups = [order] if args.together else [(name,) for name in order]
                    for group in groups:
                        before = {name: cpu_seconds(proxies[name].pid) for name in group}
                        with ThreadPoolExecutor(len(group)) as pool:
                            url = {name: proxies[name].url + scenario.path("proxy") for name in group}
                            script = scripts[scenario.name]
                            futures = {
                                name: pool.submit(
                                    wrk.run,
                                    url[name],
                                    script,
                                    connections=args.connections,
                                    seconds=args.seconds,
                                )
                                for name in group
                            }
                            runs = {name: future.result() for name, future in futures.items()}
                        for name, run in runs.items():
                            used = cpu_seconds(proxies[name].pid) - before[name]
                            key = (scenario.name, name)
                            cpu.setdefault(key, []).append(used * 1000 / max(run.requests, 1))
                            rps.setdefault(key, []).append(run.rps)
                            p50.setdefault(key, []).append(run.p50_ms)
                print(f"  round {round_no + 1}/{args.rounds}", file=sys.stderr)
        finally:
            for proxy in proxies.values():
                proxy.stop()
            upstream.stop()
    print(f"c={args.connections}, {args.rounds} rounds of {args.seconds:g} s; medians")
    print(
        "| Request | old CPU ms/req | new CPU ms/req | new/old (median of ratios, quartiles) | old req/s "
        "| new req/s "
        "| old p50 | new p50 |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for scenario in scenarios:
        old, new = cpu[(scenario.name, "old")], cpu[(scenario.name, "new")]
        ratios = sorted(n / o for n, o in zip(new, old, strict=True))
        ratio = statistics.median(ratios)
        quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratio, ratio, ratio]
        print(
            f"| {scenario.name} | {statistics.median(old):.3f} | {statistics.median(new):.3f} "
            f"| {ratio:.3f} ({quartiles[0]:.3f}-{quartiles[2]:.3f}) "
            f"| {statistics.median(rps[(scenario.name, 'old')]):.0f} "
            f"| {statistics.median(rps[(scenario.name, 'new')]):.0f} "
            f"| {statistics.median(p50[(scenario.name, 'old')]):.2f} "
            f"| {statistics.median(p50[(scenario.name, 'new')]):.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
