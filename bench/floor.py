"""The latency floor at concurrency 1: what each layer under the proxy adds to a request on its own.

Against the same fake upstream, one request at a time: direct; through a byte relay on uvloop that
parses nothing (bench/tcp_relay.py: one more process and loopback hop); through the bare aiohttp
pass-through on asyncio's loop and on uvloop (bench/bare_passthrough.py: HTTP parsed and made
again on both sides); and through `python -m proxy`. Rounds rotate the order of the paths; medians
over rounds of wrk's p50, and each path's added p50 over direct.

    .venv/bin/python -m bench.floor [--rounds 3] [--seconds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from . import wrk
from .proxy_overhead import SCENARIOS
from .servers import Proxy, Server

PATHS = ("direct", "relay", "bare-asyncio", "bare", "proxy")
TITLES = {
    "direct": "Direct",
    "relay": "Byte relay (uvloop)",
    "bare-asyncio": "Bare pass-through (asyncio)",
    "bare": "Bare pass-through (uvloop)",
    "proxy": "Vidurai proxy (uvloop)",
}


def main(argv: list[str] | None = None) -> int:
    description = (__doc__ or "").splitlines()[0]
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=description)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3)
    args = parser.parse_args(argv)
    wrk.binary()
    with tempfile.TemporaryDirectory(prefix="vidurai-floor-") as tmp:
        work = Path(tmp)
        upstream = Server.start("upstream")
        servers = [Server.start(kind, upstream.url) for kind in ("relay", "bare-asyncio", "bare")]
        proxy: Proxy | None = None
        try:
            proxy = Proxy.start(upstream.url, work / "proxy")
            urls = {"direct": upstream.url, **{s.name: s.url for s in servers}, "proxy": proxy.url}
            scripts = {s.name: s.script(work) for s in SCENARIOS}
            p50: dict[tuple[str, str], list[float]] = {}
            for scenario in SCENARIOS:  # connections and caches warm up first
                for path in PATHS:
                    url = urls[path] + scenario.path(path)
                    wrk.run(url, scripts[scenario.name], connections=1, seconds=1)
            for round_no in range(args.rounds):
                order = PATHS[round_no % len(PATHS) :] + PATHS[: round_no % len(PATHS)]
                print(f"  round {round_no + 1}/{args.rounds}", file=sys.stderr)
                for scenario in SCENARIOS:
                    for path in order:
                        url = urls[path] + scenario.path(path)
                        run = wrk.run(url, scripts[scenario.name], connections=1, seconds=args.seconds)
                        p50.setdefault((scenario.name, path), []).append(run.p50_ms)
        finally:
            if proxy is not None:
                proxy.stop()
            for server in servers:
                server.stop()
            upstream.stop()
    print("p50 at concurrency 1, milliseconds, and what each path adds to direct:\n")
    print("| Request | " + " | ".join(TITLES[p] for p in PATHS) + " |")
    print("|---|" + "---:|" * len(PATHS))
    for scenario in SCENARIOS:
        direct = statistics.median(p50[(scenario.name, "direct")])
        cells = []
        for path in PATHS:
            value = statistics.median(p50[(scenario.name, path)])
            cells.append(f"{value:.2f}" if path == "direct" else f"{value:.2f} ({value - direct:+.2f})")
        print(f"| {scenario.name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
