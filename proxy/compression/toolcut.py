"""Large old tool results cut to their head and tail, with a marker saying how much was removed."""

from __future__ import annotations

from typing import Any

from ..tokens import count_text
from .shape import ConversationShape


def cut_text(text: str, max_tokens: int) -> str:
    """The text itself when it fits, else its head and tail around a marker; a pure function."""
    total = count_text(text)
    if total <= max_tokens:
        return text
    chars_per_token = len(text) / total
    keep = max(1, int(max_tokens * chars_per_token / 2))
    head, tail = text[:keep], text[-keep:]
    # End on whole lines when a line break is near, so the model does not read half a line as data.
    cut = head.rfind("\n")
    if cut > keep // 2:
        head = head[: cut + 1]
    cut = tail.find("\n")
    if 0 <= cut < keep // 2:
        tail = tail[cut + 1 :]
    removed = text[len(head) : len(text) - len(tail)]
    lines = removed.count("\n") + 1
    marker = (
        f"\n[... {count_text(removed)} tokens ({lines} lines, {len(removed)} chars)"
        " of this old tool result removed by the Vidurai proxy ...]\n"
    )
    return head + marker + tail


def _cut_content(content: Any, max_tokens: int) -> Any:
    """A tool result's content with its long texts cut; the same object when nothing changed."""
    if isinstance(content, str):
        cut = cut_text(content, max_tokens)
        return content if cut is content else cut
    if not isinstance(content, list):
        return content
    changed = False
    out = []
    for block in content:
        if isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str):
            cut = cut_text(block["text"], max_tokens)
            if cut is not block["text"]:
                block = {**block, "text": cut}
                changed = True
        out.append(block)
    return out if changed else content


def cut_tool_results(shape: ConversationShape, message: Any, max_tokens: int) -> Any:
    """The message with its long tool results cut; the very same object when nothing was cut."""
    return shape.with_tool_results(message, lambda content: _cut_content(content, max_tokens))
