"""Model-written digests ([compression] summarizer = model): which folded chunks use their summary.

A chunk's summary is written in the background by Vidurai's SemanticCompressor (proxy/summarizer.py)
once the chunk is whole, and stored by the chunk's key. Which digests of a fold are summaries is a
decision that must give the same bytes on every request, instance and restart while the provider
caches that prefix, so:

- with a prompt cache, it is made once per fold (the set of folded chunks): by the request that
  folds it, from the summaries stored at that moment, and stored itself (`fold_digests`). Every
  later request with the same fold reads it back, so a summary arriving later never rewrites a
  cached prefix; it is used from the next fold on, which rewrites that prefix anyway (on Claude a
  fold rewrites every digest after the system prompt's breakpoint; on OpenAI the digests before
  the new chunks are read again once at the input price);
- without one (nothing cached, every token paid each time) every stored summary is used at once.

The fold plan itself is always made with the extractive digests' sizes, so where a conversation
folds stays a pure function of its messages whatever summaries exist.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import attrs

from .digest import message_lines
from .shape import ConversationShape, ProviderName
from .structure import role
from .text import sha

# Replaces the extractive intro when summaries may be among the digests: constant too, so the first
# bytes of the folded prefix do not change as chunks are added.
MODEL_DIGEST_INTRO = (
    "[Vidurai proxy: earlier messages, folded to save tokens: each part either a summary of its "
    "messages written by a model, or their telling lines quoted verbatim, in order, … marking "
    "left-out text. Turns that matter to the latest message are quoted in full at its end.]"
)
EXTRACTIVE = "extractive"
MODEL = "model"


class SummaryBook(Protocol):
    """Where summaries and fold decisions are kept (the store's SummaryStore, proxy/storage/store.py)."""

    def summaries(self, keys: Sequence[str]) -> dict[str, str]: ...

    def fold(self, fold_key: str) -> tuple[str, ...] | None: ...

    def decide_fold(self, fold_key: str, summarized: Sequence[str], at: float) -> tuple[str, ...]: ...


@attrs.frozen
class SummaryJob:
    """A whole chunk with no summary yet: what the summarizer sends for it."""

    key: str
    provider: ProviderName  # whose model writes the summary
    lines: tuple[tuple[str, str], ...]  # (role, text) of each message, as the model reads them


def fold_key(keys: Sequence[str]) -> str:
    """What a fold's decision is filed under: the exact chunks it folds, in order."""
    return sha("fold\n" + "\n".join(keys))


def summary_lines(shape: ConversationShape, messages: list[Any]) -> tuple[tuple[str, str], ...]:
    """The chunk as the summarizing model reads it: what people wrote in full; tool calls and tool
    output as the extractive digest quotes them (their head and tail, their telling lines), so a
    chunk of large tool results costs a summary call no more than its digest would."""
    found: list[tuple[str, str]] = []
    for message in messages:
        speaker = role(message) or "user"
        tool_lines = any(p.kind in ("tool_use", "tool_result") for p in shape.pieces(message))
        if tool_lines:
            text = "\n".join(message_lines(shape, message))
        else:
            text = "\n\n".join(p.text for p in shape.pieces(message))
        if text.strip():
            found.append((speaker, text))
    return tuple(found)
