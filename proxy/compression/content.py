"""Reading the text out of messages, and cutting it into recallable units."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import attrs

from ..tokens import count_text
from .shape import ConversationShape
from .structure import blocks

# A recalled unit stays small enough to be worth its tokens; longer texts are split on lines.
UNIT_MAX_TOKENS = 200
# A text is recalled by paragraph: a message that pastes several turns or topics is several units,
# each quoted only when it matters, as a client's separate text blocks would be.
_PARAGRAPH_BREAK = re.compile(r"\n(?:[ \t]*\n)+")
_ATTACHMENTS = {
    "image": "image",
    "image_url": "image",
    "input_image": "image",
    "document": "document",
    "input_audio": "audio",
    "file": "file",
}


def _encodable(text: str) -> str:
    """The text with lone surrogates (JSON allows them, UTF-8 does not) as "?", so SQLite, Vidurai
    and the tokenizers all take it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


@attrs.frozen
class Piece:
    """One readable part of a message: its text and what it is (text, tool_use, tool_result, attachment)."""

    kind: str
    text: str = attrs.field(converter=_encodable)


def result_text(content: Any) -> str:
    """The readable text of a tool result's content (a string or a list of blocks)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for block in content:
            if isinstance(block, dict) and isinstance(block.get("text"), str):
                parts.append(block["text"])
            elif isinstance(block, dict) and block.get("type") in _ATTACHMENTS:
                parts.append(f"[{_ATTACHMENTS[str(block['type'])]}]")
            elif isinstance(block, str):
                parts.append(block)
        return "\n".join(parts)
    return "" if content is None else json.dumps(content, ensure_ascii=False, sort_keys=True)


def _attachment(block: dict[str, Any]) -> str:
    kind = _ATTACHMENTS[str(block.get("type"))]
    title = block.get("title")
    return f"[{kind}: {title}]" if isinstance(title, str) and title else f"[{kind}]"


def block_pieces(message: Any) -> list[Piece]:
    """The readable parts of a message's content blocks and tool calls, in order; thinking blocks are
    left out (never reused). Either provider's block types are read in either's messages: a body is
    read as it was sent, not as its API documents it."""
    if not isinstance(message, dict):
        return []
    found: list[Piece] = []
    for block in blocks(message):
        if isinstance(block, str):
            found.append(Piece("text", block))
            continue
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind in ("text", "input_text", "output_text") and isinstance(block.get("text"), str):
            found.append(Piece("text", block["text"]))
        elif kind == "tool_use":
            arguments = json.dumps(block.get("input", {}), ensure_ascii=False, sort_keys=True)
            found.append(Piece("tool_use", f"{block.get('name', '')} {arguments}"))
        elif kind == "tool_result":
            found.append(Piece("tool_result", result_text(block.get("content"))))
        elif kind in _ATTACHMENTS:
            found.append(Piece("attachment", _attachment(block)))
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            found.append(Piece("tool_use", f"{function.get('name', '')} {function.get('arguments', '')}"))
    return found


def split_long(text: str, max_tokens: int = UNIT_MAX_TOKENS) -> Iterator[str]:
    """A text as is when short, else in runs of whole lines of at most about max_tokens each."""
    total = count_text(text)
    if total <= max_tokens:
        yield text
        return
    # Sized in characters at the text's own chars-per-token: counting each line's tokens costs more.
    limit = max_tokens * len(text) / total
    run: list[str] = []
    size = 0
    for line in text.split("\n"):
        if run and size + len(line) + 1 > limit:
            yield "\n".join(run)
            run, size = [], 0
        run.append(line)
        size += len(line) + 1
    if run:
        yield "\n".join(run)


def units(shape: ConversationShape, message: Any) -> list[tuple[str, str]]:
    """(kind, text) units of a message for the recall index: texts and tool output, not attachments."""
    found: list[tuple[str, str]] = []
    for piece in shape.pieces(message):
        if piece.kind == "attachment" or not piece.text.strip():
            continue
        for paragraph in _PARAGRAPH_BREAK.split(piece.text) if piece.kind == "text" else [piece.text]:
            found.extend((piece.kind, part) for part in split_long(paragraph) if part.strip())
    return found


def query_text(shape: ConversationShape, message: Any) -> str:
    """What recall searches for: the last text a person wrote in the message (not tool results).

    Only the last text block: clients put reminders and pasted context first and the request last,
    and a chat whose latest message holds several turns asks about its last one.
    """
    texts = [p.text for p in shape.pieces(message) if p.kind == "text" and p.text.strip()]
    return texts[-1] if texts else ""
