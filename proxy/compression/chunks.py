"""Where a conversation is cut: fixed chunk boundaries, the verbatim tail and the folded prefix."""

from __future__ import annotations

from typing import Any

import attrs

from .structure import Provider, answered_ids, has_thinking, is_dependent, is_plain_user, leading_instructions, \
    opened_ids, role


@attrs.frozen
class Plan:
    """How one request is split: messages[start:folded_end] fold in chunks, messages[recent:] stay verbatim."""

    start: int  # first conversation message (after OpenAI's leading system/developer messages)
    boundaries: tuple[int, ...]  # chunk starts, then the end of the last folded chunk
    recent: int  # first message of the verbatim window

    @property
    def folded_end(self) -> int:
        return self.boundaries[-1]

    @property
    def chunks(self) -> list[tuple[int, int]]:
        return list(zip(self.boundaries, self.boundaries[1:]))


def boundaries(provider: Provider, messages: list[Any], start: int, chunk: int, limit: int) -> list[int]:
    """Chunk starts up to `limit`, each decided by the messages before it only, so they never move.

    A chunk ends just before an assistant message with no tool call left open, so the digest that
    replaces it can be a user message and every tool pair stays on one side of the cut.
    """
    found = [start]
    pending: set[str] = set()
    for index in range(start, min(limit, len(messages) - 1) + 1):
        message = messages[index]
        if index - found[-1] >= chunk and not pending and role(message) == "assistant":
            found.append(index)
        pending.difference_update(answered_ids(provider, message))
        opened = opened_ids(provider, message)
        if opened:
            pending = set(opened)  # an earlier unanswered call is the client's error, not ours to fix
    return found


def recent_start(provider: Provider, messages: list[Any], start: int, keep_recent: int) -> int:
    """First message of the verbatim window: the last keep_recent, widened over tool pairs and thinking."""
    index = max(start, len(messages) - keep_recent)
    while index > start and is_dependent(provider, messages[index]):
        index -= 1
    # The latest assistant turn runs from the latest message a person wrote; if it thinks, keep all of it.
    turn = next((i for i in range(len(messages) - 1, start - 1, -1) if is_plain_user(provider, messages[i])), None)
    if turn is not None and turn < index and any(has_thinking(m) for m in messages[turn:]):
        index = turn
    return index


def plan(provider: Provider, messages: list[Any], keep_recent: int, chunk: int) -> Plan:
    """The cut of this request: whole chunks that end before the verbatim window are folded."""
    start = leading_instructions(provider, messages)
    recent = recent_start(provider, messages, start, keep_recent)
    return Plan(start=start, boundaries=tuple(boundaries(provider, messages, start, chunk, recent)), recent=recent)
