"""The Anthropic SDK through the proxy behaves as it does against the provider (issue 2)."""

from __future__ import annotations

import json
import time
from typing import Any

import anthropic
import pytest

from tests.conftest import ProxyFactory, anthropic_client
from tests.fake_upstream import ANTHROPIC_MODELS, DEFAULT_TEXT, FakeUpstream, body_tokens

MODEL = "claude-fake-1"
MESSAGES: list[Any] = [{"role": "user", "content": "Hello there"}]
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Weather for a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city"],
    },
}
# Response headers the SDK and its users act on (retries, rate limiting, support tickets).
ACTED_ON = (
    "retry-after",
    "retry-after-ms",
    "x-should-retry",
    "anthropic-ratelimit-requests-limit",
    "anthropic-ratelimit-requests-remaining",
    "anthropic-ratelimit-requests-reset",
    "anthropic-ratelimit-tokens-remaining",
    "anthropic-ratelimit-input-tokens-limit",
)


async def test_message_json(
    anthropic_sdk: anthropic.AsyncAnthropic,
    direct_anthropic: anthropic.AsyncAnthropic,
    fake_upstream: FakeUpstream,
) -> None:
    message = await anthropic_sdk.messages.create(model=MODEL, max_tokens=64, messages=MESSAGES)
    proxied = fake_upstream.last()
    assert (proxied.provider, proxied.method, proxied.path) == ("anthropic", "POST", "/v1/messages")
    assert message.content[0].type == "text" and message.content[0].text == DEFAULT_TEXT
    assert message.usage.input_tokens == body_tokens(proxied.body)
    assert message.usage.output_tokens == 9

    direct = await direct_anthropic.messages.create(model=MODEL, max_tokens=64, messages=MESSAGES)
    assert proxied.body == fake_upstream.last().body  # forwarded byte for byte
    assert message.model_dump(exclude={"id"}) == direct.model_dump(exclude={"id"})


async def test_message_stream_raw_events(
    anthropic_sdk: anthropic.AsyncAnthropic, direct_anthropic: anthropic.AsyncAnthropic
) -> None:
    async def events(client: anthropic.AsyncAnthropic) -> list[Any]:
        stream = await client.messages.create(model=MODEL, max_tokens=64, messages=MESSAGES, stream=True)
        return [event.model_dump() async for event in stream]

    proxied, direct = await events(anthropic_sdk), await events(direct_anthropic)
    assert [e["type"] for e in proxied] == [e["type"] for e in direct]
    assert proxied[0]["type"] == "message_start" and proxied[-1]["type"] == "message_stop"
    proxied[0]["message"].pop("id"), direct[0]["message"].pop("id")
    assert proxied == direct
    text = "".join(e["delta"]["text"] for e in proxied if e["type"] == "content_block_delta")
    assert text == DEFAULT_TEXT


async def test_message_stream_helper_accumulates_usage(
    anthropic_sdk: anthropic.AsyncAnthropic, fake_upstream: FakeUpstream
) -> None:
    async with anthropic_sdk.messages.stream(
        model=MODEL,
        max_tokens=64,
        messages=MESSAGES,
        extra_headers={"x-fake-cache-read": "1200", "x-fake-cache-write": "300"},
    ) as stream:
        texts = [text async for text in stream.text_stream]
        final = await stream.get_final_message()
    assert "".join(texts) == DEFAULT_TEXT
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens == body_tokens(fake_upstream.last().body)
    assert final.usage.output_tokens == 9
    assert final.usage.cache_read_input_tokens == 1200
    assert final.usage.cache_creation_input_tokens == 300


async def test_tool_use_json(anthropic_sdk: anthropic.AsyncAnthropic, fake_upstream: FakeUpstream) -> None:
    message = await anthropic_sdk.messages.create(
        model=MODEL,
        max_tokens=64,
        messages=MESSAGES,
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        tool_choice={"type": "tool", "name": "get_weather"},
    )
    assert message.stop_reason == "tool_use"
    block = message.content[0]
    assert block.type == "tool_use" and block.name == "get_weather"
    assert block.input == {"city": "fake", "days": 1}
    assert fake_upstream.last().json["tools"][0]["name"] == "get_weather"


async def test_tool_use_stream_input_json_delta(anthropic_sdk: anthropic.AsyncAnthropic) -> None:
    kinds = []
    async with anthropic_sdk.messages.stream(
        model=MODEL,
        max_tokens=64,
        messages=MESSAGES,
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        tool_choice={"type": "any"},
    ) as stream:
        async for event in stream:
            if event.type == "content_block_delta":
                kinds.append(event.delta.type)
        final = await stream.get_final_message()
    assert kinds and set(kinds) == {"input_json_delta"} and len(kinds) > 1
    block = final.content[0]
    assert block.type == "tool_use" and block.input == {"city": "fake", "days": 1}
    assert final.stop_reason == "tool_use"


async def test_tool_result_round_trip(
    anthropic_sdk: anthropic.AsyncAnthropic, fake_upstream: FakeUpstream
) -> None:
    history: list[Any] = [
        *MESSAGES,
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}
            ],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "Sunny"}]},
    ]
    message = await anthropic_sdk.messages.create(
        model=MODEL, max_tokens=64, messages=history, tools=[WEATHER_TOOL]
    )  # type: ignore[list-item]
    assert message.content[0].type == "text"
    assert fake_upstream.last().json["messages"] == history


async def test_count_tokens(anthropic_sdk: anthropic.AsyncAnthropic, fake_upstream: FakeUpstream) -> None:
    counted = await anthropic_sdk.messages.count_tokens(model=MODEL, messages=MESSAGES, system="Be brief.")
    request = fake_upstream.last()
    assert (request.provider, request.path) == ("anthropic", "/v1/messages/count_tokens")
    assert counted.input_tokens == body_tokens(request.body)
    assert request.json["system"] == "Be brief."


async def test_models_list(anthropic_sdk: anthropic.AsyncAnthropic, fake_upstream: FakeUpstream) -> None:
    models = [model.id async for model in anthropic_sdk.models.list()]
    assert models == list(ANTHROPIC_MODELS)
    request = fake_upstream.last()
    assert (request.provider, request.method, request.path) == ("anthropic", "GET", "/v1/models")


async def test_models_list_with_bearer_token_goes_to_anthropic(
    proxy_url: str, fake_upstream: FakeUpstream
) -> None:
    # OAuth users (Claude Code subscriptions) send Authorization instead of x-api-key; anthropic-version
    # still identifies the provider.
    async with anthropic_client(proxy_url, api_key=None, auth_token="oauth-token-123") as client:
        models = [model.id async for model in client.models.list()]
    assert models == list(ANTHROPIC_MODELS)
    request = fake_upstream.last()
    assert request.provider == "anthropic"
    assert request.headers["authorization"] == "Bearer oauth-token-123"
    assert "x-api-key" not in request.headers


async def test_beta_call_keeps_query_and_beta_header(
    anthropic_sdk: anthropic.AsyncAnthropic, fake_upstream: FakeUpstream
) -> None:
    # Claude Code posts to /v1/messages?beta=true; this SDK version no longer adds it, so ask explicitly.
    message = await anthropic_sdk.beta.messages.create(
        model=MODEL,
        max_tokens=64,
        messages=MESSAGES,
        betas=["fake-feature-2025-01-01"],
        extra_query={"beta": "true"},
    )
    assert message.content[0].type == "text"
    request = fake_upstream.last()
    assert (request.path, request.query_string) == ("/v1/messages", "beta=true")
    assert request.headers["anthropic-beta"] == "fake-feature-2025-01-01"


async def test_beta_stream(anthropic_sdk: anthropic.AsyncAnthropic, fake_upstream: FakeUpstream) -> None:
    stream = await anthropic_sdk.beta.messages.create(
        model=MODEL,
        max_tokens=64,
        messages=MESSAGES,
        betas=["a-2025-01-01", "b-2025-02-02"],
        stream=True,
        extra_query={"beta": "true"},
    )
    types = [event.type async for event in stream]
    assert types[0] == "message_start" and types[-1] == "message_stop"
    request = fake_upstream.last()
    assert request.query_string == "beta=true"
    assert request.headers["anthropic-beta"] == "a-2025-01-01,b-2025-02-02"


@pytest.mark.parametrize("status", [429, 529, 500, 413, 400, 401])
async def test_upstream_error_same_as_direct(
    status: int,
    anthropic_sdk: anthropic.AsyncAnthropic,
    direct_anthropic: anthropic.AsyncAnthropic,
    fake_upstream: FakeUpstream,
) -> None:
    async def failure(client: anthropic.AsyncAnthropic) -> anthropic.APIStatusError:
        with pytest.raises(anthropic.APIStatusError) as caught:
            await client.messages.create(model=f"fake-{status}", max_tokens=64, messages=MESSAGES)
        return caught.value

    proxied = await failure(anthropic_sdk)
    sent = fake_upstream.last()
    direct = await failure(direct_anthropic)
    assert type(proxied) is type(direct)
    assert proxied.status_code == direct.status_code == status
    assert proxied.type == direct.type and proxied.api_message == direct.api_message
    assert proxied.request_id == sent.response_headers["request-id"]
    assert proxied.body == json.loads(bytes(sent.response_body))  # the body verbatim
    for name in ACTED_ON:
        assert proxied.response.headers.get(name) == direct.response.headers.get(name), name


async def test_429_and_529_exception_classes(anthropic_sdk: anthropic.AsyncAnthropic) -> None:
    with pytest.raises(anthropic.RateLimitError) as limited:
        await anthropic_sdk.messages.create(model="fake-429", max_tokens=64, messages=MESSAGES)
    assert limited.value.response.headers["retry-after"] == "7"
    assert limited.value.response.headers["retry-after-ms"] == "7000"
    assert limited.value.response.headers["x-should-retry"] == "true"
    assert limited.value.response.headers["anthropic-ratelimit-requests-remaining"] == "0"
    with pytest.raises(anthropic.OverloadedError) as overloaded:
        await anthropic_sdk.messages.create(model="fake-529", max_tokens=64, messages=MESSAGES)
    assert overloaded.value.status_code == 529
    assert overloaded.value.type == "overloaded_error"


async def test_sdk_retry_honours_retry_after_ms(proxy_url: str, fake_upstream: FakeUpstream) -> None:
    async with anthropic_client(proxy_url, max_retries=2) as client:
        started = time.monotonic()
        message = await client.messages.create(
            model=MODEL, max_tokens=64, messages=MESSAGES, extra_headers={"x-fake-scenario": "retry-once"}
        )
        elapsed = time.monotonic() - started
    assert message.content[0].text == DEFAULT_TEXT
    assert [r.headers.get("x-stainless-retry-count") for r in fake_upstream.requests] == ["0", "1"]
    assert [r.response_status for r in fake_upstream.requests] == [429, 200]
    # retry-after-ms: 10 reached the SDK; without it the SDK backs off at least 0.375 s.
    assert elapsed < 0.35


async def test_mid_stream_error_event_same_as_direct(
    anthropic_sdk: anthropic.AsyncAnthropic, direct_anthropic: anthropic.AsyncAnthropic
) -> None:
    async def run(client: anthropic.AsyncAnthropic) -> tuple[list[str], anthropic.APIStatusError]:
        seen: list[str] = []
        stream = await client.messages.create(
            model="fake-error-event", max_tokens=64, messages=MESSAGES, stream=True
        )
        with pytest.raises(anthropic.APIStatusError) as caught:
            async for event in stream:
                seen.append(event.type)
        return seen, caught.value

    proxied_seen, proxied = await run(anthropic_sdk)
    direct_seen, direct = await run(direct_anthropic)
    assert proxied_seen == direct_seen and "content_block_delta" in proxied_seen
    assert type(proxied) is type(direct)
    assert isinstance(proxied.body, dict) and proxied.body["error"]["type"] == "overloaded_error"


async def test_split_multibyte_character_intact(
    anthropic_sdk: anthropic.AsyncAnthropic, fake_upstream: FakeUpstream
) -> None:
    stream = await anthropic_sdk.messages.create(
        model="fake-split-utf8", max_tokens=64, messages=MESSAGES, stream=True
    )
    text = "".join(
        [
            event.delta.text
            async for event in stream
            if event.type == "content_block_delta" and event.delta.type == "text_delta"
        ]
    )
    assert text == DEFAULT_TEXT


async def test_upstream_down_gives_502_in_anthropic_shape(
    make_proxy: ProxyFactory, closed_port_url: str
) -> None:
    url = await make_proxy(upstream_anthropic_base_url=closed_port_url)
    async with anthropic_client(url) as client:
        with pytest.raises(anthropic.InternalServerError) as caught:
            await client.messages.create(model=MODEL, max_tokens=64, messages=MESSAGES)
        with pytest.raises(anthropic.InternalServerError) as streamed:
            await client.messages.create(model=MODEL, max_tokens=64, messages=MESSAGES, stream=True)
    for error in (caught.value, streamed.value):
        assert error.status_code == 502
        body = error.body
        assert isinstance(body, dict) and body["type"] == "error"
        assert set(body["error"]) >= {"type", "message"} and isinstance(body["error"]["type"], str)
        assert body["error"]["message"] and "Traceback" not in body["error"]["message"]
