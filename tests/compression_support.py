"""Test support for compression: its settings, small generated conversations in both providers' shapes,
and compress() run on a copy (tests/test_compression_support.py checks the conversations are valid)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import attrs

from proxy.compression import CompressionResult, SessionMemory, compress
from proxy.compression.policy import UNCACHED, CachePrices
from proxy.compression.shape import ConversationShape
from proxy.config import CompressionConfig
from proxy.providers import Anthropic, OpenAI

SETTINGS = CompressionConfig(
    enabled=True,
    threshold_messages=10,
    min_tokens=2000,
    keep_recent=6,
    chunk_messages=20,
    recall_budget_tokens=1500,
    recall_share=0.08,
    cache_aware_recall=True,
    tool_result_max_tokens=400,
    summarizer="extractive",
    summary_model_anthropic="claude-haiku-4-5",
    summary_model_openai="gpt-4o-mini",
    summary_timeout=30.0,
)
# Each provider's conversation shape by name, as the tests name providers.
SHAPES: dict[str, ConversationShape] = {"anthropic": Anthropic.shape, "openai": OpenAI.shape}
TOPICS = ["sailing", "pottery", "chess", "violin", "gardening", "astronomy", "baking", "climbing"]
LINE = "We talked again about {topic} and the plans for the weekend, which keep changing every week. "


# Claude's prompt cache with its list prices: reads 0.1, writes 1.25, read up to breakpoints.
CLAUDE_CACHE = CachePrices(0.1, 1.25, from_breakpoint=True)


def settings(**changes: Any) -> CompressionConfig:
    """SETTINGS with these fields changed."""
    return attrs.evolve(SETTINGS, **changes)


def chat_turn(index: int) -> str:
    """A filler-rich turn about one topic, about 60 tokens."""
    topic = TOPICS[index % len(TOPICS)]
    return f"Turn {index}: " + LINE.format(topic=topic) * 3


def anthropic_chat(turns: int, question: str = "What did we say about sailing?") -> dict[str, Any]:
    """A plain Anthropic chat: user and assistant alternate, the question is the latest user message."""
    messages: list[dict[str, Any]] = []
    for index in range(turns):
        role = "user" if index % 2 == 0 else "assistant"
        messages.append({"role": role, "content": chat_turn(index)})
    if messages[-1]["role"] == "user":
        messages.append({"role": "assistant", "content": "Noted."})
    messages.append({"role": "user", "content": question})
    return {
        "model": "claude-test",
        "max_tokens": 100,
        "system": "Be brief.",
        "messages": messages,
        "metadata": {"user_id": "u1"},
        "temperature": 0.2,
    }


def anthropic_agent(steps: int, thinking: bool = True, result_lines: int = 120) -> dict[str, Any]:
    """An agent session: each step an assistant tool_use (with thinking) and a user tool_result."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Fix the failing test in parser.py."}]
    for step in range(steps):
        content: list[dict[str, Any]] = []
        if thinking:
            content.append(
                {
                    "type": "thinking",
                    "thinking": f"Step {step}: read the next file.",
                    "signature": f"sig-{step}",
                }
            )
        content.append({"type": "text", "text": f"Reading file {step}."})
        content.append(
            {
                "type": "tool_use",
                "id": f"toolu_{step:03d}",
                "name": "Read",
                "input": {"path": f"src/file_{step}.py"},
            }
        )
        messages.append({"role": "assistant", "content": content})
        output = "\n".join(
            f"{step}:{line}: value_{line} = compute(value_{line - 1}) + {line * 7}"
            for line in range(result_lines)
        )
        messages.append(
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": f"toolu_{step:03d}", "content": output}],
            }
        )
    return {
        "model": "claude-test",
        "max_tokens": 100,
        "system": [{"type": "text", "text": "Agent."}],
        "tools": [{"name": "Read", "description": "Read a file", "input_schema": {"type": "object"}}],
        "messages": messages,
    }


def openai_agent(steps: int, result_lines: int = 60) -> dict[str, Any]:
    """An OpenAI chat with tool calls: assistant tool_calls, then one tool message per call."""
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "Look at every file about sailing."},
    ]
    for step in range(steps):
        calls = [
            {
                "id": f"call_{step}_{n}",
                "type": "function",
                "function": {"name": "read", "arguments": json.dumps({"path": f"f{step}_{n}.txt"})},
            }
            for n in range(2)
        ]
        messages.append({"role": "assistant", "content": None, "tool_calls": calls})
        for call in calls:
            text = "\n".join(f"{call['id']} line {i}: sailing notes {i * 3}" for i in range(result_lines))
            messages.append({"role": "tool", "tool_call_id": call["id"], "content": text})
        messages.append({"role": "assistant", "content": f"Step {step} done. " + chat_turn(step)})
        messages.append({"role": "user", "content": f"Continue with step {step + 1}. " + chat_turn(step + 1)})
    return {
        "model": "gpt-test",
        "messages": messages,
        "tools": [{"type": "function", "function": {"name": "read", "parameters": {"type": "object"}}}],
    }


def run(
    provider: str,
    body: dict[str, Any],
    memory: SessionMemory | None = None,
    config: CompressionConfig = SETTINGS,
    prices: CachePrices = UNCACHED,
) -> CompressionResult:
    """compress() on a copy, checking it left the body alone; `prices` of the provider's prompt cache
    (UNCACHED: Claude without cache_control markers)."""
    before = copy.deepcopy(body)
    memory = memory or SessionMemory("test")
    result = compress(SHAPES[provider], body, memory, config, None, prices)
    assert body == before, "compress() mutated the request body"
    return result


def texts(value: Any) -> Iterator[str]:
    """Every string inside a JSON-like value, at any depth."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from texts(item)
    elif isinstance(value, list):
        for item in value:
            yield from texts(item)
