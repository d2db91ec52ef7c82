"""The parts of a message every provider shares (role, content blocks, thinking blocks), and the
turn structure read through a provider's conversation shape."""

from __future__ import annotations

from typing import Any

from .shape import ConversationShape

THINKING_TYPES = frozenset({"thinking", "redacted_thinking"})


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


def has_thinking(message: Any) -> bool:
    return any(isinstance(b, dict) and b.get("type") in THINKING_TYPES for b in blocks(message))


def thinking_blocks(messages: list[Any]) -> list[Any]:
    return [b for m in messages for b in blocks(m) if isinstance(b, dict) and b.get("type") in THINKING_TYPES]


def is_plain_user(shape: ConversationShape, message: Any) -> bool:
    """A user message written by the person (not only tool results): where a new turn begins."""
    return role(message) == "user" and not shape.answered_ids(message)


def leading_instructions(shape: ConversationShape, messages: list[Any]) -> int:
    """How many instruction messages (OpenAI's system/developer) open the list: never folded."""
    count = 0
    while count < len(messages) and shape.is_instruction(messages[count]):
        count += 1
    return count


def problems(shape: ConversationShape, messages: Any) -> list[str]:
    """Why a message list would be rejected by the provider (empty when it is valid)."""
    if not isinstance(messages, list) or not messages:
        return ["messages_not_a_list"]
    if not all(isinstance(m, dict) for m in messages):
        return ["message_not_an_object"]
    return shape.problems(messages)
