"""LoCoMo conversations (../shared/datasets/locomo-dev.json, read, never copied) as chats.

One speaker is the user, the other the assistant; each session's date is written before its first
turn. Three kinds of requests come from a conversation: every question appended as the latest user
message (evidence recall), a neutral last message (fact coverage: what the folded history itself
still tells the model), and every user turn in order with Claude Code-like cache markers (input cost
played turn by turn).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import attrs

from .cache_cost import EPHEMERAL

DEFAULT_LOCOMO = "../shared/datasets/locomo-dev.json"
MODEL = {"anthropic": "claude-sonnet-4-5", "openai": "gpt-4o"}
CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop", 5: "adversarial"}
# The datasets README's example of a last message that gives recall nothing to look for.
NEUTRAL_MESSAGE = "Thanks, talk soon!"


@attrs.frozen
class Question:
    text: str
    category: int
    evidence: tuple[str, ...]  # the texts of the turns holding the answer


@attrs.frozen
class Fact:
    """An `observation` fact and the texts of the turns it comes from."""

    text: str
    evidence: tuple[str, ...]


@attrs.frozen
class Conversation:
    name: str
    system: str
    turns: int
    messages: tuple[dict[str, Any], ...]  # Anthropic-shaped: text blocks, one per turn
    questions: tuple[Question, ...]
    facts: tuple[Fact, ...] = ()


def _turn_text(turn: dict[str, Any]) -> str:
    text = f"{turn['speaker']}: {turn['text']}"
    if turn.get("blip_caption"):
        text += f" [shares {turn['blip_caption']}]"
    return text


def _dia_ids(raw: Any) -> list[str]:
    """Evidence as the dataset writes it: a dia_id, a list of them, or several joined by , or ;."""
    items = raw if isinstance(raw, list) else [raw]
    return [part.strip() for item in items for part in str(item).replace(";", ",").split(",") if part.strip()]


def _facts(sample: dict[str, Any], texts: dict[str, str]) -> tuple[Fact, ...]:
    facts = []
    for by_speaker in sample.get("observation", {}).values():
        for pairs in by_speaker.values():
            for fact, raw in pairs:
                evidence = tuple(texts[i] for i in _dia_ids(raw) if i in texts)
                if evidence:
                    facts.append(Fact(str(fact), evidence))
    return tuple(facts)


def _sample(sample: dict[str, Any], index: int) -> Conversation:
    """One LoCoMo sample as a chat: consecutive turns of one speaker share a message."""
    talk = sample["conversation"]
    sessions = sorted(
        int(k.split("_")[1])
        for k in talk
        if k.startswith("session_") and k.count("_") == 1 and isinstance(talk[k], list) and talk[k]
    )
    first_speaker = talk[f"session_{sessions[0]}"][0]["speaker"]
    other = talk["speaker_b"] if first_speaker == talk["speaker_a"] else talk["speaker_a"]
    messages: list[dict[str, Any]] = []
    texts: dict[str, str] = {}
    for number in sessions:
        header = f"[Session {number}, {talk[f'session_{number}_date_time']}]"
        for position, turn in enumerate(talk[f"session_{number}"]):
            texts[turn["dia_id"]] = turn["text"]
            role = "user" if turn["speaker"] == first_speaker else "assistant"
            blocks = [{"type": "text", "text": header}] if position == 0 else []
            blocks.append({"type": "text", "text": _turn_text(turn)})
            if messages and messages[-1]["role"] == role:
                messages[-1]["content"].extend(blocks)
            else:
                messages.append({"role": role, "content": blocks})
    questions = []
    for qa in sample["qa"]:
        evidence = tuple(texts[i] for i in _dia_ids(qa.get("evidence", [])) if i in texts)
        if evidence:
            questions.append(Question(str(qa["question"]), int(qa["category"]), evidence))
    system = (
        f"You are {other}, chatting with your friend {first_speaker} over many sessions. "
        "Answer questions about your conversations briefly and precisely."
    )
    name = sample.get("sample_id", f"conv-{index}")
    return Conversation(name, system, len(texts), tuple(messages), tuple(questions), _facts(sample, texts))


def load_locomo(path: Path) -> list[Conversation]:
    """Every sample of a LoCoMo file as a chat."""
    return [_sample(s, i) for i, s in enumerate(json.loads(path.read_text(encoding="utf-8")))]


def _copied(messages: Any) -> list[dict[str, Any]]:
    return [{"role": m["role"], "content": [dict(b) for b in m["content"]]} for m in messages]


def question_body(provider: str, conversation: Conversation, question: str) -> dict[str, Any]:
    """The request a client would send: the whole chat, then the question as the latest user message."""
    if provider == "openai":  # Chat Completions accepts consecutive user messages: the question stands alone
        flat = [
            {"role": m["role"], "content": "\n\n".join(b["text"] for b in m["content"])}
            for m in conversation.messages
        ]
        return {
            "model": MODEL[provider],
            "max_tokens": 256,
            "messages": [
                {"role": "system", "content": conversation.system},
                *flat,
                {"role": "user", "content": question},
            ],
        }
    messages = _copied(conversation.messages)
    if messages[-1]["role"] == "user":  # roles must alternate: the question joins the last user turn
        messages[-1]["content"].append({"type": "text", "text": question})
    else:
        messages.append({"role": "user", "content": [{"type": "text", "text": question}]})
    return {"model": MODEL[provider], "max_tokens": 256, "system": conversation.system, "messages": messages}


def turn_bodies(conversation: Conversation) -> list[dict[str, Any]]:
    """Each user turn as the request that sends it, history included, with Claude Code's markers:
    the system prompt as a marked text block, and a marker on the last block of the last message."""
    bodies = []
    for end, message in enumerate(conversation.messages, start=1):
        if message["role"] != "user":
            continue
        messages = _copied(conversation.messages[:end])
        messages[-1]["content"][-1]["cache_control"] = dict(EPHEMERAL)
        system = [{"type": "text", "text": conversation.system, "cache_control": dict(EPHEMERAL)}]
        bodies.append(
            {"model": MODEL["anthropic"], "max_tokens": 256, "system": system, "messages": messages}
        )
    return bodies


# --- fact coverage ----------------------------------------------------------------------------------

# The README's bar for a sentence that tells the model something: five words or more.
MIN_SENTENCE_WORDS = 5
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def sentences(text: str) -> list[str]:
    """The sentences of a turn with five words or more, without their closing punctuation (a digest
    that quotes a sentence whole may end it differently)."""
    parts = (s.strip().rstrip(".!?").strip() for s in _SENTENCE_END.split(text))
    return [s for s in parts if len(s.split()) >= MIN_SENTENCE_WORDS]


def covered(fact: Fact, squeezed_request: str) -> bool | None:
    """Whether an evidence turn of the fact keeps a whole sentence verbatim in the request (given
    lower-cased without whitespace); None when no evidence turn has a sentence long enough to count."""
    candidates = [s for turn in fact.evidence for s in sentences(turn)]
    if not candidates:
        return None
    return any("".join(s.lower().split()) in squeezed_request for s in candidates)
