"""[storage] store_text = false: no text of a conversation anywhere in the database files."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import aiohttp

from proxy.app import create_app, start_server
from proxy.config import load_config
from tests.conftest import ANTHROPIC_KEY
from tests.fake_upstream import FakeUpstream

SECRET = "The launch codeword for the Kestrel migration is periwinkle-aardvark-4417."
MARKERS = (SECRET, "periwinkle-aardvark", "Kestrel migration")


def conversation(turns: int) -> list[dict[str, Any]]:
    """A long conversation whose second message, folded away by compression, holds SECRET."""
    messages = []
    for n in range(turns):
        text = f"Turn {n}: we walk through the rollout checklist for service {n}. " * 40
        if n == 1:
            text = SECRET + " " + text
        messages.append({"role": "user" if n % 2 == 0 else "assistant", "content": text})
    messages.append({"role": "user", "content": "What is the next step?"})
    return messages


async def run_conversation(fake: FakeUpstream, database: Path, store_text: str) -> list[Any]:
    """Two requests of one conversation through a proxy that is then stopped (flushing everything);
    the messages upstream received."""
    config = load_config(
        path=database.parent / "absent.ini",
        env={},
        upstream_anthropic_base_url=fake.anthropic_base_url,
        storage_database=str(database),
        storage_store_text=store_text,
    )
    runner, port = await start_server(create_app(config), "127.0.0.1", 0)
    headers = {"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01"}
    received = []
    try:
        async with aiohttp.ClientSession(headers=headers) as http:
            for turns in (29, 33):  # 20 old messages fold into one chunk (chunk_messages)
                body = {"model": "claude-sonnet-5", "max_tokens": 16, "messages": conversation(turns)}
                async with http.post(f"http://127.0.0.1:{port}/v1/messages", json=body) as response:
                    assert response.status == 200
                forwarded = fake.last().json["messages"]
                assert len(forwarded) < len(body["messages"])  # compressed
                received.append(forwarded)
    finally:
        await runner.cleanup()  # flushes rows and takes the final snapshots
    return received


def on_disk(database: Path) -> bytes:
    """Every byte SQLite keeps for the database: the file, its WAL and shared-memory index."""
    return b"".join(path.read_bytes() for path in database.parent.glob(database.name + "*") if path.is_file())


def table_counts(database: Path) -> dict[str, int]:
    with sqlite3.connect(database) as conn:
        return {
            "compressed": conn.execute("SELECT COUNT(*) FROM audit WHERE event = 'compressed'").fetchone()[0],
            "memories": conn.execute("SELECT COUNT(*) FROM memories").fetchone()[0],
            "with_text": conn.execute("SELECT COUNT(*) FROM memories WHERE content != ''").fetchone()[0],
            "snapshots": conn.execute("SELECT COUNT(*) FROM snapshots").fetchone()[0],
        }


async def test_no_text_on_disk_while_compression_forwards_the_same(
    tmp_path: Path, fake_upstream: FakeUpstream
) -> None:
    private, kept = tmp_path / "private.db", tmp_path / "kept.db"
    forwarded_private = await run_conversation(fake_upstream, private, "false")
    counts = table_counts(private)
    assert counts["compressed"] == 2
    assert counts["memories"] > 0 and counts["with_text"] == 0 and counts["snapshots"] == 0
    stored = on_disk(private)
    for marker in MARKERS:
        assert marker.encode() not in stored

    # The control, which shows the check above can fail; and upstream got the very same requests.
    assert await run_conversation(fake_upstream, kept, "true") == forwarded_private
    counts = table_counts(kept)
    assert counts["compressed"] == 2 and counts["with_text"] > 0 and counts["snapshots"] > 0
    assert SECRET.encode() in on_disk(kept)


async def test_switching_store_text_off_forgets_what_was_kept(
    tmp_path: Path, fake_upstream: FakeUpstream
) -> None:
    database = tmp_path / "switched.db"
    await run_conversation(fake_upstream, database, "true")
    assert SECRET.encode() in on_disk(database)
    await run_conversation(fake_upstream, database, "false")
    counts = table_counts(database)
    assert counts["with_text"] == 0 and counts["snapshots"] == 0 and counts["memories"] > 0
    stored = on_disk(database)
    for marker in MARKERS:
        assert marker.encode() not in stored
