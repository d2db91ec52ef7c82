"""Digests quote: every line is text of the messages it stands for; the task is never folded."""

from __future__ import annotations

import re
from typing import Any

from proxy.compression.digest import digest, message_lines
from proxy.compression.keylines import key_lines
from proxy.compression.structure import role
from proxy.providers import Anthropic
from tests.compression_support import SHAPES, anthropic_agent, anthropic_chat, openai_agent, run

_MARKER = re.compile(r"^\[… \d+ (?:lines|more chars)\]$|^\[… \d+ chars …\]$")


def _quoted_parts(line: str, speaker: str) -> list[str]:
    """The pieces of a digest line that must be verbatim text, without the proxy's framing."""
    if line.startswith(f"{speaker} called "):
        return [part for part in re.split(r" \[… \d+ chars …\] ", line.removeprefix(f"{speaker} called "))]
    if line.startswith("tool result:") or line == "(empty)":
        return []
    if re.fullmatch(r"\(.+\)", line):  # a header's date, as the recall block writes dates
        return [line[1:-1]]
    body = line.removeprefix(f"{speaker}: ")
    return [part for part in body.split(" … ") if part and part != "…"]


def assert_verbatim(provider: str, message: Any) -> None:
    texts = [p.text for p in SHAPES[provider].pieces(message)]
    speaker = role(message)
    lines = "\n".join(message_lines(SHAPES[provider], message)).split("\n")
    for line in lines:
        if _MARKER.match(line):
            continue
        for part in _quoted_parts(line.strip(), speaker):
            part = part.removeprefix("… ").removesuffix(" …")
            assert any(part in text for text in texts), (line, texts)


def test_chat_digest_lines_are_sentences_of_their_messages() -> None:
    body = anthropic_chat(61)
    body["messages"][4] = {
        "role": "user",
        "content": "Hey! Sounds great. On 3 May, 2024 I moved to Lisbon for my new job at the harbour "
        "office. What about you? The flat has a balcony.",
    }
    for message in body["messages"]:
        assert_verbatim("anthropic", message)
    lines = message_lines(Anthropic.shape, body["messages"][4])
    # The best sentence, whole; no greeting, no stripped words; "…" for what was left out before it.
    assert lines == ["user: … On 3 May, 2024 I moved to Lisbon for my new job at the harbour office."]


def test_agent_digest_keeps_calls_reasoning_and_telling_output_lines() -> None:
    for provider, body in (("anthropic", anthropic_agent(20, thinking=False)), ("openai", openai_agent(20))):
        for message in body["messages"]:
            assert_verbatim(provider, message)
    step = {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "I will look for the parser. It is probably in src. Then I'll edit it."},
            {"type": "tool_use", "id": "t1", "name": "bash", "input": {"command": "grep -n parse src/*.py"}},
        ],
    }
    lines = message_lines(Anthropic.shape, step)
    assert lines[0] == "assistant: I will look for the parser."  # what it set out to do
    assert lines[1] == 'assistant called bash {"command": "grep -n parse src/*.py"}'  # exactly as made


def test_key_lines_keep_matches_definitions_and_errors_verbatim() -> None:
    noise = [f"    value = value + {n}" for n in range(200)]
    output = "\n".join(
        [
            "<returncode>1</returncode>",
            *noise[:80],
            "src/parser.py:118:def parse_header(line):",
            *noise[80:150],
            "Traceback (most recent call last):",
            "ValueError: bad header 'X-Thing'",
            *noise[150:],
            "FAILED tests/test_parser.py::test_header - ValueError",
        ]
    )
    kept = key_lines(output)
    assert kept[0] == "<returncode>1</returncode>"
    for line in (
        "src/parser.py:118:def parse_header(line):",
        "Traceback (most recent call last):",
        "ValueError: bad header 'X-Thing'",
        "FAILED tests/test_parser.py::test_header - ValueError",
    ):
        assert line in kept
    assert any(re.fullmatch(r"\[… \d+ lines\]", line) for line in kept)  # says what it left out
    assert len(kept) < 40
    short = "one\ntwo\nthree"
    assert key_lines(short) == ["one", "two", "three"]


def test_digest_is_a_pure_function_of_its_chunk() -> None:
    messages = anthropic_chat(40)["messages"]
    assert digest(Anthropic.shape, messages[1:21]) == digest(
        Anthropic.shape, [dict(m) for m in messages[1:21]]
    )


def test_the_task_is_never_folded() -> None:
    for provider, body in (
        ("anthropic", anthropic_agent(40, thinking=False)),
        ("anthropic", anthropic_chat(81)),
        ("openai", openai_agent(40)),
    ):
        result = run(provider, body)
        assert result.reason == "compressed" and result.body is not None
        original = body["messages"]
        task_index = next(i for i, m in enumerate(original) if m["role"] == "user")
        task = original[task_index]
        forwarded = result.body["messages"][task_index]
        if provider == "openai":
            assert forwarded == task
        else:
            content = task["content"]
            first = [{"type": "text", "text": content}] if isinstance(content, str) else content
            assert forwarded["content"][: len(first)] == first
