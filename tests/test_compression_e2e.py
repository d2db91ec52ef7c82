"""Compression through the real proxy: agent sessions as Claude Code and OpenAI apps send them.

The checks of what upstream received are written out here, independently of the compressor's own
validator, so a bug shared by both cannot hide.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp

from proxy.tokens import count_message, count_text
from tests.compression_support import anthropic_chat
from tests.conftest import ANTHROPIC_KEY, OPENAI_KEY, ProxyFactory
from tests.fake_upstream import FakeUpstream

SYSTEM = [
    {"type": "text", "text": "You are a coding agent. Use the tools.", "cache_control": {"type": "ephemeral"}}
]
TOOLS = [
    {
        "name": "read_file",
        "description": "Read a file.",
        "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
    }
]
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="


def file_text(n: int) -> str:
    return "\n".join(f"line {i} of module_{n}.py: value_{n}_{i} = compute({i}, {n})" for i in range(120))


def agent_history(steps: int) -> list[dict[str, Any]]:
    """A person's request, then tool_use/tool_result pairs with thinking, images and cache markers."""
    messages: list[dict[str, Any]] = [
        {
            "role": "user",
            "content": [
                {
                    "type": "text",
                    "text": "Refactor the compute() calls across the project, starting 2024-03-12.",
                },
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
            ],
        }
    ]
    for n in range(steps):
        messages.append(
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "thinking",
                        "thinking": f"I should read module_{n}.py next.",
                        "signature": f"sig{n}",
                    },
                    {
                        "type": "tool_use",
                        "id": f"toolu_{n:03d}",
                        "name": "read_file",
                        "input": {"path": f"module_{n}.py"},
                    },
                ],
            }
        )
        messages.append(
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": f"toolu_{n:03d}", "content": file_text(n)}
                ],
            }
        )
    messages[-1]["content"][-1]["cache_control"] = {"type": "ephemeral"}
    return messages


def assert_valid_anthropic(messages: list[dict[str, Any]]) -> None:
    assert messages[0]["role"] == "user"
    for before, after in itertools.pairwise(messages):
        assert before["role"] != after["role"], "roles must alternate"
    for i, message in enumerate(messages):
        blocks = message["content"] if isinstance(message["content"], list) else []
        uses = [b["id"] for b in blocks if b.get("type") == "tool_use"]
        if uses:
            answered = [
                b["tool_use_id"] for b in messages[i + 1]["content"] if b.get("type") == "tool_result"
            ]
            assert answered == uses, "every tool_use answered in the next message"
        for result in (b for b in blocks if b.get("type") == "tool_result"):
            previous = messages[i - 1]["content"]
            assert any(b.get("type") == "tool_use" and b["id"] == result["tool_use_id"] for b in previous)
    markers = sum(
        1
        for m in messages
        for b in (m["content"] if isinstance(m["content"], list) else [])
        if "cache_control" in b
    )
    assert markers <= 4


def assert_latest_kept(sent: dict[str, Any], original: dict[str, Any]) -> None:
    """The latest message verbatim, with at most one text block of recalled turns after its content."""
    content = original["content"]
    blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
    assert sent == original or (
        sent["role"] == original["role"]
        and sent["content"][:-1] == blocks
        and sent["content"][-1]["type"] == "text"
    )


def thinking_blocks(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        b
        for m in messages
        if isinstance(m["content"], list)
        for b in m["content"]
        if b.get("type") == "thinking"
    ]


async def post(http: aiohttp.ClientSession, url: str, body: dict[str, Any], headers: dict[str, str]) -> str:
    async with http.post(url, json=body, headers=headers) as response:
        assert response.status == 200, await response.text()
        await response.read()
        return response.headers["X-Vidurai-Stats"]


def unmarked(value: Any) -> Any:
    """A body without its cache_control markers: a client that never marks, so Claude caches nothing."""
    if isinstance(value, dict):
        return {k: unmarked(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [unmarked(v) for v in value]
    return value


async def send_turns(
    url: str,
    http: aiohttp.ClientSession,
    fake: FakeUpstream,
    histories: list[list[dict[str, Any]]],
    saves: bool = True,
    system: Any = SYSTEM,
    **extra: Any,
) -> list[dict[str, Any]]:
    """Send each history as Claude Code would; what upstream received for each, checked as it goes."""
    headers = {
        "x-api-key": ANTHROPIC_KEY,
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "interleaved-thinking-2025-05-14",
    }
    forwarded = []
    for history in histories:
        body = {
            "model": "claude-sonnet-4-5",
            "max_tokens": 256,
            "stream": True,
            "system": system,
            "tools": TOOLS,
            **extra,
            "messages": history,
        }
        stats = await post(http, url + "/v1/messages?beta=true", body, headers)
        sent = fake.last("/v1/messages")
        assert sent.query_string == "beta=true" and sent.json is not None
        assert (int(stats.split("tokens_saved=")[1].split(";")[0]) > 0) is saves, stats
        out = sent.json["messages"]
        assert_valid_anthropic(out)
        # Everything but the messages is forwarded unchanged; the latest messages verbatim.
        assert {k: v for k, v in sent.json.items() if k != "messages"} == {
            k: v for k, v in body.items() if k != "messages"
        }
        assert out[-6:-1] == history[-6:-1]
        assert_latest_kept(out[-1], history[-1])
        original_thinking = thinking_blocks(history)
        assert all(block in original_thinking for block in thinking_blocks(out))
        forwarded.append(sent.json)
    return forwarded


async def test_agent_loop_with_thinking_and_a_warm_cache_is_forwarded_as_sent(
    make_proxy: ProxyFactory, fake_upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    url = await make_proxy(compression_min_tokens="500")
    histories = [agent_history(steps) for steps in (30, 31, 32)]
    thinking = {"type": "enabled", "budget_tokens": 1024}
    forwarded = await send_turns(url, http, fake_upstream, histories, saves=False, thinking=thinking)
    # The turn thinks, so nothing may fold; cutting old tool results would rewrite the cached prefix on
    # every step (a cache write at 1.25 instead of a read at 0.1): cheaper to send the history as is.
    assert [sent["messages"] for sent in forwarded] == histories


async def test_agent_loop_with_thinking_keeps_every_message_and_cuts_old_tool_results(
    make_proxy: ProxyFactory, fake_upstream: FakeUpstream, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    url = await make_proxy(compression_min_tokens="500", storage_flush_interval="0.05")
    # Without cache markers Claude caches nothing: every token is paid on every step.
    histories = [unmarked(agent_history(steps)) for steps in (30, 31, 32)]
    thinking = {"type": "enabled", "budget_tokens": 1024}
    forwarded = await send_turns(
        url, http, fake_upstream, histories, system=unmarked(SYSTEM), thinking=thinking
    )
    for history, sent in zip(histories, forwarded, strict=True):
        out = sent["messages"]
        # The current assistant turn uses thinking, so none of it is folded (the API needs it whole)...
        assert len(out) == len(history) and thinking_blocks(out) == thinking_blocks(history)
        # ...but old tool results are cut to head and tail with a marker.
        old_result = out[2]["content"][0]["content"]
        assert len(old_result) < len(file_text(0)) / 2 and "line 0 of module_0.py" in json.dumps(old_result)
    # Cache-friendly: what was cut for one turn is byte-identical in the next.
    stable = len(histories[0]) - 6
    assert [json.dumps(f["messages"][:stable], sort_keys=True) for f in forwarded] == [
        json.dumps(forwarded[0]["messages"][:stable], sort_keys=True)
    ] * 3

    await asyncio.sleep(0.3)  # the writer commits every 0.05 s
    with sqlite3.connect(tmp_path / "vidurai.db") as conn:
        rows = conn.execute(
            "SELECT tokens_original_est, tokens_forwarded_est, tokens_saved FROM requests "
            "WHERE endpoint = 'messages'"
        ).fetchall()
    assert len(rows) == 3
    assert all(saved == original - forwarded_est > 0 for original, forwarded_est, saved in rows)


def conversation(turns: int) -> list[dict[str, Any]]:
    """People's turns with tool use in between and plain answers: no thinking in the latest turn."""
    messages: list[dict[str, Any]] = []
    for n in range(turns):
        messages.append({"role": "user", "content": f"Step {n}: look at module_{n}.py and tell me about it."})
        messages.append(
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Reading it."},
                    {
                        "type": "tool_use",
                        "id": f"toolu_{n:03d}",
                        "name": "read_file",
                        "input": {"path": f"module_{n}.py"},
                    },
                ],
            }
        )
        messages.append(
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": f"toolu_{n:03d}", "content": file_text(n)}
                ],
            }
        )
        messages.append(
            {"role": "assistant", "content": f"module_{n}.py defines value_{n}_* from compute()."}
        )
    messages.append({"role": "user", "content": "Which module defined value_3_7?"})
    return messages


async def test_conversation_folds_into_a_stable_digest_prefix(
    make_proxy: ProxyFactory, fake_upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    url = await make_proxy(compression_min_tokens="500")
    histories = [conversation(turns) for turns in (20, 21, 22)]
    forwarded = await send_turns(url, http, fake_upstream, histories)
    for history, sent in zip(histories, forwarded, strict=True):
        assert len(sent["messages"]) < len(history)
    # The digests that open the conversation only ever grow at their end: each turn's forwarded prefix
    # starts with the previous turn's digest blocks, byte for byte, so the provider's cache keeps hitting.
    digests = [f["messages"][0]["content"] for f in forwarded]
    assert digests[0][0]["text"] == histories[0][0]["content"]  # the task, whole
    assert "[Vidurai proxy" in digests[0][1]["text"]
    for before, after in itertools.pairwise(digests):
        assert json.dumps(after[: len(before)]) == json.dumps(before)
    # The latest question gets the old turn that answers it, recalled at the very end.
    last_block = forwarded[-1]["messages"][-1]["content"][-1]["text"]
    assert "value_3_7" in last_block


async def test_openai_tool_calls_stay_answered_after_compression(
    make_proxy: ProxyFactory, fake_upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    url = await make_proxy(compression_min_tokens="500")
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You are a coding agent."},
        {"role": "user", "content": "Refactor compute() everywhere."},
    ]
    for n in range(30):
        calls = [
            {
                "id": f"call_{n}_{k}",
                "type": "function",
                "function": {"name": "read_file", "arguments": json.dumps({"path": f"m{n}_{k}.py"})},
            }
            for k in range(2)
        ]
        messages.append({"role": "assistant", "content": None, "tool_calls": calls})
        messages += [{"role": "tool", "tool_call_id": c["id"], "content": file_text(n)} for c in calls]
    body = {
        "model": "gpt-4o",
        "stream": True,
        "messages": messages,
        "tools": [{"type": "function", "function": {"name": "read_file", "parameters": {"type": "object"}}}],
    }
    await post(http, url + "/v1/chat/completions", body, {"authorization": f"Bearer {OPENAI_KEY}"})
    sent = fake_upstream.last("/v1/chat/completions").json
    assert sent is not None
    out = sent["messages"]
    assert len(out) < len(messages) and out[0] == messages[0]
    assert out[-4:] == messages[-4:]
    for i, message in enumerate(out):
        ids = [c["id"] for c in message.get("tool_calls") or []]
        if ids:  # every tool_calls id answered by the tool messages right after it
            assert [m.get("tool_call_id") for m in out[i + 1 : i + 1 + len(ids)]] == ids
        if message["role"] == "tool":
            assert any(
                message["tool_call_id"] in [c["id"] for c in m.get("tool_calls") or []] for m in out[:i]
            )
    # The client did not ask for usage; upstream was asked, and the tools are unchanged.
    assert sent["stream_options"] == {"include_usage": True}
    assert sent["tools"] == body["tools"]


async def test_small_requests_are_forwarded_byte_identical(
    make_proxy: ProxyFactory, fake_upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    url = await make_proxy()
    raw = (
        b'{"model": "claude-sonnet-4-5",  "max_tokens": 16,\n "messages": [{"role": "user", '
        b'"content": "caf\\u00e9 \xe2\x98\x95"}]}'
    )
    async with http.post(
        url + "/v1/messages",
        data=raw,
        headers={
            "x-api-key": ANTHROPIC_KEY,
            "anthropic-version": "2023-06-01",
            "content-type": "application/json",
        },
    ) as response:
        assert response.status == 200
    assert fake_upstream.last("/v1/messages").body == raw


def _recall_and_folded(original: list[dict[str, Any]], sent: dict[str, Any]) -> tuple[int, int]:
    """Tokens of the recall block upstream got, and of the original messages the digest replaced."""
    last = sent["messages"][-1]["content"][-1]
    recall = count_text(last["text"]) if last["text"].startswith("[Vidurai proxy: earlier") else 0
    folded = len(original) - len(sent["messages"])  # the digests join the task's message
    return recall, sum(count_message(m) for m in original[1 : 1 + folded])


async def test_recall_costs_no_more_than_the_cache_reads_it_replaces_while_the_cache_is_warm(
    make_proxy: ProxyFactory, fake_upstream: FakeUpstream, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    database = tmp_path / "warm.db"
    url = await make_proxy(storage_database=str(database))
    chat = anthropic_chat(61, question="What did we say about sailing and the weekend plans?")
    cached_system = [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]
    recalls = {}
    for name, system in (("marked", cached_system), ("unmarked", "Be brief.")):
        body = {**chat, "model": "claude-sonnet-4-5", "system": system}
        headers = {"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01", "x-vidurai-session": name}
        for _ in range(2):  # the same turn twice, seconds apart: the second finds the cache warm
            await post(http, url + "/v1/messages", body, headers)
            sent = fake_upstream.last("/v1/messages").json
            recalls.setdefault(name, []).append(_recall_and_folded(chat["messages"], sent))
    (first, folded), (second, again) = recalls["marked"]
    assert folded == again > 0
    assert first > 0.05 * folded  # nothing cached yet: recall as usual
    assert 0 < second <= 0.05 * folded  # half of Claude's cache reads (a tenth of input) it replaces
    # Without a cache_control marker Claude caches nothing, so there is nothing to protect.
    assert recalls["unmarked"][0] == recalls["unmarked"][1]
    assert recalls["unmarked"][0][0] > 0.05 * recalls["unmarked"][0][1]
    await asyncio.sleep(1.2)  # a writer flush
    with sqlite3.connect(database) as conn:
        audit = conn.execute("SELECT detail FROM audit WHERE event = 'compressed' ORDER BY id").fetchall()
    assert [json.loads(detail)["cache_warm"] for (detail,) in audit] == [False, True, False, False]


async def test_lone_surrogates_in_old_turns_still_compress(
    make_proxy: ProxyFactory, fake_upstream: FakeUpstream, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """JSON may carry half an emoji ("\\ud83d"); UTF-8, SQLite and tokenizers refuse it."""
    database = tmp_path / "surrogates.db"
    url = await make_proxy(storage_database=str(database))
    chat = anthropic_chat(61, question="What did we say about sailing \ud83d?")
    chat["messages"][2]["content"] = "My 2024 plan: I will fix the broken emoji \ud83d in the release notes."
    headers = {"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01"}
    stats = await post(http, url + "/v1/messages", {**chat, "model": "claude-sonnet-4-5"}, headers)
    sent = fake_upstream.last("/v1/messages").json
    assert len(sent["messages"]) < len(chat["messages"])  # compressed, not failed open
    assert "tokens_saved=0" not in stats
    await asyncio.sleep(1.2)  # a writer flush
    with sqlite3.connect(database) as conn:
        stored = dict(conn.execute("SELECT kind, content FROM memories WHERE content LIKE '%broken emoji%'"))
    # The turn and the digest that mentions it are stored, with "?" for the half emoji.
    assert stored["turn"] == chat["messages"][2]["content"].replace("\ud83d", "?")
    assert "broken emoji ?" in stored["digest"]


async def test_context_management_requests_pass_byte_identical(
    make_proxy: ProxyFactory, fake_upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    url = await make_proxy()
    body = {
        **anthropic_chat(81),
        "model": "claude-sonnet-4-5",
        "context_management": {"edits": [{"type": "compact_20260112", "trigger": {"type": "input_tokens"}}]},
    }
    raw = json.dumps(body).encode()
    headers = {
        "x-api-key": ANTHROPIC_KEY,
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "compact-2026-01-12",
        "content-type": "application/json",
    }
    async with http.post(url + "/v1/messages", data=raw, headers=headers) as response:
        assert response.status == 200
    assert fake_upstream.last("/v1/messages").body == raw
