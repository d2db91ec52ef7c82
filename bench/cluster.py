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

from . import wrk
from .proxy_overhead import HIGH, SCENARIOS
from .servers import Proxy, Server, cpu_seconds

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


def measure(layout: str, url: str, proxies: list[int], others: list[int], lua: Path, seconds: float) -> Row:
    wrk.run(url + "/v1/messages", lua, connections=HIGH, seconds=1, threads=2)  # warm: pools, caches
    proxy_before, other_before = cpu_of(proxies), cpu_of(others)
    result = wrk.run(url + "/v1/messages", lua, connections=HIGH, seconds=seconds, threads=2)
    requests = max(result.requests, 1)
    row = Row(
        layout,
        result,
        spent(proxy_before, cpu_of(proxies)) * 1000 / requests,
        spent(other_before, cpu_of(others)) * 1000 / requests,
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per layout")
    args = parser.parse_args()
    wrk.binary()
    from tests.databases import postgres_database

    rows: list[Row] = []
    upstream = Server.start("upstream")
    try:
        with tempfile.TemporaryDirectory(prefix="vidurai-bench-cluster-") as tmp:
            folder = Path(tmp)
            lua = SCENARIO.script(folder)
            print(
                f"\n{SCENARIO.name} at concurrency {HIGH}, {args.seconds:g} s per layout, "
                f"{os.cpu_count()} CPUs, {platform.python_implementation()} {platform.python_version()}\n"
            )
            print("| Layout | req/s | p50 / p99 ms | errors | proxy CPU ms/req | other CPU ms/req |")
            print("|---|---|---|---|---|---|")
            others = [upstream.pid]
            with proxies(upstream.url, folder / "sqlite", 1) as (one,):
                rows.append(measure("1 process, SQLite", one.url, [one.pid], others, lua, args.seconds))
            with (
                redis_prefix() as prefix,
                proxies(
                    upstream.url,
                    folder / "sqlite-redis",
                    1,
                    cluster_redis_url=SHARED_REDIS_URL,
                    cluster_key_prefix=prefix,
                ) as (one,),
            ):
                with_redis = [*others, *redis_pids()]
                layout = "1 process, SQLite, Redis"
                rows.append(measure(layout, one.url, [one.pid], with_redis, lua, args.seconds))
            with (
                postgres_database() as url,
                proxies(upstream.url, folder / "pg", 1, storage_database=url) as (one,),
            ):
                pg = [*others, *postgres_pids()]
                rows.append(measure("1 process, PostgreSQL", one.url, [one.pid], pg, lua, args.seconds))
            with proxies(upstream.url, folder / "workers", 1, server_workers="2") as (parent,):
                rows.append(
                    measure("workers = 2, SQLite", parent.url, [parent.pid], others, lua, args.seconds)
                )
            with (
                postgres_database() as url,
                redis_prefix() as prefix,
                proxies(
                    upstream.url,
                    folder / "fleet",
                    3,
                    storage_database=url,
                    cluster_redis_url=SHARED_REDIS_URL,
                    cluster_key_prefix=prefix,
                ) as fleet,
                nginx(folder / "nginx", [int(p.url.rsplit(":", 1)[1]) for p in fleet]) as (url_, nginx_pid),
            ):
                pg = [*others, nginx_pid, *postgres_pids(), *redis_pids()]
                pids = [p.pid for p in fleet]
                rows.append(
                    measure("3 instances + nginx, PostgreSQL, Redis", url_, pids, pg, lua, args.seconds)
                )
            print("\n" + asyncio.run(redis_call_cost()))
            with postgres_database() as url:
                print(asyncio.run(writer_rows_per_second(url, folder)))
    finally:
        upstream.stop()
    base = rows[0].result.rps or 1
    print(
        "\nRatios to one SQLite process: " + ", ".join(f"{r.layout} {r.result.rps / base:.2f}x" for r in rows)
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


async def writer_rows_per_second(url: str, folder: Path) -> str:
    """The PostgreSQL writer's sustained rows/s, as bench/writer_rate.py measures SQLite's."""
    from . import writer_rate

    rate = await writer_rate.measure_database(url, 20_000)
    return rate.describe().replace("Writer (bench/writer_rate.py)", "PostgreSQL writer")


if __name__ == "__main__":
    main()
