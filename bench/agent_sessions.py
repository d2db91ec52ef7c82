"""Coding-agent sessions (../shared/datasets/swe-agent-dev/) as Claude Code-like requests, and what
the agent reached for next.

Each mini-swe-agent trajectory becomes Anthropic Messages requests as the datasets README describes:
the system prompt as a text block marked `cache_control`, one tool `bash` taking `{"command": ...}`,
each assistant turn a text block (its THOUGHT) and a `tool_use` block (the command of its single
fenced bash block; a turn without exactly one such block stays plain text), each following output a
`tool_result` answering it, and the same marker on the last content block of the last message.
Replayed step by step: before each assistant turn, everything up to it is sent; that turn is what
the agent actually did next.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import attrs

from .cache_cost import EPHEMERAL, Cost, PromptCache
from .identifiers import old_only

DEFAULT_SWE_AGENT = "../shared/datasets/swe-agent-dev"
MODEL = "claude-sonnet-4-5"
BASH_TOOL = {
    "name": "bash",
    "description": "Run one shell command in the repository and return its output.",
    "input_schema": {
        "type": "object",
        "properties": {"command": {"type": "string", "description": "The command to run."}},
        "required": ["command"],
    },
}
# mini-swe-agent's own action regex (its default config, `action_regex`).
BASH_BLOCK = re.compile(r"```bash\s*\n(.*?)\n```", re.DOTALL)


@attrs.frozen
class Step:
    """One request of a session, the command the agent actually ran after it (None: no command), and
    what does not depend on the compressor's settings, worked out once: the identifiers of that
    command only older history holds, and the request's own cost through the prompt cache."""

    body: dict[str, Any]
    next_command: str | None
    needed: frozenset[str]  # see bench/identifiers.py
    cost: Cost


@attrs.frozen
class AgentSession:
    name: str
    steps: tuple[Step, ...]


def _assistant_blocks(text: str, call_id: str) -> tuple[list[dict[str, Any]], str | None]:
    """An assistant turn as content blocks, and its command when it has exactly one bash block."""
    commands = BASH_BLOCK.findall(text)
    if len(commands) != 1:
        return [{"type": "text", "text": text}], None
    thought = BASH_BLOCK.sub("", text).strip()
    content: list[dict[str, Any]] = [{"type": "text", "text": thought}] if thought else []
    content.append({"type": "tool_use", "id": call_id, "name": "bash", "input": {"command": commands[0]}})
    return content, commands[0]


def _user_blocks(text: str, answering: str | None) -> list[dict[str, Any]]:
    if answering is None:
        return [{"type": "text", "text": text}]
    return [{"type": "tool_result", "tool_use_id": answering, "content": text}]


def _request(system: str, messages: list[dict[str, Any]], markers: bool) -> dict[str, Any]:
    """A deep copy of the history so far as a request, with Claude Code's markers or none."""
    history = json.loads(json.dumps(messages))
    system_block: dict[str, Any] = {"type": "text", "text": system}
    if markers:
        system_block["cache_control"] = dict(EPHEMERAL)
        history[-1]["content"][-1]["cache_control"] = dict(EPHEMERAL)
    return {
        "model": MODEL,
        "max_tokens": 4096,
        "system": [system_block],
        "tools": [BASH_TOOL],
        "messages": history,
    }


def convert(name: str, trajectory: dict[str, Any], markers: bool) -> AgentSession:
    """One trajectory as the requests of its steps."""
    raw = trajectory["messages"]
    if raw[0]["role"] != "system":
        raise ValueError(f"{name}: the first message is not the system prompt")
    system = str(raw[0]["content"])
    messages: list[dict[str, Any]] = []
    steps: list[Step] = []
    cache = PromptCache()
    pending: str | None = None  # the tool_use id the next user message answers
    for index, message in enumerate(raw[1:], start=1):
        if messages and messages[-1]["role"] == message["role"]:
            raise ValueError(f"{name}: messages {index - 1} and {index} are both {message['role']}")
        text = str(message["content"])
        if message["role"] == "assistant":
            content, command = _assistant_blocks(text, f"toolu_{index:04d}")
            body = _request(system, messages, markers)
            needed = frozenset(old_only(command, body)) if command is not None else frozenset()
            steps.append(Step(body, command, needed, cache.play(body)))
            messages.append({"role": "assistant", "content": content})
            pending = content[-1]["id"] if command is not None else None
        else:
            messages.append({"role": "user", "content": _user_blocks(text, pending)})
            pending = None
    return AgentSession(name, tuple(steps))


def load_sessions(folder: Path, markers: bool, limit: int = 0) -> list[AgentSession]:
    """Every *.traj.json of a folder, in name order; at most `limit` of them when it is set."""
    paths = sorted(folder.glob("*.traj.json"))
    if limit:
        paths = paths[:limit]
    return [
        convert(p.name.removesuffix(".traj.json"), json.loads(p.read_text(encoding="utf-8")), markers)
        for p in paths
    ]
