"""Usage read from streams however upstream splits them; forwarded bytes unchanged or exactly stripped."""

from __future__ import annotations

import json
import random

import pytest

from proxy.pricing import PriceTable
from proxy.providers import Anthropic, OpenAI
from proxy.sse import SSEDecoder


def anthropic_stream(newline: bytes = b"\n") -> bytes:
    events = [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_1",
                    "model": "claude-sonnet-4-5",
                    "role": "assistant",
                    "content": [],
                    "usage": {
                        "input_tokens": 120,
                        "output_tokens": 1,
                        "cache_read_input_tokens": 30,
                        "cache_creation_input_tokens": 7,
                    },
                },
            },
        ),
        ("ping", {"type": "ping"}),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "héllo → wörld"},
            },
        ),
        (
            "message_delta",
            {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 3}},
        ),
        ("message_delta", {"type": "message_delta", "delta": {}, "usage": {"output_tokens": 9}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    return b"".join(
        b"event: "
        + name.encode()
        + newline
        + b"data: "
        + json.dumps(data, ensure_ascii=False).encode()
        + newline
        + newline
        for name, data in events
    )


def openai_chunks(include_usage: bool) -> list[dict[str, object]]:
    chunks: list[dict[str, object]] = [
        {
            "id": "c1",
            "object": "chat.completion.chunk",
            "model": "gpt-4o",
            "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}],
        }
        for piece in ("Hé", "llo", " wörld")
    ]
    if include_usage:
        for chunk in chunks:
            chunk["usage"] = None
        chunks.append(
            {
                "id": "c1",
                "object": "chat.completion.chunk",
                "model": "gpt-4o",
                "choices": [],
                "usage": {
                    "prompt_tokens": 50,
                    "completion_tokens": 3,
                    "prompt_tokens_details": {"cached_tokens": 20},
                },
            }
        )
    return chunks


def sse(chunks: list[dict[str, object]]) -> bytes:
    body = b"".join(
        b"data: " + json.dumps(c, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"
        for c in chunks
    )
    return body + b"data: [DONE]\n\n"


def split_randomly(data: bytes, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(data)), k=min(len(data) - 1, rng.randint(1, 40))))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


@pytest.mark.parametrize("seed", range(25))
@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
def test_anthropic_stream_usage_is_cumulative_and_bytes_pass_unchanged(seed: int, newline: bytes) -> None:
    stream = anthropic_stream(newline)
    observer = Anthropic("http://upstream").observer(streaming=True, rewritten=False)
    pieces = [stream] if seed == 0 else split_randomly(stream, seed)
    forwarded = b"".join(observer.feed(piece) for piece in pieces) + observer.finish()
    assert forwarded == stream
    usage = observer.usage
    # message_delta replaces output_tokens (cumulative); cache tiers stay apart from input.
    assert (usage.input_tokens, usage.output_tokens, usage.cache_read_tokens, usage.cache_write_tokens) == (
        120,
        9,
        30,
        7,
    )
    assert observer.model == "claude-sonnet-4-5"


@pytest.mark.parametrize("seed", range(25))
def test_openai_usage_chunk_the_client_did_not_ask_for_is_removed(seed: int) -> None:
    upstream = sse(openai_chunks(include_usage=True))
    observer = OpenAI("http://upstream/v1").observer(streaming=True, rewritten=True)
    pieces = [upstream] if seed == 0 else split_randomly(upstream, seed)
    forwarded = b"".join(observer.feed(piece) for piece in pieces) + observer.finish()
    assert forwarded == sse(openai_chunks(include_usage=False))
    usage = observer.usage
    # cached_tokens are part of prompt_tokens: input excludes them.
    assert (usage.input_tokens, usage.output_tokens, usage.cache_read_tokens) == (30, 3, 20)
    assert observer.model == "gpt-4o"


def test_openai_stream_the_client_asked_usage_for_passes_unchanged() -> None:
    upstream = sse(openai_chunks(include_usage=True))
    observer = OpenAI("http://upstream/v1").observer(streaming=True, rewritten=False)
    assert b"".join(observer.feed(piece) for piece in split_randomly(upstream, 7)) == upstream
    assert observer.usage.input_tokens == 30


def test_decoder_keeps_a_split_multibyte_character_whole() -> None:
    data = 'data: {"text": "€"}\n\n'.encode()
    cut = data.index("€".encode()) + 1
    decoder = SSEDecoder()
    events = [*decoder.feed(data[:cut]), *decoder.feed(data[cut:])]
    assert [json.loads(e.data)["text"] for e in events] == ["€"]
    assert b"".join(e.raw for e in events) == data


def test_compaction_iterations_are_counted_in_usage_and_cost() -> None:
    """A compact_* edit runs one more sampling pass; the top-level usage covers only the answer's."""
    response = {
        "id": "msg_1",
        "type": "message",
        "model": "claude-sonnet-4-5",
        "content": [{"type": "compaction", "content": "Summary..."}, {"type": "text", "text": "Hi"}],
        "usage": {
            "input_tokens": 23000,
            "output_tokens": 1000,
            "cache_read_input_tokens": 0,
            "iterations": [
                {"type": "compaction", "input_tokens": 180000, "output_tokens": 3500},
                {"type": "message", "input_tokens": 23000, "output_tokens": 1000},
            ],
        },
    }
    observer = Anthropic("http://upstream").observer(streaming=False, rewritten=False)
    raw = json.dumps(response).encode()
    assert observer.feed(raw) == raw and observer.finish() == b""
    usage = observer.usage
    assert (usage.input_tokens, usage.output_tokens, usage.cache_read_tokens) == (203000, 4500, 0)
    cost = PriceTable().cost("claude-sonnet-4-5", usage)
    assert cost == pytest.approx((203000 * 3.00 + 4500 * 15.00) / 1e6)
