"""Three `python -m proxy` instances on one database behind nginx (round robin, nothing buffered),
sharing Redis: a conversation spread over them is forwarded as one instance forwards it, streams
stay unbuffered, a killed instance costs only its own last second, and a lost Redis degrades
/health without stopping service."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import attrs
import pytest

from tests.cluster_support import SHARED_REDIS_URL, Fleet, fleet, own_redis, shared_redis_prefix
from tests.conftest import ANTHROPIC_KEY, ProxyFactory, anthropic_client
from tests.fake_upstream import FakeUpstream

HEADERS = {"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01"}
# A system prompt with a cache_control marker: Claude caches the conversation, so how a turn is
# compressed depends on when the conversation's previous turn arrived, wherever it was served.
CACHED_SYSTEM = [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]
HISTORY = 60  # messages the conversation resumes from: enough to fold
TURNS = 7
SETTINGS = {"storage_flush_interval": "0.2"}  # nothing waits long for rows


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    async with shared_redis_prefix() as value:
        yield value


def database(tmp_path: Path) -> str:
    return str(tmp_path / "fleet.db")


def rows(path: str, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchall()


TOPICS = ("sailing", "pottery", "chess", "violin", "gardening", "astronomy", "baking", "climbing")


def turn_text(n: int) -> str:
    """A filler-rich turn about one topic, like a long chat's (about 60 tokens)."""
    line = f"We talked again about {TOPICS[n % len(TOPICS)]} and the weekend plans, which keep changing. "
    return f"Turn {n}: " + line * 3


async def conversation(url: str, fake: FakeUpstream, turns: int = TURNS) -> list[bytes]:
    """An Anthropic SDK conversation resumed from a long chat, `turns` turns more; the bytes
    upstream received for each turn."""
    forwarded = []
    history: list[dict[str, Any]] = [
        {"role": "user" if n % 2 == 0 else "assistant", "content": turn_text(n)} for n in range(HISTORY)
    ]
    async with anthropic_client(url) as client:
        for n in range(turns):
            history.append({"role": "user", "content": f"What did we say about {TOPICS[n % len(TOPICS)]}?"})
            reply = await client.messages.create(
                model="claude-sonnet-5", max_tokens=64, system=CACHED_SYSTEM, messages=history
            )
            forwarded.append(fake.last("/v1/messages").body)
            history.append({"role": "assistant", "content": reply.content[0].text})  # type: ignore[union-attr]
    return forwarded


def served(fleet_: Fleet, path: str = "/v1/messages") -> list[int]:
    """Requests for `path` each instance logged, in instance order."""
    counts = []
    for instance in fleet_.instances:
        lines = [json.loads(line) for line in instance.log().splitlines() if line.startswith("{")]
        counts.append(sum(1 for line in lines if line.get("event") == "request" and line.get("path") == path))
    return counts


async def get_json(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        assert response.status == 200, await response.text()
        body: dict[str, Any] = await response.json()
        return body


async def test_a_conversation_spread_over_instances_is_forwarded_as_one_instance_forwards_it(
    make_proxy: ProxyFactory, fake_upstream: FakeUpstream, tmp_path: Path, prefix: str
) -> None:
    alone = await conversation(await make_proxy(**SETTINGS), fake_upstream)
    settings = {**SETTINGS, "cluster_redis_url": SHARED_REDIS_URL, "cluster_key_prefix": prefix}
    async with fleet(tmp_path, fake_upstream, database(tmp_path), **settings) as group:
        spread = await conversation(group.url, fake_upstream)
        assert served(group) == [TURNS // 3 + (1 if i < TURNS % 3 else 0) for i in range(3)]  # round robin
        # Byte for byte what one instance forwarded: the same folds, the same recall held to the
        # cache reads it replaces while the cache is warm (Redis says the previous turn was just now).
        for turn, (one, many) in enumerate(zip(alone, spread, strict=True)):
            assert many == one, f"turn {turn} forwarded differently across instances"
        assert all(len(json.loads(sent)["messages"]) < HISTORY for sent in spread)  # each turn folded
        await asyncio.sleep(0.5)  # two writer flushes
        assert rows(group.database, "SELECT COUNT(*) FROM requests")[0][0] == TURNS
        warm = [json.loads(d)["cache_warm"] for (d,) in rows(group.database, _COMPRESSED)]
        assert warm and all(warm[1:])
        # Every instance reads the one database: the same fleet totals whichever answers.
        totals = [(await get_json(i.url + "/metrics.json"))["totals"] for i in group.instances]
        assert totals[0]["requests"] == TURNS and totals[1:] == totals[:-1]


_COMPRESSED = "SELECT detail FROM audit WHERE event = 'compressed' ORDER BY id"
