"""`make bench`: the proxy's added latency and throughput against calling the fake upstream directly.

Three paths to the same fake upstream (tests/fake_upstream.py), measured in one run so their ratios
are comparable on a noisy machine: direct, through a bare aiohttp pass-through (bench/bare_passthrough.py,
the floor any Python proxy pays), and through the real proxy doing all its work (SQLite writer,
sessions, usage parsing; requests below the compression threshold). Every server runs in its own
process; this process is the load generator. Rounds rotate the order of the paths so drift hits all alike.

    .venv/bin/python -m bench.proxy_overhead            # full run, about 90 seconds
    .venv/bin/python -m bench.proxy_overhead --quick    # two short rounds, about 20 seconds
    .venv/bin/python -m bench.proxy_overhead --profile proxy.prof   # proxy under cProfile: slower
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import math
import multiprocessing
import os
import platform
import pstats
import sqlite3
import statistics
import sys
import tempfile
import time
import traceback
from multiprocessing.connection import Connection
from pathlib import Path

import aiohttp
import attrs
from aiohttp import web

from .loadgen import SCENARIOS, Samples, Target, client_session, concurrent, percentile, sequential

HIGH = 32
PATHS = {"direct": "Direct", "bare": "Bare pass-through", "proxy": "Vidurai proxy"}
SHORT = {"direct": "Upstream", "bare": "Bare", "proxy": "Proxy"}


@attrs.frozen
class Plan:
    rounds: int
    sequential_requests: int  # per round and cell, at concurrency 1
    concurrent_seconds: float  # per round and cell, at concurrency HIGH
    warmup_requests: int

    @classmethod
    def of(cls, quick: bool) -> Plan:
        # Many short blocks rather than a few long ones: the machine is shared and noisy, and a
        # burst of load from elsewhere then lands on every path alike.
        return cls(2, 40, 0.5, 20) if quick else cls(8, 60, 1.0, 60)

    def describe(self) -> str:
        load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
        python = f"{platform.python_implementation()} {platform.python_version()}"
        return (
            f"{python}, aiohttp {aiohttp.__version__}, "
            f"{os.cpu_count()} CPUs (load average {load} at the end). {self.rounds} rounds; each runs "
            f"every path in turn, {self.sequential_requests} requests at concurrency 1 and "
            f"{self.concurrent_seconds:g} s at concurrency {HIGH} per request kind."
        )


# --- servers, each in its own process ------------------------------------------------------------


def _build(kind: str, options: dict[str, str]) -> web.Application:
    """The application for one server kind: upstream, bare or proxy."""
    if kind == "upstream":
        from tests.fake_upstream import FakeUpstream

        return FakeUpstream(record=False).app()
    if kind == "bare":
        from .bare_passthrough import create_app as bare_app

        return bare_app(options["upstream"])
    from proxy.app import create_app
    from proxy.config import load_config
    from proxy.logs import configure_logging

    config = load_config(
        env={},
        upstream_anthropic_base_url=options["anthropic"],
        upstream_openai_base_url=options["openai"],
        storage_database=options["database"],
        logging_level="warning",
    )
    configure_logging(config.logging)  # as `python -m proxy` does; the level is warning here
    return create_app(config)


async def _serve_async(kind: str, conn: Connection, options: dict[str, str]) -> None:
    if kind == "proxy":
        from proxy.app import start_server

        runner, port = await start_server(_build(kind, options), "127.0.0.1", 0)  # as the proxy serves
    else:
        runner = web.AppRunner(_build(kind, options), access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
    # cProfile sees the event loop's thread only: the proxy's own code runs there.
    profiler = cProfile.Profile() if options.get("profile") else None
    conn.send(("ready", port))
    if profiler:
        profiler.enable()
    try:
        # A thread waits for "stop"; EOF (the benchmark died) stops the server too.
        await asyncio.get_running_loop().run_in_executor(None, _wait_stop, conn)
    finally:
        if profiler:
            profiler.disable()
            profiler.dump_stats(options["profile"])
        await runner.cleanup()


def _wait_stop(conn: Connection) -> None:
    try:
        conn.recv()
    except EOFError:
        pass


def _serve(kind: str, conn: Connection, options: dict[str, str]) -> None:
    try:
        asyncio.run(_serve_async(kind, conn, options))
    except BaseException:
        conn.send(("error", traceback.format_exc()))


@attrs.define
class Server:
    name: str
    url: str
    process: multiprocessing.process.BaseProcess
    conn: Connection

    @classmethod
    def start(cls, kind: str, options: dict[str, str]) -> Server:
        ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no loop or sockets inherited
        parent, child = ctx.Pipe()
        process = ctx.Process(target=_serve, args=(kind, child, options), name=f"bench-{kind}", daemon=True)
        process.start()
        deadline = time.monotonic() + 60
        while not parent.poll(0.1):
            if (not process.is_alive() or time.monotonic() > deadline) and not parent.poll():
                process.kill()
                raise RuntimeError(f"{kind} server exited or did not start within 60 s")
        status, value = parent.recv()
        if status != "ready":
            process.join(5)
            raise RuntimeError(f"{kind} server failed to start:\n{value}")
        print(f"  {kind}: http://127.0.0.1:{value} (pid {process.pid})", file=sys.stderr)
        return cls(kind, f"http://127.0.0.1:{value}", process, parent)

    def cpu_seconds(self) -> float:
        """User and system CPU of the server process, all its threads (Linux /proc; NaN elsewhere)."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            return math.nan
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        try:
            self.conn.send("stop")
        except OSError:
            pass
        self.process.join(15)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        try:
            if self.conn.poll():  # a traceback from shutdown
                print(f"{self.name} server: {self.conn.recv()[1]}", file=sys.stderr)
        except (EOFError, OSError):
            pass
        self.conn.close()


# --- measurement ---------------------------------------------------------------------------------

Key = tuple[str, str, int]  # scenario name, target name, concurrency


async def measure(plan: Plan, targets: list[Target], servers: dict[str, Server]) -> dict[Key, Samples]:
    """All cells, round after round, the order of the paths rotating each round.

    `servers` maps a target's name to the process whose CPU time is charged to that path.
    """
    results: dict[Key, Samples] = {}
    sessions = {t.name: client_session(HIGH) for t in targets}
    try:
        for target in targets:  # connections, sessions and caches warm up before anything is recorded
            for scenario in SCENARIOS:
                warm = Samples()
                await sequential(sessions[target.name], target, scenario, plan.warmup_requests, warm)
                await concurrent(sessions[target.name], target, scenario, HIGH, 0.3, warm)
                if warm.errors:
                    print(
                        f"  warm-up {target.name} / {scenario.name}: {warm.errors} errors; first: "
                        f"{warm.first_error}",
                        file=sys.stderr,
                    )
        for round_no in range(plan.rounds):
            shift = round_no % len(targets)
            order = targets[shift:] + targets[:shift]
            print(
                f"  round {round_no + 1}/{plan.rounds}: {', '.join(t.name for t in order)}", file=sys.stderr
            )
            for scenario in SCENARIOS:
                for target in order:
                    cell = results.setdefault((scenario.name, target.name, 1), Samples())
                    await sequential(sessions[target.name], target, scenario, plan.sequential_requests, cell)
                for target in order:
                    cell = results.setdefault((scenario.name, target.name, HIGH), Samples())
                    server, sent = servers[target.name], len(cell.total) + cell.errors
                    cpu, client_cpu = server.cpu_seconds(), time.process_time()
                    await concurrent(
                        sessions[target.name], target, scenario, HIGH, plan.concurrent_seconds, cell
                    )
                    cell.cpu_seconds += server.cpu_seconds() - cpu
                    cell.client_cpu_seconds += time.process_time() - client_cpu
                    cell.cpu_requests += len(cell.total) + cell.errors - sent
    finally:
        for session in sessions.values():
            await session.close()
    return results


# --- report --------------------------------------------------------------------------------------


def _ms(value: float, signed: bool = False) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value * 1000:+.2f}" if signed else f"{value * 1000:.2f}"


def _share(cell: Samples, reference: Samples) -> float:
    """Median over rounds of the throughput ratio, each measured seconds apart under the same load."""
    ratios = [a / b for a, b in zip(cell.block_rps, reference.block_rps, strict=False) if b]
    return statistics.median(ratios) if ratios else math.nan


def _latency_table(results: dict[Key, Samples], names: list[str]) -> tuple[list[str], float, float]:
    """Rows of added latency, and the proxy's worst added p50 and p99 at concurrency 1."""
    others = [n for n in names if n != "direct"]
    header = "| Request | Measure | Conc. | Direct | " + " | ".join(f"{PATHS[n]} adds" for n in others) + " |"
    if {"bare", "proxy"} <= set(names):
        header += " Proxy adds over bare |"
    lines = [header, "|---|---|---:|" + "---:|" * (header.count("|") - 4)]
    worst50 = worst99 = -math.inf
    for concurrency in (1, HIGH):
        for scenario in SCENARIOS:
            measures = [("first byte", "ttfb")] if scenario.stream else []
            measures.append(("total", "total"))
            for label, field in measures:
                direct = getattr(results[(scenario.name, "direct", concurrency)], field)
                d50, d99 = percentile(direct, 50), percentile(direct, 99)
                added: dict[str, tuple[float, float]] = {}
                for name in others:
                    values = getattr(results[(scenario.name, name, concurrency)], field)
                    added[name] = (percentile(values, 50) - d50, percentile(values, 99) - d99)
                if "bare" in added and "proxy" in added:
                    (p50, p99), (b50, b99) = added["proxy"], added["bare"]
                    added["over"] = (p50 - b50, p99 - b99)
                cells = [f"{_ms(a50, True)} / {_ms(a99, True)}" for a50, a99 in added.values()]
                lines.append(
                    f"| {scenario.name} | {label} | {concurrency} | {_ms(d50)} / {_ms(d99)} | "
                    + " | ".join(cells)
                    + " |"
                )
                if concurrency == 1 and "proxy" in added:
                    worst50, worst99 = max(worst50, added["proxy"][0]), max(worst99, added["proxy"][1])
    return lines, worst50, worst99


def _throughput_table(results: dict[Key, Samples], names: list[str]) -> tuple[list[str], float]:
    """Rows of requests/second and CPU per request, and the proxy's worst share of direct."""
    others = [n for n in names if n != "direct"]
    both = {"bare", "proxy"} <= set(names)
    header = (
        "| Request | Direct | "
        + " | ".join(PATHS[n] for n in others)
        + " |"
        + (" Proxy vs bare |" if both else "")
        + " Client CPU ms/req | Upstream CPU ms/req |"
        + "".join(f" {SHORT[n]} CPU ms/req |" for n in others)
    )
    lines = [header, "|---|" + "---:|" * (header.count("|") - 2)]
    worst = math.inf
    for scenario in SCENARIOS:
        cells = {n: results[(scenario.name, n, HIGH)] for n in names}
        row = f"| {scenario.name} | {cells['direct'].rps:.0f} |"
        row += "".join(f" {cells[n].rps:.0f} ({_share(cells[n], cells['direct']):.0%}) |" for n in others)
        if both:
            row += f" {_share(cells['proxy'], cells['bare']):.0%} |"
        if "proxy" in cells:
            worst = min(worst, _share(cells["proxy"], cells["direct"]))
        row += f" {cells['direct'].client_cpu_per_request * 1000:.2f} |"
        row += "".join(f" {cells[n].cpu_per_request * 1000:.2f} |" for n in names)
        lines.append(row)
    return lines, worst


def render(results: dict[Key, Samples], names: list[str], plan: Plan) -> str:
    """Markdown ready for the README: both tables, errors if any, then the targets of issue 2."""
    latency, worst50, worst99 = _latency_table(results, names)
    throughput, worst_share = _throughput_table(results, names)
    lines = [
        "### Proxy overhead (`make bench`)",
        "",
        "The same local fake upstream called directly, through a bare aiohttp pass-through (the floor "
        "any Python proxy pays: one more process and one more loopback hop) and through the proxy "
        "doing all its work; each server in its own process, one aiohttp load generator with "
        f"keep-alive, small requests below the compression threshold. {plan.describe()}",
        "",
        "Latency added to direct, milliseconds, p50 / p99:",
        "",
        *latency,
        "",
        f"Throughput at concurrency {HIGH}: requests/second (median of rounds) with % of direct (median "
        "of per-round ratios). CPU time per request of the load generator (client) and of each server "
        "process (all its threads) is the figure least disturbed by other load on the machine; on a "
        "saturated machine the share of direct a path can reach is about (client + upstream) / "
        "(client + upstream + its own CPU).",
        "",
        *throughput,
    ]
    errors = [
        f"{key[1]} / {key[0]} / concurrency {key[2]}: {cell.errors} ({cell.first_error})"
        for key, cell in results.items()
        if cell.errors
    ]
    if errors:
        lines += ["", "Errors: " + "; ".join(errors)]
    if "proxy" in names:

        def verdict(ok: bool) -> str:
            return "met" if ok else "**not met**"

        lines += [
            "",
            "Targets of issue 2 (worst case over the rows above):",
            "",
            f"- added p50 ≤ 1 ms at concurrency 1: {_ms(worst50, True)} ms, {verdict(worst50 <= 0.001)}",
            f"- added p99 ≤ 5 ms at concurrency 1: {_ms(worst99, True)} ms, {verdict(worst99 <= 0.005)}",
            f"- throughput ≥ 70% of direct at concurrency {HIGH}: {worst_share:.0%}, "
            f"{verdict(worst_share >= 0.7)}",
        ]
    return "\n".join(lines)


def show_profile(path: str, limit: int = 30) -> None:
    """The proxy's own functions by time spent in them, then everything by cumulative time."""
    stats = pstats.Stats(path, stream=sys.stderr)
    stats.sort_stats("tottime").print_stats(r"/proxy/", limit)
    stats.sort_stats("cumulative").print_stats(limit)


def _stored_requests(database: Path) -> int | None:
    """Rows the proxy's writer committed: evidence that it did all its work during the run."""
    if not database.exists():
        return None
    with contextlib.closing(sqlite3.connect(database)) as conn:
        return int(conn.execute("SELECT count(*) FROM requests").fetchone()[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.proxy_overhead", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="two short rounds (about 25 s)")
    parser.add_argument("--rounds", type=int, help="number of rounds (default 8, --quick 2)")
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="run the proxy under cProfile (slower: its figures are not comparable)",
    )
    args = parser.parse_args(argv)
    plan = Plan.of(args.quick)
    if args.rounds:
        plan = attrs.evolve(plan, rounds=args.rounds)
    started = time.monotonic()
    servers: list[Server] = []
    with tempfile.TemporaryDirectory(prefix="vidurai-bench-") as tmp:
        try:
            upstream = Server.start("upstream", {})
            servers.append(upstream)
            servers.append(Server.start("bare", {"upstream": upstream.url}))
            targets = [
                Target("direct", f"{upstream.url}/anthropic", f"{upstream.url}/openai/v1"),
                Target("bare", f"{servers[1].url}/anthropic", f"{servers[1].url}/openai/v1"),
            ]
            try:
                proxy = Server.start(
                    "proxy",
                    {
                        "anthropic": f"{upstream.url}/anthropic",
                        "openai": f"{upstream.url}/openai/v1",
                        "database": str(Path(tmp) / "bench.db"),
                        "profile": os.path.abspath(args.profile) if args.profile else "",
                    },
                )
                servers.append(proxy)
                targets.append(Target("proxy", proxy.url, f"{proxy.url}/v1"))
            except RuntimeError as exc:
                print(f"The proxy did not start; measuring the other paths only.\n{exc}", file=sys.stderr)
            print(f"Measuring {', '.join(t.name for t in targets)}...", file=sys.stderr)
            # CPU is charged to the process behind each path; direct's is the upstream itself.
            by_target = {t.name: s for t, s in zip(targets, servers, strict=True)}
            results = asyncio.run(measure(plan, targets, by_target))
        finally:
            for server in reversed(servers):
                server.stop()
        stored = _stored_requests(Path(tmp) / "bench.db")
    print(render(results, [t.name for t in targets], plan))
    if stored is not None:
        print(f"(the proxy stored {stored} request rows in SQLite)", file=sys.stderr)
    print(f"\n(run took {time.monotonic() - started:.0f} s)", file=sys.stderr)
    if args.profile and "proxy" in {t.name for t in targets}:
        show_profile(args.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
