"""One huge request must not stall other tenants or push their rows out of the writer's queue."""

from __future__ import annotations

import asyncio
import io
import json
import statistics
import time
from pathlib import Path
from typing import Any

import aiohttp

from proxy.records import MemoryRow
from proxy.storage.sqlite import SqliteStore
from tests.conftest import ProxyFactory
from tests.databases import query, request, wait_rows
from tests.proxy_calls import FLUSH_INTERVAL

BIG = 150_001
HUGE_TIMEOUT = aiohttp.ClientTimeout(total=180)


async def test_one_request_with_more_memory_rows_than_the_queue_holds_loses_nobody_elses(
    tmp_path: Path,
) -> None:
    db = tmp_path / "vidurai.db"
    queue_limit = 1000
    writer = SqliteStore(str(db), 0.05, max_queued=queue_limit)
    await writer.start()
    try:
        turns = [
            MemoryRow("big", n, "user", "turn", 0.5, f"m{n}", f"{n:064x}", 1000.0)
            for n in range(queue_limit * 5)
        ]
        writer.add_request(request("before", session="other"))
        writer.add_memories(turns)
        writer.add_request(request("after", session="other"))
        assert writer.rows_dropped == 0
        await writer.flush()
    finally:
        await writer.close()
    assert query(db, "SELECT COUNT(*) AS n FROM memories")[0]["n"] == len(turns)
    assert {r["id"] for r in query(db, "SELECT id FROM requests")} == {"before", "after"}


async def test_a_150k_message_request_while_others_run(
    make_proxy: ProxyFactory, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    # Compression off: folding 150k distinct turns takes minutes of CPU in a thread (Vidurai's
    # episodic layer scans its 1,000 memories on every add past capacity); what is tested here is
    # everything else a huge body costs: reading, parsing, counting and forwarding it.
    url = await make_proxy(
        server_max_messages=str(BIG), storage_flush_interval=FLUSH_INTERVAL, compression_enabled="false"
    )
    messages = [{"role": "user" if n % 2 == 0 else "assistant", "content": f"m{n}"} for n in range(BIG)]
    big = json.dumps({"model": "gpt-fake-1", "messages": messages}).encode()
    done = asyncio.Event()
    latencies: list[float] = []

    async def other_tenant(n: int) -> int:
        headers = {"Authorization": f"Bearer sk-other-tenant-{n}"}
        body = {"model": "gpt-fake-1", "messages": [{"role": "user", "content": f"hello from {n}"}]}
        sent = 0
        while not done.is_set() or sent < 3:
            started = time.monotonic()
            async with http.post(url + "/v1/chat/completions", json=body, headers=headers) as response:
                assert response.status == 200, await response.text()
                await response.read()
            latencies.append(time.monotonic() - started)
            sent += 1
        return sent

    async def huge() -> None:
        await asyncio.sleep(0.1)  # the others are under way
        try:
            headers = {"Authorization": "Bearer sk-huge-tenant", "Content-Type": "application/json"}
            # A file-like body: aiohttp sends it from a thread, so the test's own loop stays free.
            # Its own time limit: what is asserted is that nobody else waits or loses a row, not how
            # long a 6 MB body takes on a shared machine (the fake upstream tokenizes it too).
            async with http.post(
                url + "/v1/chat/completions", data=io.BytesIO(big), headers=headers, timeout=HUGE_TIMEOUT
            ) as response:
                assert response.status == 200, await response.text()
                reply: dict[str, Any] = await response.json()
                assert reply["usage"]["prompt_tokens"] > BIG
        finally:
            done.set()

    started = time.monotonic()
    *counts, _ = await asyncio.gather(*(other_tenant(n) for n in range(4)), huge())
    elapsed = time.monotonic() - started
    sent = sum(counts)
    db = tmp_path / "vidurai.db"
    rows = await wait_rows(db, "SELECT * FROM requests", count=sent + 1, within=20.0)
    assert len(rows) == sent + 1  # every answered request has its row, the huge one's too
    assert all(r["status"] == 200 for r in rows)
    big_row = next(r for r in rows if r["messages_original"] == BIG)
    # Measured, not asserted: the machine is shared. Printed for `pytest -s`.
    print(
        f"\n{sent} small requests during the {BIG}-message one ({elapsed:.2f} s, huge request "
        f"{big_row['duration_ms']:.0f} ms): p50 {statistics.median(latencies) * 1000:.1f} ms, "
        f"max {max(latencies) * 1000:.1f} ms"
    )
