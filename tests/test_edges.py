"""Malformed and hostile input at the edge: a 4xx in the provider's shape, never a traceback or a key
in the log; idle and half-sent connections closed; a failing usage observer leaves the stream alone."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import anthropic
import pytest

from tests.conftest import ANTHROPIC_KEY, ProxyFactory, anthropic_client
from tests.databases import query, wait_rows
from tests.fake_upstream import DEEP_EVENT, FakeUpstream
from tests.proxy_calls import FLUSH_INTERVAL, json_logs

LEAK_KEY = "sk-ant-LEAKCHECK-0123456789abcdef"
ANTHROPIC_HEADERS = {"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01"}


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[Path]:
    """The proxy's production logging into a JSON-lines file for the test's duration."""
    with json_logs(tmp_path / "proxy.log") as path:
        yield path


def logged(path: Path) -> str:
    import logging

    for handler in logging.getLogger().handlers:
        handler.flush()
    return path.read_text(encoding="utf-8")


async def exchange(url: str, raw: bytes) -> bytes:
    """Send raw bytes on a fresh connection; everything the proxy sends back until it closes."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(raw)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 5.0)
    finally:
        writer.close()


def status_and_body(response: bytes) -> tuple[int, Any]:
    head, _, body = response.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body


def nested(depth: int) -> bytes:
    content = b"[" * depth + b"]" * depth
    return b'{"model":"claude-fake-1","max_tokens":8,"messages":[{"role":"user","content":' + content + b"}]}"


@pytest.mark.parametrize("depth", [1_000, 5_000, 100_000])
async def test_deeply_nested_json_gets_400_not_500(
    make_proxy: ProxyFactory, http: aiohttp.ClientSession, log_file: Path, depth: int
) -> None:
    url = await make_proxy()
    async with http.post(url + "/v1/messages", data=nested(depth), headers=ANTHROPIC_HEADERS) as response:
        assert response.status == 400
        body = await response.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert "nested too deeply" in body["error"]["message"]
    assert "Traceback" not in logged(log_file)


async def test_nesting_just_parseable_never_gets_500(
    make_proxy: ProxyFactory, http: aiohttp.ClientSession, log_file: Path
) -> None:
    url = await make_proxy()
    for depth in (200, 500, 900, 990):  # parsed, then walked by the proxy's own code
        async with http.post(url + "/v1/messages", data=nested(depth), headers=ANTHROPIC_HEADERS) as response:
            assert response.status in (200, 400), (depth, await response.text())
    assert "Traceback" not in logged(log_file)


async def test_absolute_form_target_gets_400_and_goes_nowhere(
    make_proxy: ProxyFactory, fake_upstream: FakeUpstream, log_file: Path
) -> None:
    url = await make_proxy()
    raw = b"GET http://example.com/v1/models HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n"
    status, body = status_and_body(await exchange(url, raw))
    assert status == 400
    assert "not a forward proxy" in body["error"]["message"]  # OpenAI's shape: no Anthropic headers
    assert fake_upstream.requests == []
    assert "Traceback" not in logged(log_file)


async def test_root_leads_to_the_dashboard_and_is_not_forwarded(
    make_proxy: ProxyFactory, http: aiohttp.ClientSession, fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    url = await make_proxy(storage_flush_interval=FLUSH_INTERVAL)
    async with http.get(url + "/", allow_redirects=False) as response:
        assert response.status == 302 and response.headers["Location"] == "/dashboard"
    async with http.get(url + "/") as response:
        assert response.status == 200 and "text/html" in response.headers["Content-Type"]
    await asyncio.sleep(0.2)  # a few flush intervals
    assert fake_upstream.requests == []
    assert query(tmp_path / "vidurai.db", "SELECT * FROM requests") == []


MALFORMED = {
    "control character in x-api-key": b"x-api-key: " + LEAK_KEY.encode() + b"\x01\r\n",
    "control character in a bearer token": b"Authorization: Bearer " + LEAK_KEY.encode() + b"\x7f\r\n",
    "control character in the header name": b"x-api-key\x01: " + LEAK_KEY.encode() + b"\r\n",
    "header over 8 KB": b"x-api-key: " + LEAK_KEY.encode() + b"A" * 9000 + b"\r\n",
    "key in an odd header over 8 KB": b"X-Custom-Auth: " + LEAK_KEY.encode() + b"B" * 9000 + b"\r\n",
}


@pytest.mark.parametrize("header", MALFORMED.values(), ids=MALFORMED.keys())
async def test_malformed_header_gets_400_and_no_key_in_the_log(
    make_proxy: ProxyFactory, log_file: Path, header: bytes
) -> None:
    url = await make_proxy()
    raw = b"POST /v1/messages HTTP/1.1\r\nHost: proxy\r\n" + header + b"Content-Length: 2\r\n\r\n{}"
    status, _ = status_and_body(await exchange(url, raw))
    assert status == 400
    text = logged(log_file)
    assert LEAK_KEY[:24] not in text
    assert "Traceback" not in text
    assert "malformed request refused with 400" in text  # the incident is still visible


async def test_too_many_messages_gets_400_naming_the_setting(make_proxy: ProxyFactory) -> None:
    url = await make_proxy(server_max_messages="5")
    messages: list[Any] = [{"role": "user" if n % 2 == 0 else "assistant", "content": "hi"} for n in range(7)]
    async with anthropic_client(url) as client:
        with pytest.raises(anthropic.BadRequestError) as caught:
            await client.messages.create(model="claude-fake-1", max_tokens=8, messages=messages)
        assert "[server] max_messages" in str(caught.value)
        reply = await client.messages.create(model="claude-fake-1", max_tokens=8, messages=messages[:5])
        assert reply.content


async def test_idle_connection_is_closed_after_keepalive_timeout(make_proxy: ProxyFactory) -> None:
    url = await make_proxy(server_keepalive_timeout="0.5")
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        # Never a byte sent: closed by the proxy, not left open until the client gives up.
        assert await asyncio.wait_for(reader.read(), 5.0) == b""
    finally:
        writer.close()
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(b"GET /health HTTP/1.1\r\nHost: proxy\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 5.0)  # the answer, then the idle close
        assert answer.startswith(b"HTTP/1.1 200")
    finally:
        writer.close()


async def test_half_sent_headers_are_closed(make_proxy: ProxyFactory, log_file: Path) -> None:
    url = await make_proxy(server_keepalive_timeout="0.5")
    partial = b"POST /v1/messages HTTP/1.1\r\nHost: proxy\r\nx-api-key: " + LEAK_KEY.encode() + b"\r\n"
    assert await exchange(url, partial) == b""
    assert LEAK_KEY[:24] not in logged(log_file)


async def test_half_sent_body_gets_408_and_is_closed(make_proxy: ProxyFactory, tmp_path: Path) -> None:
    url = await make_proxy(server_read_timeout="0.5", storage_flush_interval=FLUSH_INTERVAL)
    head = (
        b"POST /v1/messages HTTP/1.1\r\nHost: proxy\r\nx-api-key: "
        + ANTHROPIC_KEY.encode()
        + b"\r\nanthropic-version: 2023-06-01\r\nContent-Type: application/json"
        + b"\r\nContent-Length: 100\r\n\r\n"
    )
    status, body = status_and_body(await exchange(url, head + b'{"model":'))
    assert status == 408
    assert body["type"] == "error" and "[server] read_timeout" in body["error"]["message"]
    rows = await wait_rows(tmp_path / "vidurai.db", "SELECT status, error FROM requests")
    assert rows[0]["status"] == 408


async def test_failing_usage_observer_leaves_the_stream_intact(
    make_proxy: ProxyFactory, http: aiohttp.ClientSession, fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    url = await make_proxy(storage_flush_interval=FLUSH_INTERVAL)
    body = {
        "model": "claude-fake-1",
        "max_tokens": 8,
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
    }
    headers = {**ANTHROPIC_HEADERS, "x-fake-scenario": "deep-event"}
    async with http.post(url + "/v1/messages", json=body, headers=headers) as response:
        assert response.status == 200
        received = await response.read()
    # Byte for byte what upstream sent, the undecodable event included, to the end of the stream.
    assert received == fake_upstream.requests[-1].response_body
    assert DEEP_EVENT in received and received.rstrip().endswith(b'{"type":"message_stop"}')
    [row] = await wait_rows(tmp_path / "vidurai.db", "SELECT status, error FROM requests")
    assert row["status"] == 200
    assert row["error"] == "usage not read: observer failed with RecursionError"


async def test_a_failure_after_the_response_started_never_writes_a_second_response(log_file: Path) -> None:
    """The error middleware's last line of defence, around a handler that fails mid-body."""
    from aiohttp import web

    from proxy.app import request_context

    async def fails_mid_body(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"first part ")
        raise RuntimeError("a bug after the headers went out")

    app = web.Application(middlewares=[request_context])
    app.router.add_get("/", fails_mid_body)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        raw = await exchange(url, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    finally:
        await runner.cleanup()
    # One response, cut off: no error page spliced into its chunked body.
    assert raw.count(b"HTTP/1.1") == 1 and raw.startswith(b"HTTP/1.1 200")
    assert b"first part" in raw and b"internal error" not in raw
    assert not raw.endswith(b"0\r\n\r\n")  # never terminated as if complete
    text = logged(log_file)
    assert text.count("unhandled error") == 1  # our one line, with its traceback
    assert "Error handling request" not in text and "Unhandled exception" not in text  # none of aiohttp's
