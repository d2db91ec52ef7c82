"""Every compressed request stays valid for its provider: tool pairs, thinking, roles, markers, fields."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest

from proxy.compression.compressor import DIGEST_INTRO
from proxy.compression.structure import problems
from proxy.providers import Anthropic, OpenAI
from proxy.tokens import count_text
from tests.compression_support import (
    SETTINGS,
    anthropic_agent,
    anthropic_chat,
    openai_agent,
    run,
    settings,
    texts,
)


def _tool_ids(messages: list[dict[str, Any]], kind: str, key: str) -> list[str]:
    return [
        b[key]
        for m in messages
        if isinstance(m["content"], list)
        for b in m["content"]
        if b.get("type") == kind
    ]


def test_anthropic_tool_pairs_stay_whole() -> None:
    body = anthropic_agent(30, thinking=False)
    result = run("anthropic", body)
    assert result.reason == "compressed" and result.body is not None
    out = result.body["messages"]
    assert problems(Anthropic.shape, out) == []
    assert result.messages_folded > 0
    # Each tool_use that survived is answered in the very next message, and vice versa.
    for index, message in enumerate(out):
        uses = (
            [b["id"] for b in message["content"] if isinstance(b, dict) and b.get("type") == "tool_use"]
            if isinstance(message["content"], list)
            else []
        )
        if uses:
            assert _tool_ids([out[index + 1]], "tool_result", "tool_use_id") == uses
    assert sorted(_tool_ids(out, "tool_use", "id")) == sorted(_tool_ids(out, "tool_result", "tool_use_id"))


def test_anthropic_first_message_is_user_and_roles_alternate() -> None:
    result = run("anthropic", anthropic_chat(61))
    assert result.body is not None
    roles = [m["role"] for m in result.body["messages"]]
    assert roles[0] == "user"
    assert all(a != b for a, b in itertools.pairwise(roles))
    # The task, the first message, stays whole; the digests follow it in the same user message.
    first = result.body["messages"][0]["content"]
    assert first[0] == {"type": "text", "text": anthropic_chat(61)["messages"][0]["content"]}
    assert first[1]["text"] == DIGEST_INTRO


def test_latest_assistant_turn_with_thinking_is_never_folded() -> None:
    body = anthropic_agent(30)
    result = run("anthropic", body)
    # One turn since the person's only message, and it thinks: nothing folds, old tool results are cut.
    assert result.reason == "compressed" and result.body is not None
    assert result.messages_folded == 0
    out = result.body["messages"]
    assert problems(Anthropic.shape, out) == []
    for original, forwarded in zip(body["messages"], out, strict=True):
        if original["role"] == "assistant":
            assert forwarded is original  # thinking, text and tool_use blocks: the very same objects


def test_thinking_of_earlier_turns_is_folded_whole_and_latest_kept() -> None:
    first = anthropic_agent(25)["messages"]
    # A new request from the person starts a new turn; the earlier turn's thinking may fold away.
    later = anthropic_agent(3)
    messages = [*first, {"role": "assistant", "content": "Done."}, *later["messages"]]
    body = {**later, "messages": messages}
    result = run("anthropic", body)
    assert result.reason == "compressed" and result.body is not None
    out = result.body["messages"]
    assert problems(Anthropic.shape, out) == []
    originals = {id(b) for m in messages if isinstance(m["content"], list) for b in m["content"]}
    latest_turn = messages[len(first) + 1 :]
    for message in latest_turn[1:]:
        assert any(m is message for m in out) or message["role"] == "user"
    for message in out:
        for block in message["content"] if isinstance(message["content"], list) else []:
            if block.get("type") in ("thinking", "redacted_thinking"):
                assert id(block) in originals


def test_openai_tool_messages_follow_their_calls() -> None:
    body = openai_agent(12)
    result = run("openai", body)
    assert result.reason == "compressed" and result.body is not None
    out = result.body["messages"]
    assert problems(OpenAI.shape, out) == []
    assert out[0] == body["messages"][0]  # the system message stays first and unchanged
    for index, message in enumerate(out):
        if message.get("tool_calls"):
            ids = [c["id"] for c in message["tool_calls"]]
            following = [m["tool_call_id"] for m in out[index + 1 : index + 1 + len(ids)]]
            assert following == ids


def test_non_message_fields_system_and_tools_unchanged() -> None:
    cases = (
        ("anthropic", anthropic_agent(30, thinking=False)),
        ("anthropic", anthropic_chat(61)),
        ("openai", openai_agent(12)),
    )
    for provider, body in cases:
        result = run(provider, body)
        assert result.body is not None
        assert {k: v for k, v in result.body.items() if k != "messages"} == {
            k: v for k, v in body.items() if k != "messages"
        }


def test_latest_messages_verbatim() -> None:
    body = anthropic_chat(61)
    result = run("anthropic", body)
    assert result.body is not None
    out = result.body["messages"]
    recent = body["messages"][-SETTINGS.keep_recent :]
    assert out[-SETTINGS.keep_recent : -1] == recent[:-1]
    latest = out[-1]["content"]  # the latest user message: its own text first, then what was recalled
    assert latest[0] == {"type": "text", "text": body["messages"][-1]["content"]}
    assert "sailing" in latest[1]["text"]


def test_recent_window_widens_over_tool_pairs() -> None:
    body = anthropic_agent(30, thinking=False)
    for keep in (1, 2, 3, 4):
        result = run("anthropic", body, config=settings(keep_recent=keep))
        assert result.body is not None
        assert problems(Anthropic.shape, result.body["messages"]) == []
        # The window starts at the assistant tool_use whose result is the latest message.
        assert result.body["messages"][-2] is body["messages"][-2]


def test_old_tool_results_cut_to_head_and_tail_with_a_marker() -> None:
    body = anthropic_agent(30, thinking=True, result_lines=200)
    result = run("anthropic", body)  # the latest turn thinks: nothing folds, old results are cut
    assert result.reason == "compressed" and result.body is not None
    out = result.body["messages"]
    assert result.messages_folded == 0 and len(out) == len(body["messages"])
    first_result = out[2]["content"][0]["content"]
    original = body["messages"][2]["content"][0]["content"]
    assert "removed by the Vidurai proxy" in first_result
    lines = original.split("\n")
    assert first_result.startswith(lines[0]) and first_result.endswith(lines[-1])
    assert count_text(first_result) < SETTINGS.tool_result_max_tokens + 60
    assert out[-1] == body["messages"][-1]  # the recent ones are not cut


def test_cache_control_marker_moves_from_folded_part_to_digest_end() -> None:
    body = anthropic_chat(61)
    messages = body["messages"]
    messages[3] = {
        "role": "assistant",
        "content": [{"type": "text", "text": messages[3]["content"], "cache_control": {"type": "ephemeral"}}],
    }
    messages[-1] = {
        "role": "user",
        "content": [
            {"type": "text", "text": messages[-1]["content"], "cache_control": {"type": "ephemeral"}}
        ],
    }
    result = run("anthropic", body)
    assert result.body is not None
    out = result.body["messages"]
    digest_blocks = out[0]["content"]
    assert digest_blocks[-1]["cache_control"] == {"type": "ephemeral"}
    assert all("cache_control" not in b for b in digest_blocks[:-1])
    latest = out[-1]["content"]
    # The client's marker still ends the stable part; the recalled block comes after it, unmarked.
    assert latest[0]["cache_control"] == {"type": "ephemeral"} and "cache_control" not in latest[-1]
    marked = sum('"cache_control"' in json.dumps(m) for m in out)
    assert marked == 2


def test_no_marker_added_when_none_was_folded() -> None:
    result = run("anthropic", anthropic_chat(61))
    assert result.body is not None
    assert "cache_control" not in json.dumps(result.body)


def test_recalled_turns_come_with_role_and_date() -> None:
    body = anthropic_chat(61, question="When did we plan the astronomy evening?")
    turn = (
        "On 12 March, 2024 we planned the astronomy evening at the observatory with the new telescope. "
        "Bring the warm jackets and the thermos, it gets cold up on the ridge after dark."
    )
    body["messages"][4] = {"role": "user", "content": turn}
    result = run("anthropic", body)
    assert result.body is not None
    recalled = result.body["messages"][-1]["content"][-1]["text"]
    assert f"(12 March, 2024)\nuser: {turn}" in recalled
    # Whole only at the end: the digest in the prefix quotes one of its sentences.
    assert turn not in "".join(texts(result.body["messages"][:-1]))


@pytest.mark.parametrize(
    "manage",
    [
        lambda b: b.update(
            context_management={
                "edits": [{"type": "clear_tool_uses_20250919", "keep": {"type": "tool_uses"}}]
            }
        ),
        lambda b: b["messages"][5].update(
            content=[{"type": "compaction", "content": "Summary of the conversation so far: ..."}]
        ),
    ],
)
def test_client_context_management_is_left_to_the_client(manage: Any) -> None:
    body = anthropic_chat(81)
    manage(body)
    result = run("anthropic", body)
    # Context editing and compaction decide what the model sees; folding too would undo their cache.
    assert (result.body, result.reason) == (None, "client_context_management")
