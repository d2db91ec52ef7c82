"""OpenAI Chat Completions as compression reads and writes them: tool calls on the assistant message,
each answered by a tool message of its own; system and developer messages among the turns."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..compression.content import Piece, block_pieces, result_text
from ..compression.shape import ProviderName
from ..compression.structure import role

# Roles that are instructions rather than turns of the conversation.
INSTRUCTION_ROLES = frozenset({"system", "developer"})
# Messages that are a tool's answer as a whole ("function": the deprecated function-calling form).
_TOOL_ROLES = ("tool", "function")
_ROLES = frozenset({*INSTRUCTION_ROLES, "user", "assistant", *_TOOL_ROLES})


class OpenAIShape:
    """Tool calls are the `tool_calls` of an assistant message, each answered by one tool message."""

    name: ProviderName = "openai"

    def pieces(self, message: Any) -> list[Piece]:
        if role(message) in _TOOL_ROLES:
            return [Piece("tool_result", result_text(message.get("content")))]
        return block_pieces(message)

    def opened_ids(self, message: Any) -> list[str]:
        if role(message) != "assistant":
            return []
        calls = message.get("tool_calls") or []
        if not isinstance(calls, list):
            return [""]  # malformed: an id no message answers, so the pair counts as open
        return [str(c.get("id")) if isinstance(c, dict) else "" for c in calls]

    def answered_ids(self, message: Any) -> list[str]:
        return [str(message.get("tool_call_id"))] if role(message) == "tool" else []

    def is_dependent(self, message: Any) -> bool:
        return role(message) in _TOOL_ROLES

    def is_instruction(self, message: Any) -> bool:
        return role(message) in INSTRUCTION_ROLES

    def problems(self, messages: list[dict[str, Any]]) -> list[str]:
        found: list[str] = []
        pending: set[str] = set()
        for message in messages:
            current = role(message)
            if current not in _ROLES:
                found.append("unknown_role")
            if current == "tool":
                call_id = str(message.get("tool_call_id"))
                if call_id not in pending:
                    found.append("tool_message_orphan")
                pending.discard(call_id)
                continue
            if pending:
                found.append("tool_call_unanswered")
            pending = set(self.opened_ids(message))
        if pending:
            found.append("tool_call_unanswered")
        return found

    def rewrite_problem(self, original: list[Any], rewritten: list[Any]) -> str | None:
        return None  # the prompt cache needs no markers: nothing beyond problems() to break

    def with_tool_results(self, message: Any, change: Callable[[Any], Any]) -> Any:
        if role(message) not in _TOOL_ROLES:
            return message
        content = change(message.get("content"))
        return message if content is message.get("content") else {**message, "content": content}

    def with_digests(self, out: list[Any], texts: list[str], folded: list[Any], kept: list[Any]) -> list[Any]:
        """The digests as one user message of their own: consecutive user messages are allowed."""
        return [*out, {"role": "user", "content": "\n\n".join(texts)}]

    def with_text(self, message: Any, text: str) -> Any:
        content = message.get("content")
        if isinstance(content, str):
            return {**message, "content": content + "\n\n" + text}
        if isinstance(content, list):
            return {**message, "content": [*content, {"type": "text", "text": text}]}
        return message
