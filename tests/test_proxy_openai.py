"""The OpenAI SDK through the proxy behaves as it does against the provider (issue 2)."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from tests.conftest import ProxyFactory, openai_client
from tests.fake_upstream import DEFAULT_TEXT, OPENAI_MODELS, FakeUpstream, body_tokens

MODEL = "gpt-fake-1"
MESSAGES: list[Any] = [{"role": "user", "content": "Hello there"}]
TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
ACTED_ON = (
    "retry-after",
    "retry-after-ms",
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
    "openai-processing-ms",
    "openai-organization",
)


async def test_chat_json(
    openai_sdk: openai.AsyncOpenAI, direct_openai: openai.AsyncOpenAI, fake_upstream: FakeUpstream
) -> None:
    completion = await openai_sdk.chat.completions.create(model=MODEL, messages=MESSAGES)
    proxied = fake_upstream.last()
    assert (proxied.provider, proxied.method, proxied.path) == ("openai", "POST", "/v1/chat/completions")
    assert completion.choices[0].message.content == DEFAULT_TEXT
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == body_tokens(proxied.body)
    assert completion.usage.completion_tokens == 9

    direct = await direct_openai.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert proxied.body == fake_upstream.last().body  # forwarded byte for byte
    assert completion.model_dump(exclude={"id"}) == direct.model_dump(exclude={"id"})


async def test_stream_without_include_usage_has_no_usage_chunk(openai_sdk: openai.AsyncOpenAI) -> None:
    stream = await openai_sdk.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    chunks = [chunk async for chunk in stream]
    assert all(chunk.choices for chunk in chunks), "a usage-only chunk the client did not ask for"
    assert all(chunk.usage is None for chunk in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == DEFAULT_TEXT
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_stream_without_include_usage_same_chunks_as_direct(
    openai_sdk: openai.AsyncOpenAI, direct_openai: openai.AsyncOpenAI
) -> None:
    async def chunks(client: openai.AsyncOpenAI) -> list[dict[str, Any]]:
        stream = await client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
        return [chunk.model_dump(exclude={"id"}, exclude_unset=True) async for chunk in stream]

    assert await chunks(openai_sdk) == await chunks(direct_openai)


async def test_stream_with_include_usage(openai_sdk: openai.AsyncOpenAI, fake_upstream: FakeUpstream) -> None:
    stream = await openai_sdk.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-fake-cache-read": "7"},
    )
    chunks = [chunk async for chunk in stream]
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.prompt_tokens == body_tokens(fake_upstream.last().body)
    assert last.usage.completion_tokens == 9
    assert last.usage.prompt_tokens_details is not None
    assert last.usage.prompt_tokens_details.cached_tokens == 7
    assert all(chunk.choices and chunk.usage is None for chunk in chunks[:-1])
    assert fake_upstream.last().json["stream_options"] == {"include_usage": True}


async def test_base_url_without_v1(proxy_url: str, fake_upstream: FakeUpstream) -> None:
    async with openai_client(proxy_url) as client:  # posts to /chat/completions
        completion = await client.chat.completions.create(model=MODEL, messages=MESSAGES)
        stream = await client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
        streamed = "".join([c.choices[0].delta.content or "" async for c in stream])
    assert completion.choices[0].message.content == DEFAULT_TEXT == streamed
    assert [(r.provider, r.path) for r in fake_upstream.requests] == [("openai", "/v1/chat/completions")] * 2


async def test_tool_calls_json(openai_sdk: openai.AsyncOpenAI, fake_upstream: FakeUpstream) -> None:
    completion = await openai_sdk.chat.completions.create(
        model=MODEL, messages=MESSAGES, tools=[TOOL], tool_choice="required"
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    function = choice.message.tool_calls[0].function  # type: ignore[union-attr]
    assert function.name == "get_weather" and json.loads(function.arguments) == {"city": "fake"}
    assert fake_upstream.last().json["tools"] == [TOOL]


async def test_tool_calls_stream(openai_sdk: openai.AsyncOpenAI) -> None:
    stream = await openai_sdk.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        tools=[TOOL],
        stream=True,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    arguments, names, finish = "", [], None
    async for chunk in stream:
        for delta_call in chunk.choices[0].delta.tool_calls or []:
            if delta_call.function and delta_call.function.name:
                names.append(delta_call.function.name)
            if delta_call.function and delta_call.function.arguments:
                arguments += delta_call.function.arguments
        finish = chunk.choices[0].finish_reason or finish
    assert names == ["get_weather"] and json.loads(arguments) == {"city": "fake"}
    assert finish == "tool_calls"


async def test_models_list(openai_sdk: openai.AsyncOpenAI, fake_upstream: FakeUpstream) -> None:
    models = [model.id async for model in openai_sdk.models.list()]
    assert models == list(OPENAI_MODELS)
    request = fake_upstream.last()
    assert (request.provider, request.method, request.path) == ("openai", "GET", "/v1/models")
    assert request.headers["authorization"].startswith("Bearer sk-test-")


async def test_embeddings_pass_through(
    openai_sdk: openai.AsyncOpenAI, direct_openai: openai.AsyncOpenAI, fake_upstream: FakeUpstream
) -> None:
    proxied = await openai_sdk.embeddings.create(model="text-embedding-fake", input=["one", "three"])
    sent = fake_upstream.last()
    assert (sent.provider, sent.path) == ("openai", "/v1/embeddings")
    direct = await direct_openai.embeddings.create(model="text-embedding-fake", input=["one", "three"])
    assert sent.body == fake_upstream.last().body
    assert proxied.model_dump() == direct.model_dump()
    assert len(proxied.data) == 2 and len(proxied.data[0].embedding) == 8


async def test_responses_pass_through(openai_sdk: openai.AsyncOpenAI, fake_upstream: FakeUpstream) -> None:
    response = await openai_sdk.responses.create(model=MODEL, input="Hello there")
    assert response.output_text == DEFAULT_TEXT
    request = fake_upstream.last()
    assert (request.provider, request.method, request.path) == ("openai", "POST", "/v1/responses")
    assert request.json["input"] == "Hello there"


async def test_organization_and_project_headers_forwarded(
    proxy_url: str, fake_upstream: FakeUpstream
) -> None:
    async with openai_client(proxy_url + "/v1", organization="org-fake", project="proj-fake") as client:
        await client.chat.completions.create(model=MODEL, messages=MESSAGES)
    headers = fake_upstream.last().headers
    assert headers["openai-organization"] == "org-fake"
    assert headers["openai-project"] == "proj-fake"


@pytest.mark.parametrize("status", [429, 500, 503, 400, 401, 404])
async def test_upstream_error_same_as_direct(
    status: int,
    openai_sdk: openai.AsyncOpenAI,
    direct_openai: openai.AsyncOpenAI,
    fake_upstream: FakeUpstream,
) -> None:
    async def failure(client: openai.AsyncOpenAI) -> openai.APIStatusError:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(model=f"fake-{status}", messages=MESSAGES)
        return caught.value

    proxied = await failure(openai_sdk)
    sent = fake_upstream.last()
    direct = await failure(direct_openai)
    assert type(proxied) is type(direct)
    assert proxied.status_code == direct.status_code == status
    assert proxied.body == direct.body and proxied.code == direct.code and proxied.type == direct.type
    assert proxied.request_id == sent.response_headers["x-request-id"]
    for name in ACTED_ON:
        assert proxied.response.headers.get(name) == direct.response.headers.get(name), name


async def test_rate_limit_error_carries_retry_headers(openai_sdk: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        await openai_sdk.chat.completions.create(model="fake-429", messages=MESSAGES)
    headers = caught.value.response.headers
    assert (headers["retry-after"], headers["retry-after-ms"]) == ("7", "7000")
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert caught.value.code == "rate_limit_exceeded"


async def test_sdk_retry_through_proxy(proxy_url: str, fake_upstream: FakeUpstream) -> None:
    async with openai_client(proxy_url + "/v1", max_retries=2) as client:
        completion = await client.chat.completions.create(
            model=MODEL, messages=MESSAGES, extra_headers={"x-fake-scenario": "retry-once"}
        )
    assert completion.choices[0].message.content == DEFAULT_TEXT
    assert [r.headers.get("x-stainless-retry-count") for r in fake_upstream.requests] == ["0", "1"]


async def test_mid_stream_error_same_as_direct(
    openai_sdk: openai.AsyncOpenAI, direct_openai: openai.AsyncOpenAI
) -> None:
    async def run(client: openai.AsyncOpenAI) -> tuple[int, openai.APIError]:
        received = 0
        stream = await client.chat.completions.create(
            model="fake-error-event", messages=MESSAGES, stream=True
        )
        with pytest.raises(openai.APIError) as caught:
            async for _chunk in stream:
                received += 1
        return received, caught.value

    proxied_count, proxied = await run(openai_sdk)
    direct_count, direct = await run(direct_openai)
    assert proxied_count == direct_count > 0
    assert type(proxied) is type(direct) and proxied.message == direct.message
    assert proxied.body == direct.body


async def test_split_multibyte_character_intact(openai_sdk: openai.AsyncOpenAI) -> None:
    stream = await openai_sdk.chat.completions.create(model="fake-split-utf8", messages=MESSAGES, stream=True)
    text = "".join([chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices])
    assert text == DEFAULT_TEXT


async def test_upstream_down_gives_502_in_openai_shape(
    make_proxy: ProxyFactory, closed_port_url: str
) -> None:
    url = await make_proxy(upstream_openai_base_url=closed_port_url + "/v1")
    async with openai_client(url + "/v1") as client:
        with pytest.raises(openai.InternalServerError) as caught:
            await client.chat.completions.create(model=MODEL, messages=MESSAGES)
        with pytest.raises(openai.InternalServerError) as streamed:
            await client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
        with pytest.raises(openai.InternalServerError) as listed:
            await client.models.list()
    for error in (caught.value, streamed.value, listed.value):
        assert error.status_code == 502
        body = error.body  # the SDK unwraps {"error": {...}}
        assert isinstance(body, dict) and set(body) >= {"message", "type", "param", "code"}
        assert body["message"] and "Traceback" not in body["message"]
        assert error.response.json()["error"] == body
