"""CORS: allowed and refused origins, preflight answered by the proxy, headers on streamed responses."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from proxy.cors import EXPOSE_ALWAYS, MAX_AGE_S, CorsPolicy, setup_cors
from tests.conftest import ANTHROPIC_KEY, ProxyFactory
from tests.fake_upstream import FakeUpstream

ALLOWED = "https://dash.example.com"
OTHER = "https://evil.example.net"
# What the Anthropic and OpenAI SDKs ask for when they run in a browser.
SDK_HEADERS = (
    "anthropic-beta, anthropic-dangerous-direct-browser-access, anthropic-version, authorization, "
    "content-type, x-api-key, x-stainless-arch, x-stainless-lang, x-stainless-retry-count"
)

SmallClient = Callable[[tuple[str, ...], list[str]], Awaitable[TestClient[web.Request, web.Application]]]


def _cors_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items() if k.lower().startswith("access-control-")}


def preflight_headers(origin: str, method: str = "POST", headers: str = SDK_HEADERS) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": headers,
    }


# --- the module on a small app of its own -------------------------------------------------------------


def small_app(allowed: tuple[str, ...], seen: list[str]) -> web.Application:
    """JSON, streamed and upstream-CORS-carrying responses, recording which methods reached a handler."""

    async def json_handler(request: web.Request) -> web.Response:
        seen.append(request.method)
        return web.json_response(
            {"ok": True},
            headers={
                "request-id": "req_1",
                "Vary": "Accept-Encoding",
                "anthropic-ratelimit-requests-remaining": "9",
            },
        )

    async def stream_handler(request: web.Request) -> web.StreamResponse:
        seen.append(request.method)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "x-request-id": "r2"})
        await response.prepare(request)
        for n in range(3):
            await response.write(f"data: {n}\n\n".encode())
        await response.write_eof()
        return response

    async def upstream_cors(request: web.Request) -> web.Response:
        seen.append(request.method)
        return web.Response(
            text="x", headers={"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Credentials": "true"}
        )

    app = web.Application()
    app.router.add_route("*", "/json", json_handler)
    app.router.add_get("/stream", stream_handler)
    app.router.add_get("/upstream-cors", upstream_cors)
    setup_cors(app, allowed)
    return app


@pytest.fixture
def small(aiohttp_client: Any) -> SmallClient:
    """A test client for small_app(allowed, seen), served on loopback by pytest-aiohttp."""

    async def make(allowed: tuple[str, ...], seen: list[str]) -> TestClient[web.Request, web.Application]:
        client: TestClient[web.Request, web.Application] = await aiohttp_client(small_app(allowed, seen))
        return client

    return make


def test_policy_matches_origins_case_insensitively() -> None:
    policy = CorsPolicy.from_config(("https://Dash.Example.com", "http://localhost:3000"))
    assert policy.allow_origin("https://dash.example.com") == "https://dash.example.com"
    assert policy.allow_origin("http://localhost:3000") == "http://localhost:3000"
    assert policy.allow_origin("http://localhost:3001") is None
    assert policy.allow_origin("null") is None
    assert policy.allow_origin(None) is None
    assert CorsPolicy.from_config(("*",)).allow_origin("null") == "*"


async def test_preflight_allowed_is_answered_without_reaching_the_handler(small: SmallClient) -> None:
    seen: list[str] = []
    client = await small((ALLOWED,), seen)
    async with client.options("/json", headers=preflight_headers(ALLOWED)) as response:
        assert response.status == 204
        cors = _cors_headers(response.headers)
        assert cors["access-control-allow-origin"] == ALLOWED
        assert "POST" in cors["access-control-allow-methods"]
        assert set(cors["access-control-allow-headers"].split(", ")) == set(SDK_HEADERS.split(", "))
        assert cors["access-control-max-age"] == str(MAX_AGE_S)
        assert "Origin" in response.headers["Vary"]
    assert seen == []


async def test_preflight_refused_origin_gets_403_and_no_cors_headers(small: SmallClient) -> None:
    seen: list[str] = []
    client = await small((ALLOWED,), seen)
    async with client.options("/json", headers=preflight_headers(OTHER)) as response:
        assert response.status == 403
        assert _cors_headers(response.headers) == {}
    assert seen == []


async def test_preflight_drops_malformed_requested_headers(small: SmallClient) -> None:
    client = await small(("*",), [])
    async with client.options(
        "/json", headers=preflight_headers(ALLOWED, headers="x-api-key, bad header, ")
    ) as r:
        assert r.status == 204
        assert r.headers["Access-Control-Allow-Headers"] == "x-api-key"
        assert r.headers["Access-Control-Allow-Origin"] == "*"


async def test_allowed_origin_gets_allow_origin_and_exposed_headers(small: SmallClient) -> None:
    seen: list[str] = []
    client = await small((ALLOWED, "http://localhost:3000"), seen)
    async with client.post("/json", headers={"Origin": ALLOWED}) as response:
        assert response.status == 200
        assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
        exposed = response.headers["Access-Control-Expose-Headers"].split(", ")
        assert set(EXPOSE_ALWAYS) <= set(exposed)
        assert "anthropic-ratelimit-requests-remaining" in exposed
        # The handler's own Vary survives; Origin is added to it.
        assert {v.strip() for v in response.headers["Vary"].split(",")} >= {"Accept-Encoding", "Origin"}
    assert seen == ["POST"]


async def test_refused_origin_is_served_without_cors_headers(small: SmallClient) -> None:
    seen: list[str] = []
    client = await small((ALLOWED,), seen)
    async with client.post("/json", headers={"Origin": OTHER}) as response:
        assert response.status == 200  # served; the browser, seeing no CORS headers, hides it from the page
        assert _cors_headers(response.headers) == {}
    async with client.post("/json") as response:  # no Origin: curl, SDKs outside a browser
        assert _cors_headers(response.headers) == {}
    assert seen == ["POST", "POST"]


async def test_streamed_response_carries_cors_headers(small: SmallClient) -> None:
    client = await small(("*",), [])
    async with client.get("/stream", headers={"Origin": OTHER}) as response:
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        assert "x-request-id" in response.headers["Access-Control-Expose-Headers"]
        assert await response.read() == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"


async def test_upstream_cors_headers_are_replaced_by_the_operators(small: SmallClient) -> None:
    client = await small((ALLOWED,), [])
    async with client.get("/upstream-cors", headers={"Origin": OTHER}) as response:
        assert _cors_headers(response.headers) == {}
    async with client.get("/upstream-cors", headers={"Origin": ALLOWED}) as response:
        cors = _cors_headers(response.headers)
        assert cors["access-control-allow-origin"] == ALLOWED
        assert "access-control-allow-credentials" not in cors


async def test_options_without_preflight_headers_reaches_the_handler(small: SmallClient) -> None:
    seen: list[str] = []
    client = await small((ALLOWED,), seen)
    async with client.options("/json", headers={"Origin": ALLOWED}) as response:
        assert response.status == 200
    assert seen == ["OPTIONS"]


async def test_empty_allowed_origins_leaves_the_app_untouched(small: SmallClient) -> None:
    seen: list[str] = []
    client = await small((), seen)
    assert len(client.app.middlewares) == 0
    assert len(client.app.on_response_prepare) == 0
    async with client.options("/json", headers=preflight_headers(ALLOWED)) as response:
        assert response.status == 200
        assert _cors_headers(response.headers) == {}
        assert "Vary" not in response.headers or "Origin" not in response.headers["Vary"]
    assert seen == ["OPTIONS"]


# --- through the real proxy in front of the fake upstream ---------------------------------------------

MESSAGE = {"model": "claude-fake-1", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}


def _anthropic_headers(origin: str | None) -> dict[str, str]:
    headers = {
        "x-api-key": ANTHROPIC_KEY,
        "anthropic-version": "2023-06-01",
        "anthropic-dangerous-direct-browser-access": "true",
    }
    if origin:
        headers["Origin"] = origin
    return headers


async def test_proxy_answers_preflight_for_allowed_origin(
    make_proxy: ProxyFactory, fake_upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    url = await make_proxy(server_allowed_origins=f"{ALLOWED}, http://localhost:3000")
    async with http.options(url + "/v1/messages", headers=preflight_headers(ALLOWED)) as response:
        assert response.status == 204
        assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
        assert "x-api-key" in response.headers["Access-Control-Allow-Headers"]
    async with http.options(url + "/v1/messages", headers=preflight_headers(OTHER)) as response:
        assert response.status == 403
        assert _cors_headers(response.headers) == {}
    assert fake_upstream.requests == []  # preflights never reach the provider


async def test_proxy_streamed_messages_carry_cors_headers(
    make_proxy: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    url = await make_proxy(server_allowed_origins=ALLOWED)
    body = {**MESSAGE, "stream": True}
    async with http.post(url + "/v1/messages", json=body, headers=_anthropic_headers(ALLOWED)) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
        exposed = response.headers["Access-Control-Expose-Headers"].split(", ")
        assert {"request-id", "x-vidurai-stats"} <= set(exposed)
        assert any(name.startswith("anthropic-ratelimit-") for name in exposed)
        assert b"message_stop" in await response.read()
    async with http.post(url + "/v1/messages", json=body, headers=_anthropic_headers(OTHER)) as response:
        assert response.status == 200  # proxied; the browser hides it
        assert _cors_headers(response.headers) == {}
        await response.read()


async def test_proxy_without_allowed_origins_sends_no_cors_and_forwards_options(
    make_proxy: ProxyFactory, fake_upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    url = await make_proxy()
    async with http.post(url + "/v1/messages", json=MESSAGE, headers=_anthropic_headers(ALLOWED)) as response:
        assert response.status == 200
        assert _cors_headers(response.headers) == {}
    async with http.options(
        url + "/v1/messages", headers={**preflight_headers(ALLOWED), "x-api-key": ANTHROPIC_KEY}
    ) as response:
        assert _cors_headers(response.headers) == {}
    assert [r.method for r in fake_upstream.requests] == ["POST", "OPTIONS"]
