"""Model-written digests in compress(): which fold uses a summary, the same on every instance and restart.

On both engines (the `database` fixture: a SQLite file, then a PostgreSQL database of the test's
own), each instance a store of its own, migrated and started as the proxy starts it; the summaries
are the fake upstream's scripted ones, written as the summarizer writes them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import psycopg
import pytest

from proxy.compression import CompressionResult, SessionMemory, compress
from proxy.compression.compressor import DIGEST_INTRO
from proxy.compression.summaries import MODEL_DIGEST_INTRO
from proxy.providers import Anthropic
from proxy.storage import Store, SummaryStore, open_store
from tests.compression_support import CLAUDE_CACHE, anthropic_chat, settings
from tests.databases import execute, query
from tests.fake_upstream import scripted_summary

MODEL = settings(summarizer="model")


def _prefix(result: CompressionResult) -> str:
    """The task and the digests after it: the part of the request the provider caches."""
    assert result.body is not None
    return json.dumps(result.body["messages"][0], sort_keys=True, ensure_ascii=False)


Instance = Callable[..., Awaitable[SummaryStore]]


@pytest.fixture
async def instance(database: str) -> AsyncIterator[Instance]:
    """Start another proxy instance's store on the test's database; its summaries."""
    started: list[Store] = []

    async def start(**settings: Any) -> SummaryStore:
        store = open_store(database, **settings)
        await store.start()
        started.append(store)
        return store.summaries()

    yield start
    for store in started:
        await store.close()


def _summarize(store: SummaryStore, result: CompressionResult) -> None:
    for job in result.to_summarize:
        store.add_summary(job.key, "s", "claude-haiku-4-5", scripted_summary(str(job.lines)), 0.0)


def _turn(memory: SessionMemory, store: SummaryStore, turns: int) -> CompressionResult:
    return compress(Anthropic.shape, anthropic_chat(turns), memory, MODEL, 0.1, CLAUDE_CACHE, store)


async def test_a_fold_keeps_its_digests_when_summaries_arrive_and_the_next_fold_uses_them(
    instance: Instance,
) -> None:
    store = await instance()
    memory = SessionMemory("s")
    turns, held = 30, []
    while True:  # to the first fold; its chunks' summaries are asked for ahead of it, not yet written
        result = _turn(memory, store, turns)
        held.append(result)
        if result.messages_folded:
            break
        turns += 2
    first = result
    assert first.summarizers and set(first.summarizers) == {"extractive"}
    assert sum(len(r.to_summarize) for r in held) == len(first.summarizers)  # each whole chunk once
    assert MODEL_DIGEST_INTRO in _prefix(first) and DIGEST_INTRO not in _prefix(first)
    for result in held:  # the summarizer answers now, after the fold went out
        _summarize(store, result)

    # The same fold on the next turn: the cached prefix is not rewritten for the summaries.
    again = _turn(memory, store, turns + 2)
    assert again.messages_folded == first.messages_folded
    assert _prefix(again) == _prefix(first) and set(again.summarizers) == {"extractive"}
    # Nor after a restart (the memory from its snapshot, a new connection), nor on another instance.
    restored = SessionMemory.restore("s", memory.snapshot())
    assert _prefix(_turn(restored, await instance(), turns + 2)) == _prefix(first)
    assert _prefix(_turn(SessionMemory("s"), await instance(), turns + 2)) == _prefix(first)

    # The next fold rewrites the prefix anyway: every chunk with a stored summary uses it from then on.
    turns += 2
    while True:
        result = _turn(memory, store, turns)
        if result.messages_folded > first.messages_folded:
            break
        _summarize(store, result)
        turns += 2
    assert result.summarizers[: len(first.summarizers)] == ("model",) * len(first.summarizers)
    assert result.summarizers[-1] == "extractive"  # whole at this very request: its summary comes later
    text = _prefix(result)
    for job in held[0].to_summarize:
        assert scripted_summary(str(job.lines)) in text  # exactly what the model returned
    elsewhere = _turn(SessionMemory("s"), await instance(), turns)
    assert _prefix(elsewhere) == text and elsewhere.summarizers == result.summarizers


async def test_without_a_prompt_cache_a_stored_summary_is_used_at_once(instance: Instance) -> None:
    store = await instance()
    memory = SessionMemory("s")
    body: dict[str, Any] = anthropic_chat(81)
    first = compress(Anthropic.shape, body, memory, MODEL, None, summaries=store)
    assert first.summarizers[0] == "extractive" and first.to_summarize
    _summarize(store, first)
    second = compress(Anthropic.shape, body, memory, MODEL, None, summaries=store)
    whole = len(first.to_summarize)
    assert second.summarizers[:whole] == ("model",) * whole
    assert second.to_summarize == ()  # asked for once


async def test_extractive_ignores_stored_summaries(instance: Instance) -> None:
    store = await instance()
    memory = SessionMemory("s")
    body = anthropic_chat(81)
    first = compress(Anthropic.shape, body, memory, settings(), None, summaries=store)
    assert first.to_summarize == () and set(first.summarizers) == {"extractive"}
    assert DIGEST_INTRO in _prefix(first)


async def test_two_instances_deciding_one_fold_both_keep_the_first_decision(instance: Instance) -> None:
    first, second = await instance(), await instance()
    first.add_summary("chunk-a", "s", "claude-haiku-4-5", "first", 1.0)
    second.add_summary("chunk-a", "s", "claude-haiku-4-5", "second", 2.0)  # a race lost: kept out
    assert first.summaries(["chunk-a", "chunk-b"]) == second.summaries(["chunk-a"]) == {"chunk-a": "first"}
    assert second.fold("fold") is None
    assert first.decide_fold("fold", ["chunk-a"], 1.0) == ("chunk-a",)
    assert second.decide_fold("fold", [], 2.0) == ("chunk-a",)  # it forwards what the first did
    assert second.fold("fold") == ("chunk-a",)


async def test_many_keys_are_read_at_once(instance: Instance) -> None:
    store = await instance()
    keys = [f"chunk-{i}" for i in range(1200)]  # more than SQLite binds in one query here
    for key in keys[::3]:
        store.add_summary(key, None, "gpt-4o-mini", key.upper(), 0.0)
    assert store.summaries(keys) == {key: key.upper() for key in keys[::3]}


async def test_without_stored_text_stored_summaries_are_deleted(database: str, instance: Instance) -> None:
    store = await instance()
    store.add_summary("chunk-a", "s", "claude-haiku-4-5", "a summary", 0.0)
    store.decide_fold("fold", ["chunk-a"], 0.0)
    again = await instance(store_text=False)  # restarted with [storage] store_text = false
    assert again.summaries(["chunk-a"]) == {} and again.fold("fold") is None
    assert query(database, "SELECT * FROM summaries") == query(database, "SELECT * FROM fold_digests") == []


async def test_postgresql_a_lost_connection_fails_one_read_and_the_next_reconnects(postgres_url: str) -> None:
    store = open_store(postgres_url)
    await store.start()
    try:
        book = store.summaries()
        book.add_summary("chunk-a", "s", "claude-haiku-4-5", "kept", 0.0)
        # The server drops every connection to this test's database (a restart, a failover).
        execute(
            postgres_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        with pytest.raises(psycopg.OperationalError):
            book.summaries(["chunk-a"])  # compress() fails open on this one request
        assert book.summaries(["chunk-a"]) == {"chunk-a": "kept"}
    finally:
        await store.close()
