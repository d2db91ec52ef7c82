"""summarizer = model through the real proxy: summaries written in the background by the fake upstream's
model, with the client's key, recorded and priced; failures leave the extractive digest."""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
import structlog

from proxy.compression import SessionMemory, compress
from proxy.compression.summaries import MODEL_DIGEST_INTRO
from proxy.storage import open_store
from tests.compression_support import SHAPES, anthropic_chat, settings
from tests.conftest import ANTHROPIC_KEY, OPENAI_KEY, ProxyFactory
from tests.databases import query
from tests.fake_upstream import FakeUpstream

SETTINGS = settings(summarizer="model", recall_budget_tokens=6000, recall_share=0.3)

ANTHROPIC_HEADERS = {"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01"}
MODEL = {"compression_summarizer": "model", "compression_summary_model_anthropic": "claude-haiku-4-5"}


async def _send(http: aiohttp.ClientSession, url: str, body: dict[str, Any], headers: dict[str, str]) -> None:
    path = "/v1/messages" if "x-api-key" in headers else "/v1/chat/completions"
    async with http.post(url + path, json=body, headers={**headers, "x-vidurai-session": "s1"}) as response:
        assert response.status == 200, await response.text()
        await response.read()


def _forwarded(fake: FakeUpstream) -> str:
    """The latest conversation request upstream got (summary requests aside), as text."""
    latest = [r for r in fake.requests if r.scenario != "summary"][-1]
    return json.dumps(latest.json, ensure_ascii=False)


def _rows(database: Path | str, sql: str) -> list[tuple[Any, ...]]:
    return [tuple(row.values()) for row in query(database, sql)]


async def _chunks(body: dict[str, Any], provider: str = "anthropic") -> int:
    """How many whole chunks the proxy asks summaries of for this request: compress() in-process,
    on an empty summaries table as the first request finds it."""
    with tempfile.TemporaryDirectory() as folder:
        store = open_store(str(Path(folder) / "empty.db"))
        await store.start()
        try:
            book = store.summaries()
            result = compress(SHAPES[provider], body, SessionMemory("s"), SETTINGS, None, summaries=book)
        finally:
            await store.close()
    return len(result.to_summarize)


async def _until(check: Any, timeout: float = 10.0) -> None:  # noqa: ASYNC109
    async with asyncio.timeout(timeout):
        while not check():  # noqa: ASYNC110  # rows written by another thread, polled
            await asyncio.sleep(0.02)


async def test_first_fold_goes_out_extractive_and_the_next_uses_the_stored_summary(
    make_proxy: ProxyFactory, fake_upstream: FakeUpstream, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    url = await make_proxy(**MODEL)
    database = tmp_path / "vidurai.db"
    fake_upstream.summary_gate = asyncio.Event()  # summaries are held back until the test says so
    await _send(http, url, anthropic_chat(61), ANTHROPIC_HEADERS)
    # The client was answered while the summary calls still wait: it did not wait for them.
    chunks = await _chunks(anthropic_chat(61))
    await _until(lambda: len(fake_upstream.summaries()) == chunks)
    asked = fake_upstream.summaries()
    assert asked and "scripted summary" not in _forwarded(fake_upstream)
    for summary in asked:  # the client's own key, the configured model and upstream
        assert summary.provider == "anthropic" and summary.path == "/v1/messages"
        assert summary.headers["x-api-key"] == ANTHROPIC_KEY
        assert summary.json["model"] == "claude-haiku-4-5"
    fake_upstream.summary_gate.set()
    await _until(lambda: len(_rows(database, "SELECT * FROM summaries")) == len(asked))

    await _send(http, url, anthropic_chat(63), ANTHROPIC_HEADERS)
    assert "scripted summary" in _forwarded(fake_upstream)
    await _until(lambda: len(_rows(database, "SELECT * FROM audit WHERE event = 'compressed'")) == 2)
    digests = [
        json.loads(d)["digests"]
        for (d,) in _rows(database, "SELECT detail FROM audit WHERE event = 'compressed' ORDER BY id")
    ]
    assert set(digests[0]) == {"extractive"} and "model" in digests[1]

    # Each summary call is a priced requests row of the session, its cost counted against its savings.
    async with http.get(url + "/metrics.json") as response:
        metrics = await response.json()
    await _until(lambda: len(_rows(database, "SELECT * FROM requests")) == 2 + len(asked))
    calls = _rows(
        database,
        "SELECT session_id, tenant, cost_usd, cost_saved_usd, status FROM requests "
        "WHERE endpoint = 'summary'",
    )
    conversation = _rows(database, "SELECT session_id, tenant FROM requests WHERE endpoint = 'messages'")[0]
    assert len(calls) == len(asked)
    for session_id, tenant, cost, saved, status in calls:
        assert (session_id, tenant) == conversation and status == 200
        assert cost > 0 and saved == -cost
    summary_cost = sum(c[2] for c in calls)
    (session_cost, session_requests) = _rows(database, "SELECT cost_usd, requests FROM sessions")[0]
    assert session_requests == 2 + len(asked) and session_cost >= summary_cost
    async with http.get(url + "/metrics.json") as response:
        metrics = await response.json()
    assert metrics["totals"]["requests"] == 2 + len(asked)
    assert metrics["totals"]["cost_usd"] >= summary_cost


async def test_a_failed_or_slow_summary_leaves_the_extractive_digest(
    make_proxy: ProxyFactory, fake_upstream: FakeUpstream, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    url = await make_proxy(**MODEL, compression_summary_timeout="0.3")
    database = tmp_path / "vidurai.db"
    fake_upstream.summary_status = 500
    with structlog.testing.capture_logs() as logs:
        await _send(http, url, anthropic_chat(61), ANTHROPIC_HEADERS)
        failed = await _chunks(anthropic_chat(61))
        await _until(
            lambda: len(_rows(database, "SELECT * FROM requests WHERE endpoint = 'summary'")) == failed
        )
        fake_upstream.summary_status = 200
        fake_upstream.summary_gate = asyncio.Event()  # never set: every call times out
        await _send(http, url, anthropic_chat(101), ANTHROPIC_HEADERS)
        slow = await _chunks(anthropic_chat(101)) - failed  # the failed ones are not asked for again
        assert slow > 0
        await _until(
            lambda: len(_rows(database, "SELECT * FROM requests WHERE endpoint = 'summary'")) == failed + slow
        )
        await _send(http, url, anthropic_chat(103), ANTHROPIC_HEADERS)

        def warnings() -> list[dict[str, Any]]:
            return [e for e in logs if e["event"].startswith("summary failed")]

        # A call's row is queued on the loop before its pool thread hears back and logs the warning.
        await _until(lambda: len(warnings()) >= failed + slow)
    assert "scripted summary" not in _forwarded(fake_upstream)
    assert _rows(database, "SELECT * FROM summaries") == []
    assert len(warnings()) == failed + slow  # one per call
    errors = _rows(
        database, "SELECT status, error FROM requests WHERE endpoint = 'summary' ORDER BY created_at"
    )
    assert errors[:failed] == [(500, "upstream answered 500")] * failed
    assert errors[failed:] == [(None, "timeout")] * slow
    fake_upstream.summary_gate.set()


async def test_an_anthropic_summary_names_the_api_version_the_client_left_out(
    make_proxy: ProxyFactory, fake_upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    url = await make_proxy(**MODEL)
    await _send(http, url, anthropic_chat(61), {"x-api-key": ANTHROPIC_KEY})
    chunks = await _chunks(anthropic_chat(61))
    await _until(lambda: len(fake_upstream.summaries()) == chunks)
    assert {summary.headers["anthropic-version"] for summary in fake_upstream.summaries()} == {"2023-06-01"}


async def test_openai_summary_uses_the_clients_key_and_the_openai_model(
    make_proxy: ProxyFactory, fake_upstream: FakeUpstream, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    url = await make_proxy(compression_summarizer="model", compression_summary_model_openai="gpt-4o-mini")
    body = anthropic_chat(61)
    chat = {"model": "gpt-4o", "messages": [{"role": "system", "content": "Be brief."}, *body["messages"]]}
    await _send(http, url, chat, {"authorization": f"Bearer {OPENAI_KEY}"})
    chunks = await _chunks(chat, "openai")
    await _until(lambda: len(fake_upstream.summaries()) == chunks)
    asked = fake_upstream.summaries()
    assert asked
    for summary in asked:
        assert summary.provider == "openai" and summary.path == "/v1/chat/completions"
        assert summary.headers["authorization"] == f"Bearer {OPENAI_KEY}"
        assert summary.json["model"] == "gpt-4o-mini"
    database = tmp_path / "vidurai.db"
    await _until(lambda: len(_rows(database, "SELECT * FROM summaries")) == len(asked))
    (model, summary_text), *_ = _rows(database, "SELECT model, summary FROM summaries")
    assert model == "gpt-4o-mini" and summary_text.startswith("Summary: scripted summary")


def _cached_chat(turns: int) -> dict[str, Any]:
    """A chat as Claude Code sends it: a cache marker on the system prompt, so Claude caches it."""
    body = anthropic_chat(turns)
    system = [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]
    return {**body, "model": "claude-sonnet-4-5", "system": system}


def _prefix(fake: FakeUpstream) -> str:
    """The task and the digests after it, as upstream got them: what Claude caches."""
    latest = [r for r in fake.requests if r.scenario != "summary"][-1]
    return json.dumps(latest.json["messages"][0], ensure_ascii=False)


async def test_a_cached_fold_is_byte_identical_on_another_instance_and_summaries_wait_for_the_next_fold(
    make_proxy: ProxyFactory, fake_upstream: FakeUpstream, http: aiohttp.ClientSession, database: str
) -> None:
    """Two instances on one database (a SQLite file, then PostgreSQL as a fleet shares it)."""
    first = await make_proxy(**MODEL, storage_database=database)
    fake_upstream.summary_gate = asyncio.Event()
    turns = 30
    while MODEL_DIGEST_INTRO not in _prefix_or_empty(fake_upstream) and turns < 200:  # the first fold
        turns += 2
        await _send(http, first, _cached_chat(turns), ANTHROPIC_HEADERS)
    folded = _prefix(fake_upstream)
    assert "scripted summary" not in folded
    fake_upstream.summary_gate.set()  # the summaries arrive after the fold went out
    await _until(lambda: len(_rows(database, "SELECT * FROM summaries")) == len(fake_upstream.summaries()))

    turns += 2
    await _send(http, first, _cached_chat(turns), ANTHROPIC_HEADERS)
    assert _prefix(fake_upstream) == folded  # the cached prefix is not rewritten for them
    second = await make_proxy(**MODEL, storage_database=database)  # another instance, or a restart
    await _send(http, second, _cached_chat(turns), ANTHROPIC_HEADERS)
    assert _prefix(fake_upstream) == folded

    while _prefix(fake_upstream).startswith(folded[:-2]) and turns < 200:  # the next fold uses them
        turns += 2
        await _send(http, first, _cached_chat(turns), ANTHROPIC_HEADERS)
    refolded = _prefix(fake_upstream)
    assert "scripted summary" in refolded
    await _send(http, second, _cached_chat(turns), ANTHROPIC_HEADERS)
    assert _prefix(fake_upstream) == refolded


def _prefix_or_empty(fake: FakeUpstream) -> str:
    return _prefix(fake) if any(r.scenario != "summary" for r in fake.requests) else ""


async def test_without_stored_text_there_are_no_summaries(
    make_proxy: ProxyFactory, fake_upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    with structlog.testing.capture_logs() as logs:
        url = await make_proxy(**MODEL, storage_store_text="false")
    assert any("needs [storage] store_text" in e["event"] for e in logs)  # said once, at startup
    await _send(http, url, anthropic_chat(81), ANTHROPIC_HEADERS)
    await _send(http, url, anthropic_chat(83), ANTHROPIC_HEADERS)
    assert fake_upstream.summaries() == []  # a summary is conversation text: none is written
    assert "scripted summary" not in _forwarded(fake_upstream)
