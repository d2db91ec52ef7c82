"""What makes a message list valid for each provider: tool pairs, thinking blocks, role order."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

Provider = Literal["anthropic", "openai"]

THINKING_TYPES = frozenset({"thinking", "redacted_thinking"})
# OpenAI roles that are instructions rather than turns of the conversation.
INSTRUCTION_ROLES = frozenset({"system", "developer"})
_OPENAI_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
_ANTHROPIC_ROLES = frozenset({"user", "assistant"})


def blocks(message: Any) -> list[Any]:
    """The content blocks of a message; a string content counts as one text block."""
    if not isinstance(message, dict):
        return []
    content = message.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return content if isinstance(content, list) else []


def role(message: Any) -> str:
    return str(message.get("role")) if isinstance(message, dict) else ""


def _typed(message: Any, kind: str) -> Iterator[dict[str, Any]]:
    for block in blocks(message):
        if isinstance(block, dict) and block.get("type") == kind:
            yield block


def opened_ids(provider: Provider, message: Any) -> list[str]:
    """Tool call ids this message opens (they must be answered by the next message or messages)."""
    if role(message) != "assistant":
        return []
    if provider == "anthropic":
        return [str(b.get("id")) for b in _typed(message, "tool_use")]
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        return [""]
    return [str(c.get("id")) if isinstance(c, dict) else "" for c in calls]


def answered_ids(provider: Provider, message: Any) -> list[str]:
    """Tool call ids this message answers."""
    if provider == "anthropic":
        if role(message) != "user":
            return []
        return [str(b.get("tool_use_id")) for b in _typed(message, "tool_result")]
    return [str(message.get("tool_call_id"))] if role(message) == "tool" else []


def is_dependent(provider: Provider, message: Any) -> bool:
    """A message that cannot start a window because it answers the one before it."""
    if provider == "anthropic":
        return bool(answered_ids(provider, message))
    return role(message) in ("tool", "function")


def has_thinking(message: Any) -> bool:
    return any(isinstance(b, dict) and b.get("type") in THINKING_TYPES for b in blocks(message))


def is_plain_user(provider: Provider, message: Any) -> bool:
    """A user message written by the person (not only tool results): where a new turn begins."""
    return role(message) == "user" and not answered_ids(provider, message)


def leading_instructions(provider: Provider, messages: list[Any]) -> int:
    """How many OpenAI system/developer messages open the list (they are never folded)."""
    if provider != "openai":
        return 0
    count = 0
    while count < len(messages) and role(messages[count]) in INSTRUCTION_ROLES:
        count += 1
    return count


def problems(provider: Provider, messages: Any) -> list[str]:
    """Why a message list would be rejected by the provider (empty when it is valid)."""
    if not isinstance(messages, list) or not messages:
        return ["messages_not_a_list"]
    if not all(isinstance(m, dict) for m in messages):
        return ["message_not_an_object"]
    return _anthropic_problems(messages) if provider == "anthropic" else _openai_problems(messages)


def _anthropic_problems(messages: list[dict[str, Any]]) -> list[str]:
    found: list[str] = []
    if role(messages[0]) != "user":
        found.append("first_not_user")
    previous_role = ""
    pending: set[str] = set()
    for message in messages:
        current = role(message)
        if current not in _ANTHROPIC_ROLES:
            found.append("unknown_role")
        if not isinstance(message.get("content"), (str, list)):
            found.append("bad_content")
        if current == previous_role:
            found.append("roles_not_alternating")
        answered = answered_ids("anthropic", message)
        if set(answered) != pending:
            found.append("tool_pair_broken")
        if answered and any(
            not (isinstance(b, dict) and b.get("type") == "tool_result")
            for b in blocks(message)[: len(answered)]
        ):
            found.append("tool_result_not_first")
        pending = set(opened_ids("anthropic", message))
        previous_role = current
    return found


def _openai_problems(messages: list[dict[str, Any]]) -> list[str]:
    found: list[str] = []
    pending: set[str] = set()
    for message in messages:
        current = role(message)
        if current not in _OPENAI_ROLES:
            found.append("unknown_role")
        if current == "tool":
            call_id = str(message.get("tool_call_id"))
            if call_id not in pending:
                found.append("tool_message_orphan")
            pending.discard(call_id)
            continue
        if pending:
            found.append("tool_call_unanswered")
        pending = set(opened_ids("openai", message))
    if pending:
        found.append("tool_call_unanswered")
    return found


def cache_markers(messages: list[Any]) -> list[dict[str, Any]]:
    """The cache_control markers set on message blocks, in order."""
    return [
        b["cache_control"]
        for m in messages
        for b in blocks(m)
        if isinstance(b, dict) and isinstance(b.get("cache_control"), dict)
    ]


def markers_ordered(markers: list[dict[str, Any]]) -> bool:
    """Anthropic wants longer-lived cache entries before shorter ones: no 1h marker after a 5m one."""
    seen_short = False
    for marker in markers:
        long_lived = marker.get("ttl") == "1h"
        if long_lived and seen_short:
            return False
        seen_short = seen_short or not long_lived
    return True


def thinking_blocks(messages: list[Any]) -> list[Any]:
    return [b for m in messages for b in blocks(m) if isinstance(b, dict) and b.get("type") in THINKING_TYPES]
