"""Transport behaviour of the proxy: streaming, timeouts, disconnects, errors, headers, limits (issue 2)."""

from __future__ import annotations

import asyncio
import io
import json
import time
from typing import Any

import aiohttp
import anthropic
import httpx2
import openai
import pytest
import yarl

from tests.conftest import ANTHROPIC_KEY, OPENAI_KEY, ProxyFactory, anthropic_client, openai_client
from tests.fake_upstream import DEFAULT_TEXT, EMOJI, FakeUpstream

MESSAGES: list[Any] = [{"role": "user", "content": "Hello there"}]
ANTHROPIC_HEADERS = {
    "x-api-key": ANTHROPIC_KEY,
    "anthropic-version": "2023-06-01",
    "content-type": "application/json",
}
OPENAI_HEADERS = {"authorization": f"Bearer {OPENAI_KEY}", "content-type": "application/json"}
ANTHROPIC_BODY = {"model": "claude-fake-1", "max_tokens": 64, "messages": MESSAGES}
OPENAI_BODY = {"model": "gpt-fake-1", "messages": MESSAGES}
# What each stack raises when a response body is cut short (the SDKs wrap it differently).
TRUNCATED = (httpx2.HTTPError, anthropic.APIConnectionError, openai.APIConnectionError)


def _is_anthropic_error(body: Any) -> bool:
    return (
        isinstance(body, dict)
        and body.get("type") == "error"
        and isinstance(body.get("error"), dict)
        and isinstance(body["error"].get("type"), str)
        and bool(body["error"].get("message"))
    )


def _is_openai_error(body: Any) -> bool:
    error = body.get("error") if isinstance(body, dict) else None
    return (
        isinstance(error, dict)
        and set(error) >= {"message", "type", "param", "code"}
        and bool(error["message"])
        and isinstance(error["type"], str)
    )


async def _assert_healthy(http: aiohttp.ClientSession, proxy_url: str) -> None:
    async with http.get(proxy_url + "/health") as response:
        assert response.status == 200
    async with anthropic_client(proxy_url) as client:
        message = await client.messages.create(model="claude-fake-1", max_tokens=64, messages=MESSAGES)
    assert message.content[0].text == DEFAULT_TEXT  # type: ignore[union-attr]


# --- health ------------------------------------------------------------------------------------


async def test_health(http: aiohttp.ClientSession, proxy_url: str, fake_upstream: FakeUpstream) -> None:
    async with http.get(proxy_url + "/health") as response:
        assert response.status == 200
        assert response.content_type == "application/json"
        body = await response.json()
    assert body["status"] == "ok"
    assert isinstance(body["version"], str) and body["version"]
    assert isinstance(body["uptime_s"], (int, float)) and body["uptime_s"] >= 0
    assert fake_upstream.requests == []  # answered by the proxy itself


# --- streaming ---------------------------------------------------------------------------------


async def test_anthropic_events_reach_client_before_stream_ends(
    anthropic_sdk: anthropic.AsyncAnthropic, fake_upstream: FakeUpstream
) -> None:
    # The fake holds the rest of the stream until the test has seen the first delta.
    stream = await anthropic_sdk.messages.create(
        model="fake-gated", max_tokens=64, messages=MESSAGES, stream=True
    )
    first: list[str] = []
    try:
        async with asyncio.timeout(3):
            while not first or first[-1] != "content_block_delta":
                first.append((await stream.__anext__()).type)
    except TimeoutError:
        pytest.fail("the first delta did not reach the client while upstream held the stream open")
    fake_upstream.gate.set()
    rest = [event.type async for event in stream]
    assert first == ["message_start", "content_block_start", "content_block_delta"]
    assert rest[-1] == "message_stop"


async def test_openai_chunks_reach_client_before_stream_ends(
    openai_sdk: openai.AsyncOpenAI, fake_upstream: FakeUpstream
) -> None:
    stream = await openai_sdk.chat.completions.create(model="fake-gated", messages=MESSAGES, stream=True)
    texts: list[str] = []
    try:
        async with asyncio.timeout(3):
            while not "".join(texts):
                texts.append((await stream.__anext__()).choices[0].delta.content or "")
    except TimeoutError:
        pytest.fail("the first chunk did not reach the client while upstream held the stream open")
    fake_upstream.gate.set()
    texts += [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
    assert "".join(texts) == DEFAULT_TEXT


async def test_slow_stream_arrives_progressively(anthropic_sdk: anthropic.AsyncAnthropic) -> None:
    started = time.monotonic()
    stream = await anthropic_sdk.messages.create(
        model="claude-fake-1",
        max_tokens=64,
        messages=MESSAGES,
        stream=True,
        extra_headers={"x-fake-scenario": "slow", "x-fake-delay": "0.1", "x-fake-chunks": "10"},
    )
    arrivals = [time.monotonic() - started async for event in stream if event.type == "content_block_delta"]
    assert len(arrivals) == 10
    # Upstream spends ~1.4 s on the whole stream; the first delta must not wait for the end.
    assert arrivals[0] < 0.6, arrivals
    assert arrivals[-1] - arrivals[0] > 0.6, arrivals


async def test_first_byte_waits_only_for_upstream_first_byte(anthropic_sdk: anthropic.AsyncAnthropic) -> None:
    started = time.monotonic()
    stream = await anthropic_sdk.messages.create(
        model="claude-fake-1",
        max_tokens=64,
        messages=MESSAGES,
        stream=True,
        extra_headers={"x-fake-scenario": "first-byte-delay", "x-fake-delay": "1.0"},
    )
    headers_after = time.monotonic() - started
    types = [event.type async for event in stream]
    assert types[-1] == "message_stop"
    assert 1.0 <= headers_after < 2.0


async def test_no_total_timeout_on_streams(make_proxy: ProxyFactory) -> None:
    url = await make_proxy(upstream_read_timeout="0.5")
    async with anthropic_client(url) as client:
        started = time.monotonic()
        stream = await client.messages.create(
            model="claude-fake-1",
            max_tokens=64,
            messages=MESSAGES,
            stream=True,
            extra_headers={"x-fake-scenario": "slow", "x-fake-delay": "0.2", "x-fake-chunks": "3"},
        )
        text = "".join([e.delta.text async for e in stream if e.type == "content_block_delta"])  # type: ignore[union-attr]
    assert text == "tok0 tok1 tok2 "
    # Eight events 0.2 s apart: well past read_timeout in total, never silent that long.
    assert time.monotonic() - started > 1.0


@pytest.mark.parametrize("scenario", ["", "split-utf8"])
async def test_anthropic_stream_bytes_verbatim(
    scenario: str, http: aiohttp.ClientSession, proxy_url: str, fake_upstream: FakeUpstream
) -> None:
    body = {**ANTHROPIC_BODY, "stream": True}
    async with http.post(
        proxy_url + "/v1/messages", json=body, headers={**ANTHROPIC_HEADERS, "x-fake-scenario": scenario}
    ) as response:
        received = b"".join([chunk async for chunk in response.content.iter_any()])
        assert response.status == 200
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    sent = fake_upstream.last()
    assert received == bytes(sent.response_body)
    assert b"event: ping" in received and b"event: message_stop" in received
    assert EMOJI.encode() in received


async def test_openai_stream_bytes_verbatim_with_include_usage(
    http: aiohttp.ClientSession, proxy_url: str, fake_upstream: FakeUpstream
) -> None:
    body = {**OPENAI_BODY, "stream": True, "stream_options": {"include_usage": True}}
    async with http.post(proxy_url + "/v1/chat/completions", json=body, headers=OPENAI_HEADERS) as response:
        received = await response.read()
    assert received == bytes(fake_upstream.last().response_body)
    assert received.endswith(b"data: [DONE]\n\n")


async def test_openai_stream_without_usage_request_rewritten_consistently(
    http: aiohttp.ClientSession, proxy_url: str, fake_upstream: FakeUpstream
) -> None:
    body = {**OPENAI_BODY, "stream": True}
    async with http.post(proxy_url + "/v1/chat/completions", json=body, headers=OPENAI_HEADERS) as response:
        received = await response.read()
    sent = fake_upstream.last()
    # Whatever the proxy changed in the body, content-length matches what upstream received.
    assert sent.headers["content-length"] == str(len(sent.body))
    assert sent.json["messages"] == MESSAGES
    events = [line for line in received.decode().split("\n\n") if line]
    assert events[-1] == "data: [DONE]"
    for event in events[:-1]:
        chunk = json.loads(event.removeprefix("data: "))
        assert chunk["choices"], "usage-only chunk the client did not ask for"
        assert "usage" not in chunk, "usage field the client did not ask for"


async def test_many_concurrent_streams(
    anthropic_sdk: anthropic.AsyncAnthropic, openai_sdk: openai.AsyncOpenAI
) -> None:
    async def anthropic_text() -> str:
        stream = await anthropic_sdk.messages.create(
            model="claude-fake-1",
            max_tokens=64,
            messages=MESSAGES,
            stream=True,
            extra_headers={"x-fake-scenario": "slow"},
        )
        return "".join([e.delta.text async for e in stream if e.type == "content_block_delta"])  # type: ignore[union-attr]

    async def openai_text() -> str:
        stream = await openai_sdk.chat.completions.create(
            model="gpt-fake-1", messages=MESSAGES, stream=True, extra_headers={"x-fake-scenario": "slow"}
        )
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    texts = await asyncio.gather(*[anthropic_text() for _ in range(10)], *[openai_text() for _ in range(10)])
    assert texts == [DEFAULT_TEXT] * 20


# --- disconnects and upstream failures ----------------------------------------------------------


async def test_client_disconnect_mid_stream_closes_upstream(
    anthropic_sdk: anthropic.AsyncAnthropic,
    fake_upstream: FakeUpstream,
    proxy_url: str,
    http: aiohttp.ClientSession,
) -> None:
    stream = await anthropic_sdk.messages.create(
        model="claude-fake-1",
        max_tokens=64,
        messages=MESSAGES,
        stream=True,
        extra_headers={"x-fake-scenario": "slow", "x-fake-delay": "0.02", "x-fake-chunks": "500"},
    )
    for _ in range(4):
        await stream.__anext__()
    await stream.close()
    gone = await fake_upstream.wait_disconnected(timeout=5)
    assert gone.path == "/v1/messages"
    assert b"message_stop" not in gone.response_body
    await _assert_healthy(http, proxy_url)


async def test_raw_client_disconnect_mid_openai_stream(
    http: aiohttp.ClientSession, proxy_url: str, fake_upstream: FakeUpstream
) -> None:
    body = {**OPENAI_BODY, "stream": True}
    headers = {**OPENAI_HEADERS, "x-fake-scenario": "slow", "x-fake-delay": "0.02", "x-fake-chunks": "500"}
    async with http.post(proxy_url + "/v1/chat/completions", json=body, headers=headers) as response:
        assert (await response.content.readline()).startswith(b"data: ")
        response.close()
    gone = await fake_upstream.wait_disconnected(timeout=5)
    assert gone.path == "/v1/chat/completions"
    await _assert_healthy(http, proxy_url)


async def test_upstream_cut_mid_stream_ends_client_stream(
    anthropic_sdk: anthropic.AsyncAnthropic,
    direct_anthropic: anthropic.AsyncAnthropic,
    http: aiohttp.ClientSession,
    proxy_url: str,
) -> None:
    async def run(client: anthropic.AsyncAnthropic) -> tuple[list[str], BaseException]:
        seen: list[str] = []
        stream = await client.messages.create(model="fake-cut", max_tokens=64, messages=MESSAGES, stream=True)
        async with asyncio.timeout(5):
            with pytest.raises(TRUNCATED) as caught:
                async for event in stream:
                    seen.append(event.type)
        return seen, caught.value

    proxied_seen, proxied = await run(anthropic_sdk)
    direct_seen, direct = await run(direct_anthropic)
    assert proxied_seen == direct_seen and "message_stop" not in proxied_seen
    # The client learns the stream broke, as it would without the proxy (not a silent clean end).
    assert type(proxied) is type(direct)
    await _assert_healthy(http, proxy_url)


async def test_upstream_cut_mid_openai_stream(
    openai_sdk: openai.AsyncOpenAI,
    direct_openai: openai.AsyncOpenAI,
    http: aiohttp.ClientSession,
    proxy_url: str,
) -> None:
    async def run(client: openai.AsyncOpenAI) -> BaseException:
        stream = await client.chat.completions.create(model="fake-cut", messages=MESSAGES, stream=True)
        async with asyncio.timeout(5):
            with pytest.raises(TRUNCATED) as caught:
                async for _chunk in stream:
                    pass
        return caught.value

    assert type(await run(openai_sdk)) is type(await run(direct_openai))
    await _assert_healthy(http, proxy_url)


async def test_upstream_cut_mid_json_body(
    anthropic_sdk: anthropic.AsyncAnthropic,
    direct_anthropic: anthropic.AsyncAnthropic,
    http: aiohttp.ClientSession,
    proxy_url: str,
) -> None:
    async def run(client: anthropic.AsyncAnthropic) -> BaseException:
        async with asyncio.timeout(5):
            with pytest.raises(TRUNCATED) as caught:
                await client.messages.create(model="fake-cut", max_tokens=64, messages=MESSAGES)
        return caught.value

    assert type(await run(anthropic_sdk)) is type(await run(direct_anthropic))
    await _assert_healthy(http, proxy_url)


async def test_idle_read_timeout_gives_504_in_provider_shape(
    make_proxy: ProxyFactory, fake_upstream: FakeUpstream
) -> None:
    url = await make_proxy(upstream_read_timeout="0.5")
    started = time.monotonic()
    async with anthropic_client(url) as client:
        with pytest.raises(anthropic.GatewayTimeoutError) as anthropic_error:
            await client.messages.create(model="fake-hang", max_tokens=64, messages=MESSAGES)
    async with openai_client(url + "/v1") as client:
        with pytest.raises(openai.InternalServerError) as openai_error:
            await client.chat.completions.create(model="fake-hang", messages=MESSAGES, stream=True)
    assert time.monotonic() - started < 4
    assert anthropic_error.value.status_code == 504 and _is_anthropic_error(anthropic_error.value.body)
    assert openai_error.value.status_code == 504
    assert _is_openai_error(openai_error.value.response.json())
    # The proxy gave up on upstream rather than leaving the call open.
    assert (await fake_upstream.wait_disconnected(timeout=3)).scenario == "hang"


async def test_idle_read_timeout_mid_stream_ends_client_stream(
    make_proxy: ProxyFactory, fake_upstream: FakeUpstream
) -> None:
    url = await make_proxy(upstream_read_timeout="0.5")
    async with anthropic_client(url) as client:
        stream = await client.messages.create(
            model="fake-stall", max_tokens=64, messages=MESSAGES, stream=True
        )
        seen: list[str] = []
        async with asyncio.timeout(4):
            with pytest.raises(TRUNCATED):
                async for event in stream:
                    seen.append(event.type)
    assert "content_block_delta" in seen and "message_stop" not in seen
    await fake_upstream.wait_disconnected(timeout=3)


async def test_upstream_down_raw_shapes(
    make_proxy: ProxyFactory, closed_port_url: str, http: aiohttp.ClientSession
) -> None:
    url = await make_proxy(
        upstream_anthropic_base_url=closed_port_url, upstream_openai_base_url=closed_port_url + "/v1"
    )
    async with http.post(url + "/v1/messages", json=ANTHROPIC_BODY, headers=ANTHROPIC_HEADERS) as response:
        assert response.status == 502 and _is_anthropic_error(await response.json())
    async with http.get(url + "/v1/models", headers=ANTHROPIC_HEADERS) as response:
        assert response.status == 502 and _is_anthropic_error(await response.json())
    async with http.post(
        url + "/v1/embeddings", json={"model": "e", "input": "x"}, headers=OPENAI_HEADERS
    ) as response:
        assert response.status == 502 and _is_openai_error(await response.json())
    async with http.get(url + "/health") as response:
        assert response.status == 200


@pytest.mark.parametrize("behaviour", ["close", "reset"])
async def test_upstream_that_hangs_up_before_answering_gives_502(
    behaviour: str, make_proxy: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        if behaviour == "reset":
            writer.transport.abort()  # RST: the proxy's client sees a connection reset, not EOF
        else:
            writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    try:
        base = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        url = await make_proxy(upstream_anthropic_base_url=base, upstream_openai_base_url=base + "/v1")
        async with http.post(
            url + "/v1/messages", json=ANTHROPIC_BODY, headers=ANTHROPIC_HEADERS
        ) as response:
            assert response.status == 502 and _is_anthropic_error(await response.json())
        async with http.post(
            url + "/v1/chat/completions", json=OPENAI_BODY, headers=OPENAI_HEADERS
        ) as response:
            assert response.status == 502 and _is_openai_error(await response.json())
    finally:
        server.close()
        await server.wait_closed()


# --- request bodies ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path, headers, shape",
    [
        ("/v1/messages", ANTHROPIC_HEADERS, _is_anthropic_error),
        ("/v1/chat/completions", OPENAI_HEADERS, _is_openai_error),
        ("/v1/embeddings", OPENAI_HEADERS, _is_openai_error),
    ],
)
async def test_body_over_limit_gives_413(
    path: str,
    headers: dict[str, str],
    shape: Any,
    make_proxy: ProxyFactory,
    http: aiohttp.ClientSession,
    fake_upstream: FakeUpstream,
) -> None:
    url = await make_proxy(server_max_body_mb="1")
    big = {**ANTHROPIC_BODY, "messages": [{"role": "user", "content": "x" * (1536 * 1024)}]}
    # A file-like body: aiohttp warns about sending large bytes from the event loop.
    async with http.post(url + path, data=io.BytesIO(json.dumps(big).encode()), headers=headers) as response:
        assert response.status == 413
        assert shape(await response.json())
    assert fake_upstream.requests == []


async def test_large_body_within_default_limit(
    anthropic_sdk: anthropic.AsyncAnthropic, fake_upstream: FakeUpstream
) -> None:
    # Claude Code sends images and long histories; aiohttp's 1 MiB default would refuse this.
    content = "y" * (3 * 1024 * 1024)
    message = await anthropic_sdk.messages.create(
        model="claude-fake-1", max_tokens=64, messages=[{"role": "user", "content": content}]
    )
    assert message.content[0].text == DEFAULT_TEXT  # type: ignore[union-attr]
    assert fake_upstream.last().json["messages"][0]["content"] == content


@pytest.mark.parametrize("raw", [b'{"model": "claude-fake-1", "messages": [', b"[1, 2]", b"not json"])
async def test_malformed_json_gives_400(
    raw: bytes, http: aiohttp.ClientSession, proxy_url: str, fake_upstream: FakeUpstream
) -> None:
    async with http.post(proxy_url + "/v1/messages", data=raw, headers=ANTHROPIC_HEADERS) as response:
        assert response.status == 400
        body = await response.json()
        assert _is_anthropic_error(body) and body["error"]["type"] == "invalid_request_error"
    async with http.post(proxy_url + "/v1/chat/completions", data=raw, headers=OPENAI_HEADERS) as response:
        assert response.status == 400
        assert _is_openai_error(await response.json())
    assert fake_upstream.requests == []


# --- headers -----------------------------------------------------------------------------------

END_TO_END = {
    "x-api-key": ANTHROPIC_KEY,
    "anthropic-version": "2023-06-01",
    "anthropic-beta": "prompt-caching-2024-07-31,fake-beta",
    "authorization": "Bearer also-sent",
    "x-stainless-lang": "python",
    "x-stainless-package-version": "9.9.9",
    "x-stainless-retry-count": "0",
    "x-claude-code-session-id": "sess-123",
    "user-agent": "claude-cli/9.9 (external, cli)",
    "x-custom-e2e": "kept",
    "accept": "application/json",
    "content-type": "application/json",
}
HOP_BY_HOP = {
    "connection": "keep-alive, x-hop-named",
    "x-hop-named": "dropped",
    "keep-alive": "timeout=5",
    "proxy-authorization": "Basic c2VjcmV0",
    "te": "trailers",
    "proxy-connection": "keep-alive",
}


async def test_request_headers_forwarded_and_hop_by_hop_dropped(
    http: aiohttp.ClientSession, proxy_url: str, fake_upstream: FakeUpstream
) -> None:
    async with http.post(
        proxy_url + "/v1/messages?beta=true", json=ANTHROPIC_BODY, headers={**END_TO_END, **HOP_BY_HOP}
    ) as response:
        assert response.status == 200
        await response.read()
    sent = fake_upstream.last()
    assert sent.query_string == "beta=true"
    for name, value in END_TO_END.items():
        assert sent.headers.getall(name) == [value], name
    for name in HOP_BY_HOP:
        if name != "connection":
            assert name not in sent.headers, name
    assert "x-hop-named" not in sent.headers.get("connection", "")
    assert sent.headers["host"] == fake_upstream.url.removeprefix("http://")
    assert sent.headers["content-length"] == str(len(sent.body))


async def test_openai_request_headers_forwarded(
    http: aiohttp.ClientSession, proxy_url: str, fake_upstream: FakeUpstream
) -> None:
    headers = {
        **OPENAI_HEADERS,
        "openai-organization": "org-1",
        "openai-project": "proj-1",
        "openai-beta": "assistants=v2",
        "x-stainless-os": "Linux",
        "idempotency-key": "abc",
    }
    async with http.post(proxy_url + "/v1/chat/completions", json=OPENAI_BODY, headers=headers) as response:
        assert response.status == 200
    sent = fake_upstream.last()
    for name, value in headers.items():
        assert sent.headers[name] == value, name
    assert "x-api-key" not in sent.headers


async def test_sdk_headers_arrive_as_sent_directly(
    anthropic_sdk: anthropic.AsyncAnthropic,
    direct_anthropic: anthropic.AsyncAnthropic,
    openai_sdk: openai.AsyncOpenAI,
    direct_openai: openai.AsyncOpenAI,
    fake_upstream: FakeUpstream,
) -> None:
    await anthropic_sdk.messages.create(model="claude-fake-1", max_tokens=64, messages=MESSAGES)
    await direct_anthropic.messages.create(model="claude-fake-1", max_tokens=64, messages=MESSAGES)
    await openai_sdk.chat.completions.create(model="gpt-fake-1", messages=MESSAGES)
    await direct_openai.chat.completions.create(model="gpt-fake-1", messages=MESSAGES)
    # Set per connection by each hop, or by the proxy's decompression (accept-encoding).
    per_hop = {"host", "connection", "content-length", "accept-encoding"}
    for proxied, direct in (fake_upstream.requests[0:2], fake_upstream.requests[2:4]):
        expected = {k.lower(): v for k, v in direct.headers.items() if k.lower() not in per_hop}
        got = {k.lower(): v for k, v in proxied.headers.items() if k.lower() not in per_hop}
        assert got == expected


async def test_response_headers_passed_back(
    http: aiohttp.ClientSession, proxy_url: str, fake_upstream: FakeUpstream
) -> None:
    cases: list[tuple[str, dict[str, Any], dict[str, str]]] = [
        ("/v1/messages", ANTHROPIC_BODY, ANTHROPIC_HEADERS),
        ("/v1/messages", {**ANTHROPIC_BODY, "stream": True}, ANTHROPIC_HEADERS),
        ("/v1/messages", {**ANTHROPIC_BODY, "model": "fake-429"}, ANTHROPIC_HEADERS),
        ("/v1/messages", {**ANTHROPIC_BODY, "model": "fake-529"}, ANTHROPIC_HEADERS),
        ("/v1/chat/completions", OPENAI_BODY, OPENAI_HEADERS),
        ("/v1/chat/completions", {**OPENAI_BODY, "model": "fake-429"}, OPENAI_HEADERS),
        (
            "/v1/chat/completions",
            {**OPENAI_BODY, "stream": True, "stream_options": {"include_usage": True}},
            OPENAI_HEADERS,
        ),
    ]
    for path, body, headers in cases:
        async with http.post(proxy_url + path, json=body, headers=headers) as response:
            received = await response.read()
        sent = fake_upstream.last()
        assert response.status == sent.response_status
        for name, value in sent.response_headers.items():
            assert response.headers.get(name) == value, (path, body.get("model"), name)
        if not body.get("stream"):
            assert received == bytes(sent.response_body)


# --- routing of other paths ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "method, path, headers, provider, upstream_path",
    [
        ("GET", "/v1/models", {"x-api-key": ANTHROPIC_KEY}, "anthropic", "/v1/models"),
        (
            "GET",
            "/v1/models",
            {"anthropic-version": "2023-06-01", "authorization": "Bearer t"},
            "anthropic",
            "/v1/models",
        ),
        ("GET", "/v1/models", {"authorization": f"Bearer {OPENAI_KEY}"}, "openai", "/v1/models"),
        ("GET", "/models", {"authorization": f"Bearer {OPENAI_KEY}"}, "openai", "/v1/models"),
        ("POST", "/v1/embeddings", OPENAI_HEADERS, "openai", "/v1/embeddings"),
        ("POST", "/v1/responses", OPENAI_HEADERS, "openai", "/v1/responses"),
        ("DELETE", "/v1/files/file-abc", OPENAI_HEADERS, "openai", "/v1/files/file-abc"),
        ("GET", "/v1/messages/batches/mb_1", ANTHROPIC_HEADERS, "anthropic", "/v1/messages/batches/mb_1"),
    ],
)
async def test_other_paths_pass_through(
    method: str,
    path: str,
    headers: dict[str, str],
    provider: str,
    upstream_path: str,
    http: aiohttp.ClientSession,
    proxy_url: str,
    fake_upstream: FakeUpstream,
) -> None:
    body = json.dumps({"model": "m", "input": "Hello"}).encode() if method == "POST" else None
    # Sent as written: encoded delimiters (& = / # +) must reach upstream unchanged.
    url = yarl.URL(proxy_url + path + "?limit=5&after_id=a%26b%3Dc%2Fd%23e%2Bf", encoded=True)
    async with http.request(method, url, data=body, headers=headers) as response:
        received = await response.read()
    sent = fake_upstream.last()
    assert (sent.provider, sent.method, sent.path) == (provider, method, upstream_path)
    assert sent.query_string == "limit=5&after_id=a%26b%3Dc%2Fd%23e%2Bf"
    assert sent.body == (body or b"")
    # Status and body verbatim, 404s included.
    assert response.status == sent.response_status
    assert received == bytes(sent.response_body)
