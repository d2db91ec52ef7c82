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
import keyword
import re
from pathlib import Path
from typing import Any

import attrs

from .measures import text_of

DEFAULT_SWE_AGENT = "../shared/datasets/swe-agent-dev"
MODEL = "claude-sonnet-4-5"
MARKER = {"type": "ephemeral"}
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
# The README's definition: "the last six messages" hold what the agent just saw.
RECENT_MESSAGES = 6


@attrs.frozen
class Step:
    """One request of a session and the command the agent actually ran after it (None: no command)."""

    body: dict[str, Any]
    next_command: str | None


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
        system_block["cache_control"] = dict(MARKER)
        history[-1]["content"][-1]["cache_control"] = dict(MARKER)
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
    pending: str | None = None  # the tool_use id the next user message answers
    for index, message in enumerate(raw[1:], start=1):
        text = str(message["content"])
        if message["role"] == "assistant":
            content, command = _assistant_blocks(text, f"toolu_{index:04d}")
            steps.append(Step(_request(system, messages, markers), command))
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


# --- identifiers the next command used ------------------------------------------------------------

# Commands and words of the shell and of the Python one-liners agents run; they name no project thing.
SHELL_WORDS = frozenset(
    """grep egrep sed awk cat echo head tail find xargs sort uniq less more python python3 pip bash
    true false then else elif done while until case esac function exit sudo chmod touch mkdir rmdir
    cp mv rm ls cd pwd wc diff patch git nl tee printf read test export source env time timeout
    perl print self none null test""".split()
) | frozenset(w.lower() for w in keyword.kwlist)
# In this order, each match masked before the next pattern looks: a path is one identifier, not
# its parts. Paths have a slash; dotted names a dot between names; plain identifiers 4+ characters
# (not an option like --include); numbers 2+ digits (line numbers like the 225 of sed -n '210,225p').
IDENTIFIER_PATTERNS = (
    re.compile(r"(?:[\w.-]*/)+[\w.-]*\w"),
    re.compile(r"\b[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+\b"),
    re.compile(r"(?<![\w-])[A-Za-z_]\w{3,}\b"),
    re.compile(r"(?<![\w.])\d{2,}(?!\d)"),
)


def identifiers(command: str) -> set[str]:
    """Paths, dotted names, identifiers of 4+ characters and numbers of 2+ digits in a command."""
    found: set[str] = set()
    for pattern in IDENTIFIER_PATTERNS:
        for match in pattern.finditer(command):
            found.add(match.group().strip("./-") or match.group())
        command = pattern.sub(lambda m: " " * len(m.group()), command)
    return {i for i in found if i.lower() not in SHELL_WORDS and len(i) >= 2}


def _word_character(text: str, index: int) -> bool:
    return 0 <= index < len(text) and (
        text[index] == "_" or (text[index].isascii() and text[index].isalnum())
    )


def occurs(identifier: str, text: str) -> bool:
    """The identifier appears in the text, not as part of a longer word or number."""
    start = text.find(identifier)
    while start != -1:
        if not _word_character(text, start - 1) and not _word_character(text, start + len(identifier)):
            return True
        start = text.find(identifier, start + 1)
    return False


def old_only(command: str, body: dict[str, Any]) -> set[str]:
    """The next command's identifiers that only older history holds: present in the request outside
    its last six messages and its system prompt, absent from both of those."""
    messages = body["messages"]
    old = text_of(messages[:-RECENT_MESSAGES])
    seen = text_of([body.get("system"), messages[-RECENT_MESSAGES:]])
    return {i for i in identifiers(command) if occurs(i, old) and not occurs(i, seen)}


@attrs.define
class Support:
    """Next-action support summed over steps: identifiers kept, and steps with every one kept."""

    identifiers: int = 0
    kept: int = 0
    steps: int = 0  # steps with at least one identifier only older history held
    full: int = 0

    def add(self, step: Step, forwarded: dict[str, Any]) -> None:
        if step.next_command is None:
            return
        needed = old_only(step.next_command, step.body)
        if not needed:
            return
        text = text_of(forwarded.get("messages"))
        kept = sum(occurs(i, text) for i in needed)
        self.identifiers += len(needed)
        self.kept += kept
        self.steps += 1
        self.full += kept == len(needed)
