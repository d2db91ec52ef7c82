"""Streams carry X-Accel-Buffering: no, so an nginx in front passes them on as they come."""

from __future__ import annotations

import aiohttp

from proxy.healthcheck import health_url
from tests.conftest import ANTHROPIC_KEY

HEADERS = {"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01"}


async def test_event_streams_are_marked_unbuffered_and_json_is_not(
    proxy_url: str, http: aiohttp.ClientSession
) -> None:
    body = {"model": "claude-sonnet-5", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
    async with http.post(
        proxy_url + "/v1/messages", json={**body, "stream": True}, headers=HEADERS
    ) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        assert response.headers["X-Accel-Buffering"] == "no"
        assert b"message_stop" in await response.read()
    async with http.post(proxy_url + "/v1/messages", json=body, headers=HEADERS) as response:
        assert response.status == 200 and "X-Accel-Buffering" not in response.headers


def test_health_check_reaches_a_wildcard_listener_on_loopback() -> None:
    assert health_url("0.0.0.0", 8080) == "http://127.0.0.1:8080/health"
    assert health_url("::", 9) == "http://[::1]:9/health"
    assert health_url("::1", 9) == "http://[::1]:9/health"
    assert health_url("10.1.2.3", 80) == "http://10.1.2.3:80/health"
