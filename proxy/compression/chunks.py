"""Where a conversation is cut: fixed chunk boundaries, the verbatim tail and the folded prefix."""

from __future__ import annotations

import itertools
from typing import Any

import attrs

from .structure import (
    Provider,
    answered_ids,
    has_thinking,
    is_dependent,
    is_plain_user,
    leading_instructions,
    opened_ids,
    role,
)


@attrs.frozen
class Plan:
    """How one request is split.

    messages[start:folded_end] fold into digests, chunk by chunk; messages[folded_end:verbatim] stay
    but their large tool results are cut; messages[verbatim:] are forwarded exactly as sent.
    """

    start: int  # first conversation message (after OpenAI's leading system/developer messages)
    boundaries: tuple[int, ...]  # chunk starts, then the end of the last folded chunk
    verbatim: int  # first message of the verbatim window

    @property
    def folded_end(self) -> int:
        return self.boundaries[-1]

    @property
    def chunks(self) -> list[tuple[int, int]]:
        return list(itertools.pairwise(self.boundaries))


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


def verbatim_start(provider: Provider, messages: list[Any], start: int, keep_recent: int) -> int:
    """First message of the verbatim window: the last keep_recent, widened so no tool pair is split."""
    index = max(start, len(messages) - keep_recent)
    while index > start and is_dependent(provider, messages[index]):
        index -= 1
    return index


def fold_limit(provider: Provider, messages: list[Any], start: int, verbatim: int) -> int:
    """How far folding may reach: not into the latest assistant turn when that turn thinks.

    The turn runs from the latest message a person wrote; its thinking blocks must reach the provider
    whole, so none of its messages is folded (its old tool results may still be cut).
    """
    turn = next(
        (i for i in range(len(messages) - 1, start - 1, -1) if is_plain_user(provider, messages[i])), None
    )
    if turn is not None and turn < verbatim and any(has_thinking(m) for m in messages[turn:]):
        return turn
    return verbatim


def plan(provider: Provider, messages: list[Any], keep_recent: int, chunk: int) -> Plan:
    """The cut of this request: whole chunks that end before the fold limit are folded."""
    start = leading_instructions(provider, messages)
    verbatim = verbatim_start(provider, messages, start, keep_recent)
    limit = fold_limit(provider, messages, start, verbatim)
    return Plan(start, tuple(boundaries(provider, messages, start, chunk, limit)), verbatim)
