"""`make bench-cluster`: requests per second at concurrency 32 for one SQLite process, one PostgreSQL
process, `[server] workers = 2` on SQLite, and three instances on PostgreSQL behind nginx (sharing
Redis), all in front of one fake upstream; and the writer's sustained rows/s into PostgreSQL.

Everything runs on this machine's cores, shared by wrk, the fake upstream, nginx, PostgreSQL and
the proxies, so more processes cannot show more than those cores give: next to req/s the table
shows CPU milliseconds per request, of the proxies and of everything else measured, which is what
decides how far each layout goes once it has cores of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import attrs
import redis

from tests.cluster_support import NGINX, SHARED_REDIS_URL, free_port, nginx_conf, spawn

from . import writer_rate, wrk
from .proxy_overhead import HIGH, SCENARIOS
from .scratch_postgres import scratch_database
from .servers import Proxy, Server, cpu_seconds

WRITER_ROWS = 20_000
SCENARIO = SCENARIOS[0]  # Anthropic messages, JSON: one-message conversations, nothing to compress


def family(pid: int) -> list[int]:
    """A process and its descendants (a workers' parent and its workers), from /proc."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(child) for child in (task / "children").read_text().split()]
    return found


def cpu_of(pids: list[int]) -> dict[int, float]:
    """CPU seconds so far of each process (and descendant); one that is gone is left out."""
    times = {pid: cpu_seconds(pid) for root in pids for pid in family(root)}
    return {pid: t for pid, t in times.items() if not math.isnan(t)}


def spent(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds between two readings, of the processes alive at both."""
    return sum(after[pid] - before[pid] for pid in before.keys() & after.keys())


HEADER = (
    "| Layout | req/s | p50 / p99 ms | errors | proxy CPU ms/req | other CPU ms/req |\n"
    "|---|---|---|---|---|---|"
)


@attrs.frozen
class Row:
    layout: str
    result: wrk.WrkResult
    proxy_cpu_ms: float  # per request, all proxy processes
    other_cpu_ms: float  # per request: upstream, nginx, PostgreSQL's backends, Redis

    def line(self) -> str:
        r = self.result
        errors = r.errors + r.status_errors
        return (
            f"| {self.layout} | {r.rps:,.0f} | {r.p50_ms:.1f} / {r.p99_ms:.1f} | {errors} "
            f"| {self.proxy_cpu_ms:.2f} | {self.other_cpu_ms:.2f} |"
        )


def postgres_pids() -> list[int]:
    """PostgreSQL's processes (its backends do the inserts), to count their CPU too."""
    out = subprocess.run(["pgrep", "-x", "postgres"], capture_output=True, text=True).stdout
    return [int(pid) for pid in out.split()]


def redis_pids() -> list[int]:
    out = subprocess.run(["pgrep", "-x", "redis-server"], capture_output=True, text=True).stdout
    return [int(pid) for pid in out.split()]


def measure(layout: Layout, lua: Path, seconds: float) -> Row:
    url = layout.url + "/v1/messages"
    wrk.run(url, lua, connections=HIGH, seconds=1, threads=2)  # warm: pools, caches
    proxy_before, other_before = cpu_of(layout.proxies), cpu_of(layout.others)
    result = wrk.run(url, lua, connections=HIGH, seconds=seconds, threads=2)
    requests = max(result.requests, 1)
    row = Row(
        layout.name,
        result,
        spent(proxy_before, cpu_of(layout.proxies)) * 1000 / requests,
        spent(other_before, cpu_of(layout.others)) * 1000 / requests,
    )
    print(row.line(), flush=True)
    return row


@contextlib.contextmanager
def nginx(folder: Path, ports: list[int]) -> Iterator[tuple[str, int]]:
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = folder / "nginx.conf"
    conf.write_text(nginx_conf(folder, port, ports))
    command = [
        NGINX,
        "-p",
        str(folder),
        "-c",
        str(conf),
        "-e",
        str(folder / "error.log"),
        "-g",
        "daemon off;",
    ]
    process = spawn(command, folder, folder / "output.log")
    time.sleep(0.5)
    assert process.poll() is None, (folder / "error.log").read_text()
    try:
        yield f"http://127.0.0.1:{port}", process.pid
    finally:
        process.terminate()
        process.wait(10)


@contextlib.contextmanager
def proxies(upstream: str, folder: Path, count: int, **settings: str) -> Iterator[list[Proxy]]:
    started: list[Proxy] = []
    try:
        for n in range(count):
            started.append(Proxy.start(upstream, folder / f"instance-{n}", **settings))
        yield started
    finally:
        for proxy in started:
            proxy.stop()


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    with scratch_database() as url:
        if url is None:
            raise SystemExit("PostgreSQL is not answering at 127.0.0.1:5432: start it (.ci/services)")
        yield url


@contextlib.contextmanager
def redis_prefix() -> Iterator[str]:
    prefix = f"vidurai-bench-{os.urandom(4).hex()}:"
    client = redis.Redis.from_url(SHARED_REDIS_URL)
    try:
        yield prefix
    finally:
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)
        client.close()


@attrs.frozen
class Layout:
    name: str
    url: str
    proxies: list[int]  # pids whose CPU is the proxy's (a workers' parent brings its workers)
    others: list[int]  # everything else the requests go through


def start_layouts(stack: contextlib.ExitStack, upstream: Server, folder: Path) -> list[Layout]:
    """Every layout up at once (idle ones cost nothing), so rounds can alternate between them."""
    others = [upstream.pid]
    (sqlite,) = stack.enter_context(proxies(upstream.url, folder / "sqlite", 1))
    pg_url = stack.enter_context(postgres_database())
    (pg,) = stack.enter_context(proxies(upstream.url, folder / "pg", 1, storage_database=pg_url))
    (workers,) = stack.enter_context(proxies(upstream.url, folder / "workers", 1, server_workers="2"))
    fleet_url = stack.enter_context(postgres_database())
    prefix = stack.enter_context(redis_prefix())
    redis_settings = {"cluster_redis_url": SHARED_REDIS_URL, "cluster_key_prefix": prefix}
    fleet = stack.enter_context(
        proxies(upstream.url, folder / "fleet", 3, storage_database=fleet_url, **redis_settings)
    )
    balancer, nginx_pid = stack.enter_context(
        nginx(folder / "nginx", [int(p.url.rsplit(":", 1)[1]) for p in fleet])
    )
    database = [*postgres_pids()]
    return [
        Layout("1 process, SQLite", sqlite.url, [sqlite.pid], others),
        Layout("1 process, PostgreSQL", pg.url, [pg.pid], [*others, *database]),
        Layout("workers = 2, SQLite", workers.url, [workers.pid], others),
        Layout(
            "3 instances + nginx, PostgreSQL, Redis",
            balancer,
            [p.pid for p in fleet],
            [*others, nginx_pid, *database, *redis_pids()],
        ),
    ]


def median_row(rows: list[Row]) -> Row:
    """The round with the median req/s (its CPU and latency with it: one real run, not a blend)."""
    ordered = sorted(rows, key=lambda row: row.result.rps)
    return ordered[len(ordered) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per layout and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, alternating between layouts")
    args = parser.parse_args()
    wrk.binary()
    upstream = Server.start("upstream")
    try:
        with (
            tempfile.TemporaryDirectory(prefix="vidurai-bench-cluster-") as tmp,
            contextlib.ExitStack() as stack,
        ):
            folder = Path(tmp)
            lua = SCENARIO.script(folder)
            layouts = start_layouts(stack, upstream, folder)
            print(
                f"\n{SCENARIO.name} at concurrency {HIGH}, "
                f"{args.rounds} rounds of {args.seconds:g} s per layout, "
                f"{os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.1f} at the start), "
                f"{platform.python_implementation()} {platform.python_version()}\n"
            )
            print(HEADER)
            runs: dict[str, list[Row]] = {layout.name: [] for layout in layouts}
            for _ in range(args.rounds):
                for layout in layouts:
                    runs[layout.name].append(measure(layout, lua, args.seconds))
            rows = [median_row(runs[layout.name]) for layout in layouts]
            print("\nMedian of the rounds:\n\n" + HEADER)
            for row in rows:
                print(row.line())
            stack.close()  # the proxies' and databases' CPU is not the writer's
            print("\n" + asyncio.run(redis_call_cost()))
            print(asyncio.run(writer_rate.measure(folder / "writer.db", WRITER_ROWS)).describe())
    finally:
        upstream.stop()
    base = rows[0].result.rps or 1
    print(
        "\nreq/s against one SQLite process: "
        + ", ".join(f"{r.layout} {r.result.rps / base:.2f}x" for r in rows)
    )


async def redis_call_cost(calls: int = 5000) -> str:
    """CPU of the one Redis call a request about to fold makes (SET ... GET), in this process."""
    from proxy.cluster import Cluster
    from proxy.config import ClusterConfig

    with redis_prefix() as prefix:
        cluster = Cluster(ClusterConfig(redis_url=SHARED_REDIS_URL, key_prefix=prefix, timeout=1.0))
        await cluster.start()
        started, cpu = time.perf_counter(), time.process_time()

        async def client(n: int) -> None:
            for k in range(calls // HIGH):
                await cluster.previous_request_at(f"bench-{n}-{k % 50}", time.time(), None)

        await asyncio.gather(*(client(n) for n in range(HIGH)))
        per_call_cpu = (time.process_time() - cpu) / calls * 1e6
        per_call_wall = (time.perf_counter() - started) / calls * 1e6
        await cluster.close()
    return (
        f"Redis: one session-time call (SET GET EX) costs {per_call_cpu:.0f} us of the proxy's CPU "
        f"({per_call_wall:.0f} us wall, {HIGH} at once), redis-py's asyncio client"
    )


if __name__ == "__main__":
    main()
