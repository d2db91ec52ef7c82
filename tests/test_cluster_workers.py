"""`[server] workers = 2` on one SQLite file: both serve the one port, no row is lost and the
database is never locked out; a killed worker is replaced; the parent's death takes the workers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from tests.cluster_support import instance_env, load
from tests.fake_upstream import FakeUpstream
from tests.process import ProxyProcess, running


@contextlib.asynccontextmanager
async def workers(
    fake: FakeUpstream, folder: Path, count: int = 2
) -> AsyncIterator[tuple[ProxyProcess, Path]]:
    database = folder / "workers.db"
    env = instance_env(fake, str(database), 0, server_workers=str(count), storage_flush_interval="0.2")
    async with running([sys.executable, "-m", "proxy"], folder, env) as proxy:
        yield proxy, database


def lines(proxy: ProxyProcess) -> list[dict[str, Any]]:
    found = []
    for line in proxy.log().splitlines():
        with contextlib.suppress(ValueError):
            found.append(json.loads(line))
    return found


def worker_pids(proxy: ProxyProcess) -> dict[int, int]:
    return {line["worker"]: line["pid"] for line in lines(proxy) if line.get("event") == "worker listening"}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_two_workers_share_the_port_and_the_database_without_losing_a_row(
    fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    async with workers(fake_upstream, tmp_path) as (proxy, database):
        assert proxy.listening["workers"] == 2 and len(worker_pids(proxy)) == 2
        traffic = await load(proxy.url, 6.0, clients=32)
        assert traffic.failures == [] and len(traffic.answered) > 300, len(traffic.answered)
        assert await proxy.stop() == 0, proxy.log()  # each worker flushes its rows on the way out

        served = {line["worker"] for line in lines(proxy) if line.get("event") == "request"}
        assert served == {0, 1}, "the kernel gave one worker every connection"
        with sqlite3.connect(database) as conn:
            stored = {model for (model,) in conn.execute("SELECT model FROM requests")}
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert set(traffic.answered) - stored == set()
        log = proxy.log()
        assert "database is locked" not in log and "storage.unwritable" not in log
        assert "Traceback" not in log


async def test_a_killed_worker_is_replaced_and_the_parent_takes_its_workers_along(
    fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    async with workers(fake_upstream, tmp_path) as (proxy, _database):
        first = worker_pids(proxy)
        os.kill(first[1], signal.SIGKILL)
        deadline = time.monotonic() + 60
        while (replaced := worker_pids(proxy)).get(1) == first[1]:
            assert time.monotonic() < deadline, proxy.log()
            await asyncio.sleep(0.1)
        assert any(line.get("event") == "worker exited; restarting it" for line in lines(proxy))
        traffic = await load(proxy.url, 1.0, clients=4)
        assert traffic.failures == []

        # kill -9 of the parent: nobody is left to stop the workers, so the kernel tells them to.
        proxy.process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(proxy.process.wait, 10)
        deadline = time.monotonic() + 30
        while any(alive(pid) for pid in replaced.values()):
            assert time.monotonic() < deadline, "workers outlived their parent"
            await asyncio.sleep(0.1)
