"""Limits through the proxy with the real SDKs: rate limits retried after retry-after, budgets not
retried, exact admission under concurrency (one instance, and three sharing Redis), streamed cost
counted, Redis going away under each on_store_failure, and virtual keys swapped for the real key."""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import openai
import pytest
import structlog
from aiohttp import web

from proxy.app import create_app, start_server
from proxy.config import load_config
from proxy.keys import CLUSTER, CONFIG, LIMITS, STORE
from proxy.limits.limiter import Limits
from proxy.sessions import tenant_of
from proxy.storage import is_postgresql
from tests.cluster_support import SHARED_REDIS_URL, own_redis, shared_redis_prefix
from tests.conftest import ANTHROPIC_KEY, anthropic_client, openai_client
from tests.databases import query
from tests.fake_upstream import FakeUpstream
from tests.process import proxy_env, run_to_exit

# Prices high enough that a one-line request costs about a cent (USD per million tokens).
PRICING = "[pricing]\nclaude-fake = 100, 1000, 100, 10\ngpt-fake = 100, 1000, 100, 10\n"
MESSAGE = [{"role": "user", "content": "hello"}]
REAL_KEY = "sk-ant-real-provider-key-4f1c9e2a7b"  # what only the fake upstream may ever see

Start = Callable[..., Awaitable[tuple[str, web.Application]]]


@pytest.fixture
async def start(fake_upstream: FakeUpstream, tmp_path: Path) -> AsyncIterator[Start]:
    """Start a proxy in process: `await start(clock=..., limits_requests_per_minute=5)`.

    The default clock stands still at the test's start: no minute may end between two requests
    that a test expects in one window.
    """
    runners: list[web.AppRunner] = []
    ini = tmp_path / "vidurai.ini"
    ini.write_text(PRICING, encoding="utf-8")
    frozen = time.time()

    async def run(
        clock: Callable[[], float] = lambda: frozen, **overrides: Any
    ) -> tuple[str, web.Application]:
        settings = {
            "upstream_anthropic_base_url": fake_upstream.anthropic_base_url,
            "upstream_openai_base_url": fake_upstream.openai_base_url,
            "storage_database": str(tmp_path / f"vidurai-{len(runners)}.db"),
            **{key: str(value) for key, value in overrides.items()},
        }
        app = create_app(load_config(ini, env={}, **settings), clock=clock)
        runner, port = await start_server(app, "127.0.0.1", 0)
        runners.append(runner)
        return f"http://127.0.0.1:{port}", app

    yield run
    for runner in reversed(runners):
        await runner.cleanup()


async def _rows(app: web.Application, sql: str) -> list[tuple[Any, ...]]:
    await app[LIMITS].limiter.drain()
    await app[STORE].flush()
    found = await asyncio.to_thread(query, app[CONFIG].storage.database, sql)
    return [tuple(row.values()) for row in found]


@pytest.mark.parametrize("sdk", ["anthropic", "openai"])
async def test_sdks_retry_a_rate_limit_after_retry_after(
    start: Start, fake_upstream: FakeUpstream, sdk: str
) -> None:
    shift = [0.0]
    url, app = await start(clock=lambda: time.time() + shift[0], limits_requests_per_minute=1)
    # The proxy's clock now sits 2 s before a minute ends: the SDK's retry lands in the next minute.
    shift[0] = math.floor(time.time() / 60) * 60 + 58 - time.time()
    if sdk == "openai":
        async with openai_client(url + "/v1", max_retries=2) as client:
            first = await client.chat.completions.with_raw_response.create(
                model="gpt-fake-1", messages=MESSAGE
            )
            assert first.headers["x-ratelimit-limit-requests"] == "1"
            assert first.headers["x-ratelimit-remaining-requests"] == "0"
            began = time.monotonic()
            second = await client.chat.completions.create(model="gpt-fake-1", messages=MESSAGE)
            assert second.choices[0].message.content
    else:
        async with anthropic_client(url, max_retries=2) as claude:
            raw = await claude.messages.with_raw_response.create(
                model="claude-fake-1", max_tokens=16, messages=MESSAGE
            )
            assert raw.headers["anthropic-ratelimit-requests-remaining"] == "0"
            began = time.monotonic()
            answer = await claude.messages.create(model="claude-fake-1", max_tokens=16, messages=MESSAGE)
            assert answer.content
    waited = time.monotonic() - began
    assert waited < 5  # retried after retry-after-ms (the rest of the minute), then admitted
    assert len(fake_upstream.requests) == 2  # the refused attempt never reached upstream
    rows = await _rows(app, "SELECT status, error FROM requests ORDER BY created_at")
    assert sorted(rows, key=str) == sorted(
        [(200, None), (429, "limit: requests_per_minute"), (200, None)], key=str
    )
    audit = await _rows(app, "SELECT event, detail FROM audit WHERE event = 'limit_rejected'")
    assert len(audit) == 1 and '"requests_per_minute"' in audit[0][1]


async def test_rate_limit_error_names_the_limit_and_when_it_frees(start: Start) -> None:
    url, _ = await start(limits_requests_per_minute=1)
    async with anthropic_client(url) as client:
        await client.messages.create(model="claude-fake-1", max_tokens=16, messages=MESSAGE)
        with pytest.raises(anthropic.RateLimitError) as caught:
            await client.messages.create(model="claude-fake-1", max_tokens=16, messages=MESSAGE)
    response = caught.value.response
    assert response.status_code == 429
    assert 1 <= int(response.headers["retry-after"]) <= 60
    assert response.headers["anthropic-ratelimit-requests-limit"] == "1"
    assert response.headers["anthropic-ratelimit-requests-remaining"] == "0"
    body = response.json()
    assert body["error"]["type"] == "rate_limit_error"
    assert "requests_per_minute = 1" in body["error"]["message"] and "frees in" in body["error"]["message"]


@pytest.mark.parametrize("sdk", ["anthropic", "openai"])
async def test_a_spent_budget_is_not_retried(start: Start, fake_upstream: FakeUpstream, sdk: str) -> None:
    url, app = await start(limits_budget_usd_per_day="0.005")
    error: anthropic.APIStatusError | openai.APIStatusError
    if sdk == "anthropic":
        async with anthropic_client(url, max_retries=3) as client:
            await client.messages.create(model="claude-fake-1", max_tokens=16, messages=MESSAGE)
            with pytest.raises(anthropic.RateLimitError) as refused:
                await client.messages.create(model="claude-fake-1", max_tokens=16, messages=MESSAGE)
            error = refused.value
        assert error.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    else:
        async with openai_client(url + "/v1", max_retries=3) as oclient:
            await oclient.chat.completions.create(model="gpt-fake-1", messages=MESSAGE, max_tokens=16)
            with pytest.raises(openai.RateLimitError) as orefused:
                await oclient.chat.completions.create(model="gpt-fake-1", messages=MESSAGE, max_tokens=16)
            error = orefused.value
        assert error.code == "insufficient_quota" and error.type == "insufficient_quota"
    assert error.response.headers["x-should-retry"] == "false"
    assert "budget_usd_per_day = $0.0050" in error.message and "resets at" in error.message
    assert len(fake_upstream.requests) == 1
    rows = await _rows(app, "SELECT status, error FROM requests WHERE status = 429")
    assert rows == [(429, "limit: budget_usd_per_day")]  # one attempt: the SDK did not retry


async def test_a_budget_spent_mid_day_frees_at_midnight_utc(start: Start) -> None:
    midnight = math.ceil(time.time() / 86400) * 86400
    now = [midnight - 3 * 3600.0]  # 21:00 UTC, on the proxy's injected clock
    url, _ = await start(lambda: now[0], limits_budget_usd_per_day="0.005")
    async with anthropic_client(url) as client:
        await client.messages.create(model="claude-fake-1", max_tokens=16, messages=MESSAGE)
        with pytest.raises(anthropic.RateLimitError) as refused:
            await client.messages.create(model="claude-fake-1", max_tokens=16, messages=MESSAGE)
        assert time.strftime("resets at %Y-%m-%d 00:00 UTC", time.gmtime(midnight)) in refused.value.message
        now[0] = midnight + 1.0
        answer = await client.messages.create(model="claude-fake-1", max_tokens=16, messages=MESSAGE)
    assert answer.content


async def _post_many(url: str, count: int, key: str = ANTHROPIC_KEY) -> list[int]:
    async with aiohttp.ClientSession() as session:

        async def one(index: int) -> int:
            target = url[index % len(url)] if isinstance(url, list) else url
            async with session.post(
                target + "/v1/messages",
                json={"model": "claude-fake-1", "max_tokens": 16, "messages": MESSAGE},
                headers={"x-api-key": key, "anthropic-version": "2023-06-01"},
            ) as response:
                await response.read()
                return response.status

        return list(await asyncio.gather(*(one(index) for index in range(count))))


async def test_exactly_n_of_concurrent_requests_are_forwarded(
    start: Start, fake_upstream: FakeUpstream
) -> None:
    url, _ = await start(limits_requests_per_minute=50)
    statuses = await _post_many(url, 100)
    assert statuses.count(200) == 50 and statuses.count(429) == 50
    assert len(fake_upstream.requests) == 50


async def test_concurrent_requests_cannot_overspend_a_budget(start: Start) -> None:
    # Each request reserves about $0.0165 (its input estimate and max_tokens 16 at $1,000/M out)
    # and costs about $0.012: 20 at once against $0.05 admit only what the reservations fit.
    url, app = await start(limits_budget_usd_per_day="0.05")
    statuses = await _post_many(url, 20)
    [(spent, admitted)] = await _rows(app, "SELECT SUM(cost_usd), COUNT(*) FROM requests WHERE status = 200")
    assert statuses.count(200) == admitted and 2 <= admitted <= 4
    assert statuses.count(429) == 20 - admitted
    assert spent <= 0.05


async def test_three_instances_on_redis_enforce_one_limit(start: Start, fake_upstream: FakeUpstream) -> None:
    async with shared_redis_prefix() as prefix:
        # Three proxies, their clients and the upstream share this one test process's event loop:
        # a burst of 90 can hold a Redis reply past the default 0.25 s, which would fail open.
        settings = {"cluster_redis_url": SHARED_REDIS_URL, "cluster_key_prefix": prefix, "cluster_timeout": 5}
        proxies = [await start(limits_requests_per_minute=30, **settings) for _ in range(3)]
        for _, app in proxies:
            await _reached_redis(app)
        urls = [url for url, _ in proxies]
        statuses = await _post_many(urls, 90)  # type: ignore[arg-type]
    assert statuses.count(200) == 30 and statuses.count(429) == 60
    assert len(fake_upstream.requests) == 30


async def test_a_streamed_request_s_cost_and_tokens_are_counted(start: Start) -> None:
    url, app = await start(limits_budget_usd_per_day=100, limits_tokens_per_minute=100000)
    async with anthropic_client(url, default_headers={"x-fake-cache-read": "40"}) as client:
        async with client.messages.stream(model="claude-fake-1", max_tokens=16, messages=MESSAGE) as stream:
            final = await stream.get_final_message()
    assert final.usage.cache_read_input_tokens == 40
    total = "input_tokens + output_tokens + cache_read_tokens + cache_write_tokens"
    [(cost, tokens)] = await _rows(app, f"SELECT cost_usd, {total} FROM requests")
    tenant = tenant_of({"x-api-key": ANTHROPIC_KEY})
    used = await app[LIMITS].limiter.usage(tenant, Limits(tokens_per_minute=1, budget_usd_per_day=1.0))
    assert used["budget_usd_per_day"]["used"] == pytest.approx(cost, abs=1e-9)  # the reservation settled
    assert used["tokens_per_minute"]["used"] == tokens


async def test_spend_survives_a_restart(start: Start, database: str) -> None:
    url, app = await start(limits_budget_usd_per_day="0.005", storage_database=database)
    async with anthropic_client(url) as client:
        await client.messages.create(model="claude-fake-1", max_tokens=16, messages=MESSAGE)
    await _rows(app, "SELECT 1")
    url, _ = await start(limits_budget_usd_per_day="0.005", storage_database=database)
    async with anthropic_client(url) as client:
        with pytest.raises(anthropic.RateLimitError):
            await client.messages.create(model="claude-fake-1", max_tokens=16, messages=MESSAGE)


@pytest.mark.parametrize("mode", ["open", "closed"])
async def test_redis_down(start: Start, tmp_path: Path, fake_upstream: FakeUpstream, mode: str) -> None:
    async with own_redis(tmp_path) as redis:
        url, app = await start(
            limits_requests_per_minute=100,
            limits_on_store_failure=mode,
            cluster_redis_url=redis.url,
        )
        await _reached_redis(app)
        statuses = await _post_many(url, 2)
        assert statuses == [200, 200] and app[LIMITS].health()["store"] == "redis"
        await redis.kill()
        statuses = await _post_many(url, 3)
        async with aiohttp.ClientSession() as session:
            async with session.get(url + "/health") as response:
                health = await response.json()
            async with session.get(url + "/metrics") as response:
                metrics = await response.text()
    assert health["status"] == "degraded" and health["limits"]["reachable"] is False
    assert "vidurai_limit_store_failures_total 3.0" in metrics
    if mode == "open":
        assert statuses == [200, 200, 200] and len(fake_upstream.requests) == 5
    else:
        assert statuses == [503, 503, 503] and len(fake_upstream.requests) == 2


async def _reached_redis(app: web.Application) -> None:
    """Until the proxy's first ping answered (on a busy machine it can outlast [cluster] timeout)."""
    deadline = time.monotonic() + 10
    while not app[CLUSTER].health().connected:
        assert time.monotonic() < deadline, "the proxy never reached its Redis"
        await asyncio.sleep(0.05)


async def _keys(cwd: Path, database: str, *args: str, status: int = 0) -> str:
    """`vidurai-proxy keys ARGS` on the proxy's database, as an operator runs it."""
    result = await run_to_exit(
        [sys.executable, "-m", "proxy", "keys", *args],
        cwd,
        proxy_env(VIDURAI_STORAGE_DATABASE=database),
    )
    assert result.returncode == status, result.stderr
    return result.stdout if status == 0 else result.stderr


async def _stored_bytes(database: str, folder: Path) -> bytes:
    """Everything the database holds: a SQLite file and its WAL, or each PostgreSQL row as text."""
    if not is_postgresql(database):
        return await asyncio.to_thread(
            lambda: b"".join(path.read_bytes() for path in folder.glob("vidurai.db*"))
        )
    tables = ("requests", "sessions", "audit", "virtual_keys")
    rows = [row for table in tables for row in query(database, f"SELECT t::text AS row FROM {table} t")]
    return "\n".join(row["row"] for row in rows).encode()


async def test_virtual_key_is_swapped_for_the_real_key(
    start: Start, fake_upstream: FakeUpstream, tmp_path: Path, database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIDURAI_TEST_REAL_KEY", REAL_KEY)
    created = await _keys(
        tmp_path, database, "create", "--name", "alice", "--provider", "anthropic",
        "--upstream-key-env", "VIDURAI_TEST_REAL_KEY", "--rpm", "5", "--budget-usd-day", "5",
    )  # fmt: skip
    virtual = created.splitlines()[-1]
    assert virtual.startswith("sk-vidurai-") and " " not in virtual
    url, app = await start(storage_database=database)
    with structlog.testing.capture_logs() as logs:
        async with anthropic_client(url, api_key=virtual) as client:
            answer = await client.messages.with_raw_response.create(
                model="claude-fake-1", max_tokens=16, messages=MESSAGE
            )
    assert answer.headers["anthropic-ratelimit-requests-limit"] == "5"
    seen = fake_upstream.last().headers
    assert seen["x-api-key"] == REAL_KEY and "authorization" not in seen
    await _rows(app, "SELECT 1")
    listing = await _keys(tmp_path, database, "list")
    assert "alice\tanthropic\tactive" in listing and "requests_per_minute=5" in listing
    stored = await _stored_bytes(database, tmp_path)
    assert b"alice" in stored  # the dump is of the database the key lives in
    assert REAL_KEY.encode() not in stored and virtual.encode() not in stored
    assert REAL_KEY not in repr(logs) and virtual not in repr(logs)
    assert "alice" in (await _rows(app, "SELECT name FROM virtual_keys"))[0]
    taken = await _keys(tmp_path, database, "create", "--name", "alice", "--provider", "openai",
                        "--upstream-key-env", "VIDURAI_TEST_REAL_KEY", status=1)  # fmt: skip
    assert "a key named 'alice' exists already" in taken

    await _keys(tmp_path, database, "update", "alice", "--rpm", "7", "--budget-usd-day", "none")
    listing = await _keys(tmp_path, database, "list")
    assert "requests_per_minute=7" in listing and "budget_usd_per_day" not in listing
    await app[LIMITS].keys.reload()  # what the proxy's refresh does every REFRESH_S
    async with anthropic_client(url, api_key=virtual) as client:
        answer = await client.messages.with_raw_response.create(
            model="claude-fake-1", max_tokens=16, messages=MESSAGE
        )
    assert answer.headers["anthropic-ratelimit-requests-limit"] == "7"

    await _keys(tmp_path, database, "revoke", "alice")
    await app[LIMITS].keys.reload()  # what the proxy's refresh does every REFRESH_S
    async with anthropic_client(url, api_key=virtual) as client:
        with pytest.raises(anthropic.AuthenticationError) as refused:
            await client.messages.create(model="claude-fake-1", max_tokens=16, messages=MESSAGE)
    assert refused.value.status_code == 401
    assert refused.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    assert "'alice' was revoked" in refused.value.message
    assert len(fake_upstream.requests) == 2
    assert "alice\tanthropic\trevoked" in await _keys(tmp_path, database, "list")


async def test_openai_virtual_key_and_unknown_keys(
    start: Start, fake_upstream: FakeUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = str(tmp_path / "keys.db")
    monkeypatch.setenv("VIDURAI_TEST_REAL_KEY", "sk-real-openai-key-99")
    created = await _keys(
        tmp_path, database, "create", "--name", "bob", "--provider", "openai",
        "--upstream-key-env", "VIDURAI_TEST_REAL_KEY",
    )  # fmt: skip
    virtual = created.splitlines()[-1]
    url, _ = await start(storage_database=database)
    async with openai_client(url + "/v1", api_key=virtual) as client:
        await client.chat.completions.create(model="gpt-fake-1", messages=MESSAGE)
        assert fake_upstream.last().headers["authorization"] == "Bearer sk-real-openai-key-99"
        with pytest.raises(openai.AuthenticationError) as unknown:
            await client.with_options(api_key="sk-vidurai-never-issued").chat.completions.create(
                model="gpt-fake-1", messages=MESSAGE
            )
    assert "never issued" in unknown.value.message
    async with anthropic_client(url, api_key=virtual) as aclient:  # an OpenAI key on Claude's API
        with pytest.raises(anthropic.AuthenticationError) as wrong:
            await aclient.messages.create(model="claude-fake-1", max_tokens=16, messages=MESSAGE)
    assert "is for the openai API" in wrong.value.message
    assert len(fake_upstream.requests) == 1


async def test_limits_show_in_metrics(start: Start) -> None:
    url, app = await start(limits_requests_per_minute=1, limits_budget_usd_per_month=10)
    async with anthropic_client(url) as client:
        await client.messages.create(model="claude-fake-1", max_tokens=16, messages=MESSAGE)
        with pytest.raises(anthropic.RateLimitError):
            await client.messages.create(model="claude-fake-1", max_tokens=16, messages=MESSAGE)
    await _rows(app, "SELECT 1")  # rejections are read from the requests rows, once written
    async with aiohttp.ClientSession() as session:
        async with session.get(url + "/metrics.json") as response:
            report = (await response.json())["limits"]
        async with session.get(url + "/metrics") as response:
            metrics = await response.text()
    [subject] = report["subjects"]
    assert subject["limits"]["requests_per_minute"] == {"limit": 1, "used": 1}
    assert 0 < subject["limits"]["budget_usd_per_month"]["used"] < 10
    assert subject["rejections_this_month"] == {"requests_per_minute": 1}
    assert 'vidurai_limit_rejections_total{limit="requests_per_minute"} 1.0' in metrics
