"""`make bench-compression`: input-token reduction, evidence recall, validity and time of compression.

LoCoMo conversations (a path to ../shared/datasets/locomo-dev.json, never copied into the project) are
played as chats, one speaker as the user and the other as the assistant, each session's date written
before its first turn; every question is appended as the latest user message and sent through the
real proxy to a recording fake upstream. A turn counts as kept when its text appears in the forwarded
request, ignoring case and whitespace. A generated agent-style session with large tool results is
played turn by turn the same way. Compression time is measured in-process on the same requests, with a
warm session, because the proxy's own overhead would drown it.

    .venv/bin/python -m bench.compression --locomo ../shared/datasets/locomo-dev.json
    .venv/bin/python -m bench.compression --in-process      # no proxy: compress() called directly
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterator

import attrs

from proxy.compression import SessionMemory, compress
from proxy.compression.structure import problems
from proxy.config import CompressionConfig, load_config
from proxy.tokens import estimate_request

DEFAULT_LOCOMO = "../shared/datasets/locomo-dev.json"
MODEL = {"anthropic": "claude-sonnet-4-5", "openai": "gpt-4o"}
CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop", 5: "adversarial"}


@attrs.frozen
class Question:
    text: str
    category: int
    evidence: tuple[str, ...]  # the texts of the turns holding the answer


@attrs.frozen
class Conversation:
    name: str
    system: str
    turns: int
    messages: tuple[dict[str, Any], ...]  # Anthropic-shaped: text blocks, one per turn
    questions: tuple[Question, ...]


def _turn_text(turn: dict[str, Any]) -> str:
    text = f"{turn['speaker']}: {turn['text']}"
    if turn.get("blip_caption"):
        text += f" [shares {turn['blip_caption']}]"
    return text


def load_locomo(path: Path) -> list[Conversation]:
    """Each LoCoMo sample as a chat: consecutive turns of one speaker share a message."""
    conversations = []
    for sample in json.loads(path.read_text(encoding="utf-8")):
        talk = sample["conversation"]
        sessions = sorted((int(k.split("_")[1]) for k in talk if k.startswith("session_") and k.count("_") == 1
                           and isinstance(talk[k], list) and talk[k]))
        first_speaker = talk[f"session_{sessions[0]}"][0]["speaker"]
        other = talk["speaker_b"] if first_speaker == talk["speaker_a"] else talk["speaker_a"]
        messages: list[dict[str, Any]] = []
        texts: dict[str, str] = {}
        turns = 0
        for number in sessions:
            header = f"[Session {number}, {talk[f'session_{number}_date_time']}]"
            for index, turn in enumerate(talk[f"session_{number}"]):
                texts[turn["dia_id"]] = turn["text"]
                turns += 1
                role = "user" if turn["speaker"] == first_speaker else "assistant"
                blocks = [{"type": "text", "text": header}] if index == 0 else []
                blocks.append({"type": "text", "text": _turn_text(turn)})
                if messages and messages[-1]["role"] == role:
                    messages[-1]["content"].extend(blocks)
                else:
                    messages.append({"role": role, "content": blocks})
        questions = []
        for qa in sample["qa"]:
            ids = [part.strip() for raw in qa.get("evidence", []) for part in str(raw).replace(";", ",").split(",")]
            evidence = tuple(texts[i] for i in ids if i in texts)
            if evidence:
                questions.append(Question(str(qa["question"]), int(qa["category"]), evidence))
        system = (f"You are {other}, chatting with your friend {first_speaker} over many sessions. "
                  "Answer questions about your conversations briefly and precisely.")
        conversations.append(Conversation(sample.get("sample_id", f"conv-{len(conversations)}"), system, turns,
                                          tuple(messages), tuple(questions)))
    return conversations


def question_body(provider: str, conversation: Conversation, question: str) -> dict[str, Any]:
    """The request a client would send: the whole chat, then the question as the latest user message."""
    if provider == "openai":  # Chat Completions accepts consecutive user messages: the question stands alone
        flat = [{"role": m["role"], "content": "\n\n".join(b["text"] for b in m["content"])}
                for m in conversation.messages]
        return {"model": MODEL[provider], "max_tokens": 256,
                "messages": [{"role": "system", "content": conversation.system}, *flat,
                             {"role": "user", "content": question}]}
    messages = [{"role": m["role"], "content": [dict(b) for b in m["content"]]} for m in conversation.messages]
    if messages[-1]["role"] == "user":  # roles must alternate: the question joins the last user turn
        messages[-1]["content"].append({"type": "text", "text": question})
    else:
        messages.append({"role": "user", "content": [{"type": "text", "text": question}]})
    return {"model": MODEL[provider], "max_tokens": 256, "system": conversation.system, "messages": messages}


# --- a generated agent-style session -------------------------------------------------------------

AGENT_TOOLS = [
    {"name": name, "description": f"{name} tool of a coding agent.",
     "input_schema": {"type": "object", "properties": {arg: {"type": "string"}}, "required": [arg]}}
    for name, arg in (("Read", "file_path"), ("Bash", "command"), ("Grep", "pattern"), ("Edit", "file_path"))]
_WORDS = ("config session cache token stream parser request writer reader message chunk digest index worker "
          "queue retry budget metric tenant upstream schema limit buffer record").split()


def _code(rng: random.Random, lines: int) -> str:
    out = []
    while len(out) < lines:
        name = "_".join(rng.sample(_WORDS, 2))
        out.append(f"def {name}(value: int, other: str | None = None) -> dict[str, int]:")
        out.append(f'    """Return the {rng.choice(_WORDS)} of the {rng.choice(_WORDS)} for value."""')
        for _ in range(rng.randint(3, 9)):
            out.append(f"    {rng.choice(_WORDS)} = {rng.choice(_WORDS)}.get(value, {rng.randint(0, 999)})")
        out.append(f"    return {{'{rng.choice(_WORDS)}': value + {rng.randint(1, 99)}}}")
        out.append("")
    return "\n".join(out[:lines])


def _log(rng: random.Random, lines: int) -> str:
    return "\n".join(f"tests/test_{rng.choice(_WORDS)}.py::test_{'_'.join(rng.sample(_WORDS, 3))} "
                     f"{rng.choice(['PASSED', 'PASSED', 'PASSED', 'FAILED'])} [{i * 100 // lines:3d}%]"
                     for i in range(lines))


def agent_requests(seed: int = 7, tasks: int = 8) -> list[dict[str, Any]]:
    """Every request of a Claude Code-like session: prompts, tool loops with large results, thinking."""
    rng = random.Random(seed)
    messages: list[dict[str, Any]] = []
    requests = []
    system = [{"type": "text", "text": "You are a coding agent working in a Python repository."},
              {"type": "text", "text": "Use the tools. Be careful and precise.", "cache_control": {"type": "ephemeral"}}]

    def send() -> None:
        body = json.loads(json.dumps({"model": MODEL["anthropic"], "max_tokens": 4096, "system": system,
                                      "tools": AGENT_TOOLS, "messages": messages}))
        last = body["messages"][-1]["content"][-1]
        last["cache_control"] = {"type": "ephemeral"}
        requests.append(body)

    call = 0
    for task in range(tasks):
        module = rng.choice(_WORDS)
        messages.append({"role": "user", "content": [{"type": "text", "text": (
            f"Task {task + 1}: the {module} module drops a {rng.choice(_WORDS)} when the {rng.choice(_WORDS)} "
            f"is full. Find the cause in proxy/{module}.py, fix it and run the tests.")}]})
        send()
        for step in range(rng.randint(4, 7)):
            call += 1
            tool = rng.choice(["Read", "Read", "Bash", "Grep"])
            arg = {"Read": f"proxy/{rng.choice(_WORDS)}.py", "Bash": "python -m pytest -q",
                   "Grep": rng.choice(_WORDS)}[tool]
            content: list[dict[str, Any]] = []
            if step == 0:
                content.append({"type": "thinking", "thinking": f"I should look at {arg} first. " * 8,
                                "signature": f"sig{seed}{task}{step}" * 6})
            content.append({"type": "text", "text": f"Let me check {arg}."})
            key = {"Read": "file_path", "Bash": "command", "Grep": "pattern"}[tool]
            content.append({"type": "tool_use", "id": f"toolu_{call:04d}", "name": tool, "input": {key: arg}})
            messages.append({"role": "assistant", "content": content})
            size = rng.randint(120, 700)
            output = _log(rng, size // 2) if tool == "Bash" else _code(rng, size)
            messages.append({"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": f"toolu_{call:04d}", "content": output}]})
            send()
        messages.append({"role": "assistant", "content": [{"type": "text", "text": (
            f"Fixed: the {module} module now checks the limit before it appends. Tests pass.")}]})
    return requests


# --- measuring ---------------------------------------------------------------------------------

def strings(value: Any) -> Iterator[str]:
    """Every string in a JSON value (where a turn's text can appear)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def squeezed(text: str) -> str:
    return "".join(text.lower().split())


def forwarded_text(body: dict[str, Any]) -> str:
    return "\x00".join(squeezed(s) for s in strings(body.get("messages")))


def valid(provider: str, original: dict[str, Any], forwarded: dict[str, Any]) -> bool:
    """Valid for the provider, and everything but the messages unchanged."""
    same_rest = {k: v for k, v in original.items() if k != "messages"} == \
                {k: v for k, v in forwarded.items() if k != "messages"}
    return same_rest and not problems(provider, forwarded.get("messages"))  # type: ignore[arg-type]


@attrs.define
class Tally:
    """Totals for one table row."""

    requests: int = 0
    compressed: int = 0
    valid: int = 0
    original: int = 0
    forwarded: int = 0
    evidence: int = 0
    kept: int = 0
    all_kept: int = 0
    by_category: dict[int, list[int]] = attrs.Factory(lambda: defaultdict(lambda: [0, 0]))
    times_ms: list[float] = attrs.Factory(list)

    def add(self, provider: str, original: dict[str, Any], forwarded: dict[str, Any],
            question: Question | None) -> None:
        self.requests += 1
        self.compressed += forwarded is not original and forwarded != original
        self.valid += valid(provider, original, forwarded)
        self.original += estimate_request(original)
        self.forwarded += estimate_request(forwarded)
        if question is not None:
            text = forwarded_text(forwarded)
            kept = sum(squeezed(e) in text for e in question.evidence)
            self.evidence += len(question.evidence)
            self.kept += kept
            self.all_kept += kept == len(question.evidence)
            self.by_category[question.category][0] += kept
            self.by_category[question.category][1] += len(question.evidence)

    @property
    def reduction(self) -> float:
        return 1 - self.forwarded / self.original if self.original else 0.0

    @property
    def recall(self) -> float:
        return self.kept / self.evidence if self.evidence else 1.0


def timed_compress(provider: str, body: dict[str, Any], memory: SessionMemory,
                   settings: CompressionConfig) -> tuple[dict[str, Any], float]:
    started = time.perf_counter()
    result = compress(provider, body, memory, settings)  # type: ignore[arg-type]
    return (result.body if result.body is not None else body), (time.perf_counter() - started) * 1000


def in_process(conversations: list[Conversation], providers: list[str], settings: CompressionConfig,
               agent: list[dict[str, Any]]) -> tuple[dict[str, Tally], Tally]:
    """Every request compressed by compress() in this process, one warm SessionMemory per conversation."""
    rows: dict[str, Tally] = {}
    for provider in providers:
        for conversation in conversations:
            tally = rows.setdefault(f"{conversation.name} {provider}", Tally())
            memory = SessionMemory(f"{conversation.name}-{provider}")
            for number, question in enumerate(conversation.questions):
                body = question_body(provider, conversation, question.text)
                forwarded, ms = timed_compress(provider, body, memory, settings)
                if number:  # the first request of a session is the cold one
                    tally.times_ms.append(ms)
                tally.add(provider, body, forwarded, question)
    agent_tally = Tally()
    memory = SessionMemory("agent")
    for body in agent:
        forwarded, ms = timed_compress("anthropic", body, memory, settings)
        agent_tally.times_ms.append(ms)
        agent_tally.add("anthropic", body, forwarded, None)
    return rows, agent_tally
