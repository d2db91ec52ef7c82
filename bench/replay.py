"""Send a benchmark's requests on their way and return what upstream got: through the real proxy to a
recording fake upstream, or with compress() called directly as the proxy's handler would call it."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import attrs

from proxy.compression import SessionMemory, compress
from proxy.compression.policy import UNCACHED
from proxy.config import CompressionConfig, load_config
from proxy.pricing import PriceTable
from proxy.prompt_cache import prompt_cache
from proxy.providers import Anthropic, OpenAI

PATHS = {"anthropic": "/v1/messages", "openai": "/v1/chat/completions"}
AUTH = {
    "anthropic": {"x-api-key": "sk-ant-bench", "anthropic-version": "2023-06-01"},
    "openai": {"authorization": "Bearer sk-bench"},
}


@attrs.frozen
class Request:
    """One request of a session, in the order the client sends it."""

    session: str
    provider: str
    body: dict[str, Any]


# No attrs repr: asyncio formats the result of the run's task with reprlib, which calls the full
# repr of every forwarded body first (seconds, and a string the size of the run).
@attrs.define(repr=False)
class Forwarded:
    """What upstream got for each request and, in-process, compress()'s time on it in ms (None for
    the first request of a session, which does its cold work once, and through the proxy)."""

    bodies: list[dict[str, Any]] = attrs.Factory(list)
    times_ms: list[float | None] = attrs.Factory(list)
    # Through the proxy with summarizer = model: its summary calls and its own requests, per session.
    summary_calls: list[SessionCalls] = attrs.Factory(list)


@attrs.frozen
class SessionCalls:
    """What one session's requests cost upstream, its summary calls apart, as the proxy recorded them."""

    session: str
    requests: int
    input_tokens: int
    cost_usd: float
    summaries: int
    summary_input_tokens: int
    summary_output_tokens: int
    summary_cost_usd: float


# Per session label, from the proxy's own `requests` rows.
SESSION_CALLS = """
SELECT s.label,
       SUM(r.endpoint != 'summary'),
       COALESCE(SUM(CASE WHEN r.endpoint != 'summary' THEN r.input_tokens END), 0),
       TOTAL(CASE WHEN r.endpoint != 'summary' THEN r.cost_usd END),
       SUM(r.endpoint = 'summary'),
       COALESCE(SUM(CASE WHEN r.endpoint = 'summary' THEN r.input_tokens END), 0),
       COALESCE(SUM(CASE WHEN r.endpoint = 'summary' THEN r.output_tokens END), 0),
       TOTAL(CASE WHEN r.endpoint = 'summary' THEN r.cost_usd END)
FROM requests r JOIN sessions s ON s.id = r.session_id
GROUP BY s.label ORDER BY s.label
"""


def settings_for(overrides: dict[str, str]) -> CompressionConfig:
    """The [compression] settings with `compression_*` overrides, as the proxy would load them."""
    absent = Path(tempfile.gettempdir()) / "vidurai-bench-absent.ini"
    return load_config(path=absent, env={}, **overrides).compression


def in_process(requests: list[Request], settings: CompressionConfig) -> Forwarded:
    """compress() per request as the proxy's handler calls it (proxy/handlers.py
    `_remember_and_compress`; keep the two in step): a session's memory, the cache warmth and the
    cache prices only when the history is long enough to fold."""
    providers = {"anthropic": Anthropic("http://upstream"), "openai": OpenAI("http://upstream/v1")}
    prices = PriceTable()
    memories: dict[str, SessionMemory] = {}
    last_seen: dict[str, float] = {}
    out = Forwarded()
    for request in requests:
        messages = request.body.get("messages") or []
        warm, cache, memory = None, UNCACHED, None
        repeat = request.session in memories
        if settings.enabled and len(messages) >= settings.threshold_messages:
            provider = providers[request.provider]
            previous = last_seen.get(request.session)
            cache, warm = prompt_cache(provider, request.body, previous, time.time(), prices)
            # A session's memory is made at its first request that can fold, as the proxy does.
            memory = memories.setdefault(request.session, SessionMemory(request.session))
        started = time.perf_counter()
        shape = providers[request.provider].shape
        result = compress(shape, request.body, memory, settings, warm, cache)
        # The first request of a memory does its cold work once: not timed.
        out.times_ms.append((time.perf_counter() - started) * 1000 if repeat else None)
        if memory is not None:
            memory.drain_memory_rows()  # as the proxy does; they would otherwise pile up
        last_seen[request.session] = time.time()
        out.bodies.append(request.body if result.body is None else result.body)
    return out


async def through_proxy(requests: list[Request], overrides: dict[str, str]) -> Forwarded:
    """Every request through the real proxy to the recording fake upstream, one after the other."""
    import sqlite3

    import aiohttp

    from proxy.app import create_app, start_server
    from proxy.keys import SUMMARIZER
    from tests.fake_upstream import running_fake_upstream

    out = Forwarded()
    with tempfile.TemporaryDirectory() as folder:
        async with running_fake_upstream() as fake:
            config = load_config(
                path=Path(folder) / "absent.ini",
                env={},
                upstream_anthropic_base_url=fake.anthropic_base_url,
                upstream_openai_base_url=fake.openai_base_url,
                storage_database=str(Path(folder) / "bench.db"),
                **overrides,
            )
            app = create_app(config)
            runner, port = await start_server(app, "127.0.0.1", 0)
            try:
                async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as client:
                    for request in requests:
                        headers = {**AUTH[request.provider], "x-vidurai-session": request.session}
                        data = json.dumps(request.body)
                        sent = {**headers, "content-type": "application/json"}
                        async with client.post(PATHS[request.provider], data=data, headers=sent) as response:
                            await response.read()
                            if response.status != 200:
                                raise RuntimeError(f"the proxy answered {response.status}")
                        # Popped: the run holds no copy it is done with; summary calls are counted below.
                        forwarded = next(r for r in reversed(fake.requests) if r.scenario != "summary").json
                        fake.requests.clear()
                        if not isinstance(forwarded, dict):
                            raise RuntimeError("the fake upstream recorded no JSON body")
                        out.bodies.append(forwarded)
                        out.times_ms.append(None)
                await app[SUMMARIZER].drain()  # the last summaries are paid for too
            finally:
                await runner.cleanup()
            if config.compression.summarizer == "model":
                conn = sqlite3.connect(config.storage.database)
                try:
                    out.summary_calls = [SessionCalls(*row) for row in conn.execute(SESSION_CALLS)]
                finally:
                    conn.close()
    return out
