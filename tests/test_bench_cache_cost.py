"""The benchmark's prompt-cache cost model (bench/cache_cost.py), on requests priced by hand."""

from __future__ import annotations

from typing import Any

import pytest

from bench.cache_cost import PromptCache, blocks
from proxy.tokens import MESSAGE_OVERHEAD_TOKENS, count_text, estimate_request

MARK = {"type": "ephemeral"}


def text(word: str, marked: bool = False) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "text", "text": word}
    if marked:
        block["cache_control"] = dict(MARK)
    return block


def body(*messages: tuple[str, list[dict[str, Any]]], system_marked: bool = True) -> dict[str, Any]:
    return {
        "model": "claude-sonnet-4-5",
        "system": [text("one", system_marked)],
        "messages": [{"role": role, "content": content} for role, content in messages],
    }


@pytest.fixture(autouse=True)
def one_token_words() -> None:
    """The premise of the hand-worked figures: each word is one token, each message adds 4."""
    assert all(count_text(w) == 1 for w in ("one", "two", "three", "four", "five"))
    assert MESSAGE_OVERHEAD_TOKENS == 4


def test_without_breakpoints_the_cost_is_the_token_count() -> None:
    cache = PromptCache()
    request = body(("user", [text("two")]), system_marked=False)
    for _ in range(2):  # nothing is ever written, so the second request reads nothing either
        cost = cache.play(request)
        assert (cost.tokens, cost.warm) == (6, 6.0)  # system 1, message 4 + 1


def test_reads_the_longest_prefix_written_and_writes_up_to_the_last_breakpoint() -> None:
    cache = PromptCache()
    # system "one" (1 token, breakpoint), user "two" (5, breakpoint): all written at 1.25.
    first = cache.play(body(("user", [text("two", marked=True)])))
    assert (first.tokens, first.warm) == (6, 7.5)
    # The same two blocks (their marker moved on: identity ignores cache_control) are read,
    # assistant "three" and user "four" (5 each) written up to the breakpoint on "four".
    second = cache.play(
        body(("user", [text("two")]), ("assistant", [text("three")]), ("user", [text("four", marked=True)]))
    )
    assert second.tokens == 16
    assert second.warm == pytest.approx(0.1 * 6 + 1.25 * 10)


def test_a_changed_block_breaks_the_prefix_from_there_on() -> None:
    cache = PromptCache()
    cache.play(body(("user", [text("two", marked=True)])))
    changed = cache.play(
        body(("user", [text("five")]), ("assistant", [text("three")]), ("user", [text("four", marked=True)]))
    )
    assert changed.warm == pytest.approx(0.1 * 1 + 1.25 * 15)  # only the system block is read


def test_full_price_after_the_last_breakpoint_and_reads_past_it() -> None:
    cache = PromptCache()
    # Only the system block is marked: it is written, the message after it paid in full.
    assert cache.play(body(("user", [text("two")]))).warm == pytest.approx(1.25 * 1 + 5)
    cache.play(body(("user", [text("two", marked=True)])))  # reads 1, writes the user block
    # A request whose last breakpoint ends earlier still reads the longer prefix written before.
    assert cache.play(body(("user", [text("two")]))).warm == pytest.approx(0.1 * 6)


def test_blocks_sum_to_the_proxys_request_estimate() -> None:
    request = {
        "model": "claude-sonnet-4-5",
        "tools": [{"name": "bash", "input_schema": {"type": "object"}, "cache_control": dict(MARK)}],
        "system": [text("You are careful.", marked=True)],
        "messages": [
            {"role": "user", "content": "Fix the bug in django/db/models/query.py."},
            {
                "role": "assistant",
                "content": [
                    text("Look first."),
                    {"type": "tool_use", "id": "toolu_1", "name": "bash", "input": {"command": "ls"}},
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "a.py"}],
            },
        ],
    }
    parts = list(blocks(request))
    assert sum(b.tokens for b in parts) == estimate_request(request)
    assert [b.breakpoint for b in parts] == [True, True, False, False, False, False]
