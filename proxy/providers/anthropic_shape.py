"""Anthropic Messages as compression reads and writes them: tool pairs as blocks, alternating roles,
cache_control markers on blocks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from ..compression.content import Piece, block_pieces
from ..compression.shape import ProviderName
from ..compression.structure import blocks, role

_ROLES = frozenset({"user", "assistant"})


def _typed(message: Any, kind: str) -> Iterator[dict[str, Any]]:
    for block in blocks(message):
        if isinstance(block, dict) and block.get("type") == kind:
            yield block


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


class AnthropicShape:
    """Tool calls are tool_use blocks of an assistant message, answered by tool_result blocks that
    open the next user message; the system prompt is outside the messages."""

    name: ProviderName = "anthropic"

    def pieces(self, message: Any) -> list[Piece]:
        return block_pieces(message)

    def opened_ids(self, message: Any) -> list[str]:
        if role(message) != "assistant":
            return []
        return [str(b.get("id")) for b in _typed(message, "tool_use")]

    def answered_ids(self, message: Any) -> list[str]:
        if role(message) != "user":
            return []
        return [str(b.get("tool_use_id")) for b in _typed(message, "tool_result")]

    def is_dependent(self, message: Any) -> bool:
        return bool(self.answered_ids(message))

    def is_instruction(self, message: Any) -> bool:
        return False  # instructions are the request's `system`, never a message

    def problems(self, messages: list[dict[str, Any]]) -> list[str]:
        found: list[str] = []
        if role(messages[0]) != "user":
            found.append("first_not_user")
        previous_role = ""
        pending: set[str] = set()
        for message in messages:
            current = role(message)
            if current not in _ROLES:
                found.append("unknown_role")
            if not isinstance(message.get("content"), (str, list)):
                found.append("bad_content")
            if current == previous_role:
                found.append("roles_not_alternating")
            answered = self.answered_ids(message)
            if set(answered) != pending:
                found.append("tool_pair_broken")
            if answered and any(
                not (isinstance(b, dict) and b.get("type") == "tool_result")
                for b in blocks(message)[: len(answered)]
            ):
                found.append("tool_result_not_first")
            pending = set(self.opened_ids(message))
            previous_role = current
        return found

    def rewrite_problem(self, original: list[Any], rewritten: list[Any]) -> str | None:
        """A cache breakpoint added, or put out of the order the API requires."""
        markers = cache_markers(rewritten)
        original_markers = cache_markers(original)
        if len(markers) > len(original_markers):
            return "cache_markers_added"
        if markers_ordered(original_markers) and not markers_ordered(markers):
            return "cache_markers_misordered"
        return None

    def with_tool_results(self, message: Any, change: Callable[[Any], Any]) -> Any:
        if not isinstance(message, dict):
            return message
        content = message.get("content")
        if role(message) != "user" or not isinstance(content, list):
            return message
        changed = False
        out = []
        for block in content:
            if isinstance(block, dict) and block.get("type") == "tool_result":
                inner = change(block.get("content"))
                if inner is not block.get("content"):
                    block = {**block, "content": inner}
                    changed = True
            out.append(block)
        return {**message, "content": out} if changed else message

    def with_digests(self, out: list[Any], texts: list[str], folded: list[Any], kept: list[Any]) -> list[Any]:
        """The digests join the task's own user message as text blocks: roles must alternate, and a
        fold always ends before an assistant message."""
        content: list[dict[str, Any]] = [{"type": "text", "text": text} for text in texts]
        removed = cache_markers(folded)
        if removed:
            # A cache breakpoint that sat in the folded part moves to the end of the digests, where the
            # stable prefix ends, so the client keeps as many breakpoints as it set and no more.
            marker = next((m for m in removed if m.get("ttl") == "1h"), removed[-1])
            if markers_ordered([*cache_markers(out), marker, *cache_markers(kept)]):
                content[-1] = {**content[-1], "cache_control": marker}
        task = out[-1] if out else None
        if role(task) != "user":
            return [*out, {"role": "user", "content": content}]
        assert isinstance(task, dict)
        own = task.get("content")
        blocks_before = [{"type": "text", "text": own}] if isinstance(own, str) else list(own or [])
        return [*out[:-1], {**task, "content": [*blocks_before, *content]}]

    def with_text(self, message: Any, text: str) -> Any:
        content = message.get("content")
        if isinstance(content, str):
            return {**message, "content": [{"type": "text", "text": content}, {"type": "text", "text": text}]}
        if isinstance(content, list):
            return {**message, "content": [*content, {"type": "text", "text": text}]}
        return message
