"""The benchmark's LoCoMo conversion and fact coverage (bench/locomo.py)."""

from __future__ import annotations

from typing import Any

from bench.locomo import Conversation, Fact, covered, sentences, turn_bodies
from bench.measures import squeezed

TURN = "Hi! I went to the beach last Sunday. It was fun."


def test_sentences_of_five_words_or_more_without_closing_punctuation() -> None:
    assert sentences(TURN) == ["I went to the beach last Sunday"]
    assert sentences("Wow, what a day? Yes.") == []


def test_a_fact_is_covered_by_one_whole_sentence_ignoring_case_and_spacing() -> None:
    fact = Fact("Melanie went to the beach.", ("Short one.", TURN))
    assert covered(fact, squeezed("Melanie: i went to  the BEACH last\nsunday!"))
    assert not covered(fact, squeezed("Melanie: I went to the beach"))  # part of a sentence is not enough
    assert covered(Fact("Nothing to quote.", ("Yes. Sure.",)), squeezed(TURN)) is None


def _message(role: str, *texts: str) -> dict[str, Any]:
    return {"role": role, "content": [{"type": "text", "text": t} for t in texts]}


def test_turn_by_turn_sends_every_user_turn_with_claude_code_markers() -> None:
    messages = (
        _message("user", "[Session 1]", "A: hi"),
        _message("assistant", "B: hey"),
        _message("user", "A: bye"),
    )
    conversation = Conversation("c", "You are B.", 3, messages, ())
    first, second = turn_bodies(conversation)
    assert [len(b["messages"]) for b in (first, second)] == [1, 3]
    assert first["system"] == [{"type": "text", "text": "You are B.", "cache_control": {"type": "ephemeral"}}]
    assert first["messages"][0]["content"] == [
        {"type": "text", "text": "[Session 1]"},
        {"type": "text", "text": "A: hi", "cache_control": {"type": "ephemeral"}},
    ]
    assert "cache_control" not in second["messages"][0]["content"][-1]  # only the last block is marked
    assert second["messages"][2]["content"][-1]["cache_control"] == {"type": "ephemeral"}
    assert all("cache_control" not in b for m in messages for b in m["content"])  # the chat is untouched
