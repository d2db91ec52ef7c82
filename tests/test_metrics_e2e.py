"""Usage, cost and metrics through the real proxy: SQLite rows, /metrics.json, /metrics, /health (issue 3)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import attrs
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxy.pricing import BUILTIN_PRICES
from tests.conftest import OPENAI_KEY, ProxyFactory, anthropic_client, openai_client
from tests.databases import query, wait_rows
from tests.fake_upstream import FakeUpstream, body_tokens
from tests.proxy_calls import CLAUDE, CLAUDE_PRICE, FLUSH_INTERVAL, GPT, json_logs, log_lines

MESSAGES: list[Any] = [{"role": "user", "content": "How much does this cost?"}]
STATS = re.compile(r"tokens_saved=(\d+); overhead_ms=(\d+(?:\.\d+)?)")


@attrs.frozen
class Served:
    """A proxy on loopback and the SQLite file it writes."""

    url: str
    db: Path


def expected_cost(
    prefix: str,
    *,
    input: int,
    output: int,
    cache_read: int = 0,
    cache_write: int = 0,
    cache_write_1h: int = 0,
) -> float:
    """Dollars computed by hand from the built-in price table; `input` excludes both cache tiers, and
    `cache_write_1h` of the `cache_write` tokens went to Anthropic's 1-hour cache (2x input)."""
    price = BUILTIN_PRICES[prefix]
    return (
        input * price.input
        + output * price.output
        + cache_read * price.cache_read
        + (cache_write - cache_write_1h) * price.cache_write
        + cache_write_1h * 2 * price.input
    ) / 1_000_000


def usage(row: dict[str, Any]) -> tuple[int | None, ...]:
    """The four usage columns of a requests row."""
    return row["input_tokens"], row["output_tokens"], row["cache_read_tokens"], row["cache_write_tokens"]


def header_estimates(headers: Any) -> tuple[int, int]:
    """tokens_original_est and tokens_forwarded_est from an X-Vidurai-Stats header."""
    fields = dict(part.split("=") for part in headers["x-vidurai-stats"].split("; "))
    return int(fields["tokens_original_est"]), int(fields["tokens_forwarded_est"])


def stats(headers: Any) -> tuple[int, float]:
    """tokens_saved and overhead_ms from an X-Vidurai-Stats header."""
    value = headers.get("x-vidurai-stats")
    assert value, "no X-Vidurai-Stats header"
    match = STATS.search(value)
    assert match, value
    return int(match.group(1)), float(match.group(2))


@pytest.fixture
async def served(make_proxy: ProxyFactory, tmp_path: Path) -> Served:
    db = tmp_path / "metrics.db"
    return Served(await make_proxy(storage_database=db, storage_flush_interval=FLUSH_INTERVAL), db)


async def one_row(served: Served, **where: Any) -> dict[str, Any]:
    clause = " AND ".join(f"{column} IS ?" for column in where) or "1"
    rows = await wait_rows(served.db, f"SELECT * FROM requests WHERE {clause}", tuple(where.values()))
    assert len(rows) == 1, rows
    return rows[0]


# --- rows match the usage upstream reported ----------------------------------------------------


async def test_anthropic_json_row(served: Served, fake_upstream: FakeUpstream) -> None:
    async with anthropic_client(served.url) as client:
        raw = await client.messages.with_raw_response.create(
            model=CLAUDE,
            max_tokens=64,
            messages=MESSAGES,
            extra_headers={"x-fake-cache-read": "1200", "x-fake-cache-write": "300"},
        )
    message = await raw.parse()
    sent = body_tokens(fake_upstream.last("/v1/messages").body)
    assert message.usage.input_tokens == sent
    row = await one_row(served, endpoint="messages")
    assert (row["provider"], row["model"], row["stream"], row["status"], row["error"]) == (
        "anthropic",
        CLAUDE,
        0,
        200,
        None,
    )
    assert usage(row) == (sent, 9, 1200, 300)
    assert 0 < row["ttfb_ms"] <= row["duration_ms"]
    assert row["overhead_ms"] is not None and row["overhead_ms"] >= 0
    assert row["session_id"] and row["tenant"]
    # One estimate per request, the same in the header and the row; nothing compressed here.
    assert (row["tokens_original_est"], row["tokens_forwarded_est"]) == header_estimates(raw.headers)
    assert row["tokens_forwarded_est"] == row["tokens_original_est"] > 0
    assert row["tokens_saved"] == 0 and row["cost_saved_usd"] == 0
    assert row["cost_usd"] == pytest.approx(
        expected_cost(CLAUDE_PRICE, input=sent, output=9, cache_read=1200, cache_write=300), rel=1e-9
    )
    assert stats(raw.headers)[0] == 0


async def test_anthropic_stream_row_reads_start_and_cumulative_delta(
    served: Served, fake_upstream: FakeUpstream
) -> None:
    async with anthropic_client(served.url) as client:
        stream = await client.messages.create(
            model=CLAUDE,
            max_tokens=64,
            messages=MESSAGES,
            stream=True,
            extra_headers={
                "x-fake-cache-read": "50",
                "x-fake-cache-write": "20",
                "x-fake-cache-write-1h": "8",
                "x-fake-chunks": "5",
            },
        )
        events = [event async for event in stream]
    assert events[-1].type == "message_stop"
    sent = body_tokens(fake_upstream.last("/v1/messages").body)
    row = await one_row(served, endpoint="messages")
    assert (row["stream"], row["status"], row["model"], row["error"]) == (1, 200, CLAUDE, None)
    # message_start says output 1; message_delta's cumulative 5 replaces it (a sum would give 6).
    assert usage(row) == (sent, 5, 50, 20)
    assert 0 < row["ttfb_ms"] <= row["duration_ms"]
    # 8 of the 20 cache writes went to the 1-hour cache (message_start's usage.cache_creation).
    assert row["cost_usd"] == pytest.approx(
        expected_cost(CLAUDE_PRICE, input=sent, output=5, cache_read=50, cache_write=20, cache_write_1h=8),
        rel=1e-9,
    )


async def test_openai_json_row_bills_cached_tokens_once(served: Served, fake_upstream: FakeUpstream) -> None:
    async with openai_client(served.url + "/v1") as client:
        raw = await client.chat.completions.with_raw_response.create(
            model=GPT, messages=MESSAGES, extra_headers={"x-fake-cache-read": "4"}
        )
    completion = raw.parse()
    prompt = body_tokens(fake_upstream.last("/v1/chat/completions").body)
    assert completion.usage is not None and completion.usage.prompt_tokens == prompt
    row = await one_row(served, endpoint="chat_completions")
    assert (row["provider"], row["model"], row["stream"], row["status"]) == ("openai", GPT, 0, 200)
    # cached_tokens are part of prompt_tokens: stored apart, so the uncached input is prompt - cached.
    assert usage(row) == (prompt - 4, 9, 4, 0)
    assert (row["tokens_original_est"], row["tokens_forwarded_est"]) == header_estimates(raw.headers)
    assert 0 < row["ttfb_ms"] <= row["duration_ms"]
    assert row["cost_usd"] == pytest.approx(
        expected_cost("gpt-4o", input=prompt - 4, output=9, cache_read=4), rel=1e-9
    )
    assert stats(raw.headers)[0] == 0


async def test_openai_stream_with_include_usage_row(served: Served, fake_upstream: FakeUpstream) -> None:
    async with openai_client(served.url + "/v1") as client:
        stream = await client.chat.completions.create(
            model=GPT,
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"x-fake-cache-read": "3", "x-fake-chunks": "6"},
        )
        chunks = [chunk async for chunk in stream]
    assert chunks[-1].usage is not None and chunks[-1].choices == []  # the client asked for it: kept
    prompt = body_tokens(fake_upstream.last("/v1/chat/completions").body)
    row = await one_row(served, endpoint="chat_completions")
    assert (row["stream"], row["status"], row["model"]) == (1, 200, GPT)
    assert (row["input_tokens"], row["output_tokens"], row["cache_read_tokens"]) == (prompt - 3, 6, 3)
    assert row["cost_usd"] == pytest.approx(
        expected_cost("gpt-4o", input=prompt - 3, output=6, cache_read=3), rel=1e-9
    )


@pytest.mark.parametrize("options", [None, {"include_usage": False}], ids=["absent", "false"])
async def test_openai_stream_without_include_usage(
    served: Served, fake_upstream: FakeUpstream, http: aiohttp.ClientSession, options: Any
) -> None:
    body: dict[str, Any] = {"model": GPT, "messages": MESSAGES, "stream": True}
    if options is not None:
        body["stream_options"] = options
    headers = {"Authorization": f"Bearer {OPENAI_KEY}"}
    async with http.post(served.url + "/v1/chat/completions", json=body, headers=headers) as response:
        assert response.status == 200
        tokens_saved, _ = stats(response.headers)
        proxied = await response.read()
    upstream = fake_upstream.last("/v1/chat/completions")
    # The proxy asked upstream for usage...
    assert isinstance(upstream.json, dict)
    assert upstream.json["stream_options"] == {"include_usage": True}
    assert b'"usage"' in upstream.response_body
    # ...and the client saw exactly what it asked for: no usage chunk, no "usage" key anywhere.
    assert b'"usage"' not in proxied and b'"choices":[]' not in proxied
    async with http.post(
        fake_upstream.openai_base_url + "/chat/completions", json=body, headers=headers
    ) as response:
        direct = await response.read()

    def normalised(raw: bytes) -> bytes:
        return re.sub(rb"chatcmpl-fake\d+", b"chatcmpl-fake", raw)

    assert normalised(proxied) == normalised(direct)
    row = await one_row(served, endpoint="chat_completions")
    assert (row["stream"], row["status"], row["model"]) == (1, 200, GPT)
    prompt = body_tokens(upstream.body)
    assert usage(row) == (prompt, 9, 0, 0)
    assert row["cost_usd"] == pytest.approx(expected_cost("gpt-4o", input=prompt, output=9), rel=1e-9)
    assert tokens_saved == 0


async def test_count_tokens_and_passthrough_rows(served: Served) -> None:
    async with anthropic_client(served.url) as claude, openai_client(served.url + "/v1") as gpt:
        counted = await claude.messages.count_tokens(model=CLAUDE, messages=MESSAGES)
        claude_models = await claude.models.with_raw_response.list()
        gpt_models = await gpt.models.with_raw_response.list()
    assert counted.input_tokens > 0
    stats(claude_models.headers), stats(gpt_models.headers)
    rows = await wait_rows(served.db, "SELECT * FROM requests ORDER BY created_at", count=3)
    assert [(r["provider"], r["endpoint"], r["method"], r["path"], r["status"]) for r in rows] == [
        ("anthropic", "count_tokens", "POST", "/v1/messages/count_tokens", 200),
        ("anthropic", "passthrough", "GET", "/v1/models", 200),
        ("openai", "passthrough", "GET", "/v1/models", 200),
    ]
    assert rows[0]["model"] == CLAUDE
    # count_tokens is free: its count is not usage, so nothing is billed for it.
    assert rows[0]["cost_usd"] in (None, 0) and rows[0]["output_tokens"] in (None, 0)
    assert all(r["duration_ms"] is not None and r["ttfb_ms"] is not None for r in rows)
    assert rows[1]["session_id"] is None and rows[2]["session_id"] is None


async def test_openai_responses_api_usage_row(served: Served) -> None:
    async with openai_client(served.url + "/v1") as client:
        response = await client.responses.create(
            model=GPT, input="hello", extra_headers={"x-fake-cache-read": "2"}
        )
    assert response.usage is not None
    billed = response.usage.input_tokens - 2  # cached_tokens are part of input_tokens here too
    row = await one_row(served, path="/v1/responses")
    assert (row["provider"], row["endpoint"], row["model"]) == ("openai", "passthrough", GPT)
    assert usage(row)[:3] == (billed, 9, 2)
    assert row["cost_usd"] == pytest.approx(
        expected_cost("gpt-4o", input=billed, output=9, cache_read=2), rel=1e-9
    )


async def test_error_rows_for_429_and_upstream_down(
    served: Served, make_proxy: ProxyFactory, closed_port_url: str, tmp_path: Path
) -> None:
    async with anthropic_client(served.url) as client:
        with pytest.raises(anthropic.RateLimitError) as limited:
            await client.messages.create(model="fake-429", max_tokens=64, messages=MESSAGES)
    stats(limited.value.response.headers)  # a relayed error is still a proxied response
    row = await one_row(served, endpoint="messages")
    assert (row["status"], row["model"], row["stream"], row["cost_usd"], row["input_tokens"]) == (
        429,
        "fake-429",
        0,
        None,
        None,
    )
    assert row["duration_ms"] is not None

    down_db = tmp_path / "down.db"
    down = await make_proxy(
        upstream_openai_base_url=closed_port_url + "/v1",
        storage_database=down_db,
        storage_flush_interval=FLUSH_INTERVAL,
    )
    async with openai_client(down + "/v1") as client:
        with pytest.raises(openai.InternalServerError) as failed:
            await client.chat.completions.create(model=GPT, messages=MESSAGES, stream=True)
    assert failed.value.status_code == 502
    row = await one_row(Served(down, down_db), endpoint="chat_completions")
    assert (row["status"], row["model"], row["stream"], row["cost_usd"]) == (502, GPT, 1, None)
    assert "Cannot connect" in row["error"] and row["ttfb_ms"] is None and row["duration_ms"] is not None
    async with aiohttp.ClientSession() as http:
        for url in (served.url, down):
            async with http.get(url + "/metrics.json") as response:
                totals = (await response.json())["totals"]
            assert (totals["requests"], totals["errors"]) == (1, 1)


async def test_concurrent_calls_of_one_conversation_each_get_one_row(served: Served) -> None:
    slow = {"x-fake-scenario": "slow", "x-fake-delay": "0.01"}  # so that the calls overlap

    async def call(client: anthropic.AsyncAnthropic, n: int) -> None:
        if n % 2:
            await client.messages.create(model=CLAUDE, max_tokens=16, messages=MESSAGES, extra_headers=slow)
            return
        stream = await client.messages.create(
            model=CLAUDE, max_tokens=16, messages=MESSAGES, stream=True, extra_headers=slow
        )
        async for _ in stream:
            pass

    async with anthropic_client(served.url) as client:
        await asyncio.gather(*(call(client, n) for n in range(30)))
    rows = await wait_rows(served.db, "SELECT * FROM requests", count=30)
    assert len(rows) == 30 and {r["status"] for r in rows} == {200}
    assert sum(r["output_tokens"] for r in rows) == 30 * 9
    assert len({r["session_id"] for r in rows}) == 1
    await wait_rows(served.db, "SELECT * FROM sessions WHERE requests = 30")
    session = query(served.db, "SELECT * FROM sessions")[0]
    assert session["output_tokens"] == 30 * 9
    assert session["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in rows), rel=1e-9)


# --- cost --------------------------------------------------------------------------------------


async def test_unknown_model_costs_null_with_one_warning(make_proxy: ProxyFactory, tmp_path: Path) -> None:
    db = tmp_path / "unknown.db"
    with json_logs(tmp_path / "proxy.log") as log_file:
        url = await make_proxy(storage_database=db, storage_flush_interval=FLUSH_INTERVAL)
        async with anthropic_client(url) as client:
            for _ in range(2):
                await client.messages.create(model="claude-mystery-9", max_tokens=64, messages=MESSAGES)
            await client.messages.create(model=CLAUDE, max_tokens=64, messages=MESSAGES)
        rows = await wait_rows(db, "SELECT * FROM requests ORDER BY created_at", count=3)
        lines = log_lines(log_file)
    assert [r["cost_usd"] is None for r in rows] == [True, True, False]
    assert rows[0]["input_tokens"] > 0 and rows[0]["output_tokens"] == 9  # usage kept, only the price unknown
    warnings = [line for line in lines if line["event"] == "pricing.unknown_model"]
    assert len(warnings) == 1 and warnings[0]["level"] == "warning"
    assert warnings[0]["model"] == "claude-mystery-9"
    async with aiohttp.ClientSession() as http, http.get(url + "/metrics.json") as response:
        totals = (await response.json())["totals"]
    assert totals["unpriced_requests"] == 2
    assert totals["cost_usd"] == pytest.approx(rows[2]["cost_usd"], abs=1e-6)


def long_conversation(turns: int) -> list[Any]:
    """A conversation long enough for the default compression settings to fold its beginning."""
    topics = ["harbour", "glacier", "orchard", "lighthouse", "quarry", "vineyard", "monastery", "canal"]
    messages: list[Any] = []
    for n in range(turns):
        topic = topics[n % len(topics)]
        facts = (
            f"the {topic} record {n}.{k} lists {k * 7 + n} items checked by inspector {n % 5}"
            for k in range(12)
        )
        text = f"Turn {n} about the {topic}: " + " ".join(facts)
        messages.append({"role": "user" if n % 2 == 0 else "assistant", "content": text})
    messages.append({"role": "user", "content": "Summarise what the lighthouse records said."})
    return messages


async def test_compressed_request_tokens_and_cost_saved(served: Served, fake_upstream: FakeUpstream) -> None:
    async with anthropic_client(served.url) as client:
        raw = await client.messages.with_raw_response.create(
            model=CLAUDE, max_tokens=64, messages=long_conversation(40)
        )
    header_saved, overhead = stats(raw.headers)
    sent = body_tokens(fake_upstream.last("/v1/messages").body)
    row = await one_row(served, endpoint="messages")
    assert row["messages_original"] == 41 and row["messages_forwarded"] < 41, "nothing was compressed"
    assert header_saved > 0 and overhead >= 0
    assert row["input_tokens"] == sent
    # One pair of estimates per request: the header's, the row's and the dashboard's are the same.
    assert (row["tokens_original_est"], row["tokens_forwarded_est"]) == header_estimates(raw.headers)
    assert row["tokens_saved"] == row["tokens_original_est"] - row["tokens_forwarded_est"] == header_saved > 0
    # Uncompressed minus actual cost: the tokens not sent, at the model's input price.
    assert row["cost_saved_usd"] == pytest.approx(
        row["tokens_saved"] * BUILTIN_PRICES[CLAUDE_PRICE].input / 1_000_000, rel=1e-9
    )
    session = query(served.db, "SELECT * FROM sessions WHERE id = ?", (row["session_id"],))[0]
    assert (session["tokens_saved"], session["requests"]) == (row["tokens_saved"], 1)
    assert session["cost_saved_usd"] == pytest.approx(row["cost_saved_usd"])
    audit = await wait_rows(served.db, "SELECT * FROM audit WHERE event = 'compressed'")
    assert audit[0]["session_id"] == row["session_id"]


# --- endpoints ---------------------------------------------------------------------------------

AGGREGATE_INTS = (
    "requests",
    "errors",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "tokens_original_est",
    "tokens_forwarded_est",
    "tokens_saved",
    "unpriced_requests",
)
AGGREGATE_FLOATS = ("savings_pct", "cost_usd", "cost_saved_usd")


def check_aggregate(agg: dict[str, Any]) -> None:
    for key in AGGREGATE_INTS:
        assert type(agg[key]) is int, (key, agg[key])
    for key in AGGREGATE_FLOATS:
        assert isinstance(agg[key], (int, float)) and not isinstance(agg[key], bool), (key, agg[key])
    for key in ("avg_duration_ms", "avg_overhead_ms"):
        assert agg[key] is None or isinstance(agg[key], (int, float)), (key, agg[key])


async def traffic(url: str) -> None:
    """One Anthropic JSON call with cache tiers and one OpenAI stream without include_usage."""
    async with anthropic_client(url) as claude, openai_client(url + "/v1") as gpt:
        await claude.messages.create(
            model=CLAUDE,
            max_tokens=64,
            messages=MESSAGES,
            extra_headers={"x-fake-cache-read": "100", "x-fake-cache-write": "10"},
        )
        stream = await gpt.chat.completions.create(model=GPT, messages=MESSAGES, stream=True)
        async for _ in stream:
            pass


async def test_metrics_json_shape_and_totals(served: Served, http: aiohttp.ClientSession) -> None:
    await traffic(served.url)
    rows = await wait_rows(served.db, "SELECT * FROM requests", count=2)
    async with http.get(served.url + "/metrics.json") as response:
        assert response.status == 200 and response.content_type == "application/json"
        metrics = await response.json()
    assert set(metrics) >= {
        "generated_at",
        "totals",
        "by_provider",
        "by_model",
        "top_sessions",
        "recent_requests",
        "per_minute",
    }
    assert isinstance(metrics["generated_at"], float)
    totals = metrics["totals"]
    check_aggregate(totals)
    assert (totals["sessions"], totals["active_sessions"]) == (2, 2)
    assert totals["requests"] == 2 and totals["errors"] == 0
    for key in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens"):
        assert totals[key] == sum(r[key] for r in rows), key
    assert totals["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in rows), abs=1e-6)
    assert totals["cost_usd"] > 0
    assert totals["cache_read_tokens"] == 100 and totals["cache_write_tokens"] == 10

    assert sorted(p["provider"] for p in metrics["by_provider"]) == ["anthropic", "openai"]
    assert sorted((m["provider"], m["model"]) for m in metrics["by_model"]) == [
        ("anthropic", CLAUDE),
        ("openai", GPT),
    ]
    for agg in metrics["by_provider"] + metrics["by_model"]:
        check_aggregate(agg)
        assert agg["requests"] == 1
    assert len(metrics["top_sessions"]) == 2
    for session in metrics["top_sessions"]:
        assert {
            "id",
            "tenant",
            "created_at",
            "last_seen_at",
            "expired_at",
            "requests",
            "tokens_saved",
            "cost_usd",
            "cost_saved_usd",
        } <= set(session)
        assert session["expired_at"] is None and session["requests"] == 1
        assert re.fullmatch(r"[0-9a-f]{16}", session["tenant"])
    recent = metrics["recent_requests"]
    assert [r["provider"] for r in recent] == ["openai", "anthropic"]  # newest first
    assert [r["stream"] for r in recent] == [True, False]
    assert set(recent[0]) >= {
        "id",
        "created_at",
        "session_id",
        "provider",
        "endpoint",
        "model",
        "stream",
        "status",
        "duration_ms",
        "ttfb_ms",
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
        "tokens_original_est",
        "tokens_forwarded_est",
        "tokens_saved",
        "cost_usd",
        "cost_saved_usd",
        "error",
    }
    per_minute = metrics["per_minute"]
    assert len(per_minute) == 60
    assert all(type(m["minute"]) is int for m in per_minute)
    assert [m["minute"] for m in per_minute] == sorted(m["minute"] for m in per_minute)
    assert sum(m["requests"] for m in per_minute) == 2
    check_aggregate(per_minute[0])


async def test_prometheus_series(served: Served, http: aiohttp.ClientSession) -> None:
    await traffic(served.url)
    rows = await wait_rows(served.db, "SELECT * FROM requests ORDER BY created_at", count=2)
    async with http.get(served.url + "/metrics") as response:
        assert response.status == 200 and response.content_type == "text/plain"
        text = await response.text()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }

    def value(name: str, **labels: str) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    claude, gpt = rows
    assert (
        value(
            "vidurai_requests_total",
            provider="anthropic",
            endpoint="messages",
            model=CLAUDE,
            status_class="2xx",
        )
        == 1
    )
    assert (
        value(
            "vidurai_requests_total",
            provider="openai",
            endpoint="chat_completions",
            model=GPT,
            status_class="2xx",
        )
        == 1
    )
    for kind, column in (
        ("input", "input_tokens"),
        ("output", "output_tokens"),
        ("cache_read", "cache_read_tokens"),
        ("cache_write", "cache_write_tokens"),
    ):
        assert value("vidurai_tokens_total", provider="anthropic", model=CLAUDE, kind=kind) == claude[column]
    assert value("vidurai_tokens_total", provider="openai", model=GPT, kind="input") == gpt["input_tokens"]
    assert value("vidurai_cost_usd_total", provider="anthropic", model=CLAUDE) == pytest.approx(
        claude["cost_usd"]
    )
    assert value("vidurai_cost_usd_total", provider="openai", model=GPT) == pytest.approx(gpt["cost_usd"])
    for histogram in (
        "vidurai_request_duration_seconds",
        "vidurai_ttfb_seconds",
        "vidurai_proxy_overhead_seconds",
    ):
        assert value(f"{histogram}_count", provider="anthropic", endpoint="messages") == 1, histogram


async def test_health_has_totals_and_active_sessions(served: Served, http: aiohttp.ClientSession) -> None:
    await traffic(served.url)
    await wait_rows(served.db, "SELECT * FROM requests", count=2)
    async with http.get(served.url + "/health") as response:
        health = await response.json()
    assert health["status"] == "ok" and health["active_sessions"] == 2
    async with http.get(served.url + "/metrics.json") as response:
        totals = (await response.json())["totals"]
    assert health["totals"] == totals
    assert health["totals"]["requests"] == 2


async def test_every_proxied_response_has_stats_header(served: Served, http: aiohttp.ClientSession) -> None:
    anthropic_headers = {"x-api-key": "sk-ant-stats", "anthropic-version": "2023-06-01"}
    calls: list[tuple[str, str, dict[str, Any] | None, dict[str, str]]] = [
        ("POST", "/v1/messages", {"model": CLAUDE, "max_tokens": 8, "messages": MESSAGES}, anthropic_headers),
        (
            "POST",
            "/v1/messages",
            {"model": CLAUDE, "max_tokens": 8, "messages": MESSAGES, "stream": True},
            anthropic_headers,
        ),
        ("POST", "/v1/messages/count_tokens", {"model": CLAUDE, "messages": MESSAGES}, anthropic_headers),
        (
            "POST",
            "/v1/messages",
            {"model": "fake-529", "max_tokens": 8, "messages": MESSAGES},
            anthropic_headers,
        ),
        ("POST", "/v1/chat/completions", {"model": GPT, "messages": MESSAGES}, {}),
        ("POST", "/v1/chat/completions", {"model": GPT, "messages": MESSAGES, "stream": True}, {}),
        ("POST", "/v1/embeddings", {"model": "text-embedding-3-small", "input": "hi"}, {}),
        ("GET", "/v1/models", None, {}),
    ]
    for method, path, body, headers in calls:
        headers = headers or {"Authorization": "Bearer sk-stats"}
        async with http.request(method, served.url + path, json=body, headers=headers) as response:
            await response.read()
            saved, overhead = stats(response.headers)
            assert saved >= 0 and 0 <= overhead < 1000, (path, response.headers["x-vidurai-stats"])
