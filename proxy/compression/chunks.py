"""Where a conversation is cut: fixed chunk boundaries, the verbatim tail and the folded prefix."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import attrs

from .policy import UNCACHED, CachePrices, History, frontier
from .shape import ConversationShape
from .structure import has_thinking, is_plain_user, leading_instructions, role


@attrs.frozen
class Plan:
    """How one request is split.

    messages[start:folded_end] fold into digests, chunk by chunk; messages[folded_end:verbatim] stay,
    their large tool results cut when `cut_tools`; messages[verbatim:] are forwarded exactly as sent.
    """

    start: int  # first foldable message (after the task and OpenAI's leading instructions)
    boundaries: tuple[int, ...]  # chunk starts, then the end of the folded part
    verbatim: int  # first message of the verbatim window
    cut_tools: bool  # whether messages[folded_end:verbatim] have their large tool results cut
    partial: bool = False  # the last folded chunk is the part of one reached so far
    complete: tuple[int, ...] = ()  # the boundaries of every whole chunk before the fold limit

    @property
    def folded_end(self) -> int:
        return self.boundaries[-1]

    @property
    def chunks(self) -> list[tuple[int, int]]:
        return list(itertools.pairwise(self.boundaries))


def verbatim_start(
    shape: ConversationShape, messages: list[Any], start: int, keep_recent: int, end: int
) -> int:
    """First message of the verbatim window of messages[:end]: its last keep_recent, widened so no
    tool pair is split."""
    index = max(start, end - keep_recent)
    while index > start and shape.is_dependent(messages[index]):
        index -= 1
    return index


class FoldLimits:
    """How far folding may reach in a request ending at any message: before its verbatim window, and
    not into the latest assistant turn when that turn thinks.

    The turn runs from the latest message a person wrote; its thinking blocks must reach the
    provider whole, so none of its messages is folded (its old tool results may still be cut).
    For one end it looks back from there; replaying every end computes all at once, in linear time.
    """

    def __init__(self, shape: ConversationShape, messages: list[Any], start: int, keep_recent: int) -> None:
        self._shape, self._messages = shape, messages
        self._start, self._keep = start, keep_recent
        self._turn: list[int | None] = []  # latest plain user message at or before each index
        self._thinking = [0]  # messages with thinking blocks before each index

    def _index(self) -> None:
        turn: int | None = None
        for index, message in enumerate(self._messages):
            if is_plain_user(self._shape, message):
                turn = index
            self._turn.append(turn)
            self._thinking.append(self._thinking[-1] + has_thinking(message))

    def verbatim(self, end: int) -> int:
        return verbatim_start(self._shape, self._messages, self._start, self._keep, end)

    def __call__(self, last: int) -> int:
        """The fold limit of a request whose last message is messages[last]."""
        verbatim = self.verbatim(last + 1)
        if self._turn:
            turn = self._turn[last]
            thinks = turn is not None and self._thinking[last + 1] > self._thinking[turn]
        else:
            messages = self._messages
            turn = next((i for i in range(last, -1, -1) if is_plain_user(self._shape, messages[i])), None)
            thinks = turn is not None and any(has_thinking(m) for m in messages[turn : last + 1])
        return turn if turn is not None and turn < verbatim and thinks else verbatim

    def replaying(self) -> FoldLimits:
        """The same limits, indexed for asking them at every end of the conversation."""
        if not self._turn:
            self._index()
        return self


def cut_points(shape: ConversationShape, messages: list[Any], start: int, limit: int) -> list[int]:
    """Where a fold may end, up to `limit`: before an assistant message with no tool call left open,
    so the digest can be a user message and every tool pair stays on one side of the cut."""
    found: list[int] = []
    pending: set[str] = set()
    for index in range(start, min(limit, len(messages) - 1) + 1):
        message = messages[index]
        if not pending and role(message) == "assistant":
            found.append(index)
        pending.difference_update(shape.answered_ids(message))
        opened = shape.opened_ids(message)
        if opened:
            pending = set(opened)  # an earlier unanswered call is the client's error, not ours to fix
    return found


def chunk_starts(points: list[int], start: int, chunk: int) -> list[int]:
    """Chunk boundaries among the cut points: each at least `chunk` messages after the one before.

    Each is decided by the messages before it only, so boundaries never move as a conversation grows.
    """
    found = [start]
    for point in points:
        if point - found[-1] >= chunk:
            found.append(point)
    return found


def request_ends(messages: list[Any]) -> list[int]:
    """Messages an earlier request of this conversation ended on: each one a user (or OpenAI tool)
    message followed by the assistant's answer, and the last message itself."""
    ends = [
        index
        for index in range(len(messages) - 1)
        if role(messages[index]) in ("user", "tool") and role(messages[index + 1]) == "assistant"
    ]
    return [*ends, len(messages) - 1]


def first_foldable(shape: ConversationShape, messages: list[Any]) -> int:
    """The first message that may fold: after OpenAI's leading instructions and after the task (the
    first message a person wrote), which every later turn of an agent works from."""
    start = leading_instructions(shape, messages)
    if start < len(messages) and is_plain_user(shape, messages[start]):
        start += 1
    return start


def plan(
    shape: ConversationShape,
    messages: list[Any],
    keep_recent: int,
    chunk: int,
    prices: CachePrices,
    history: History,
    digest_tokens: Callable[[int, int], int],
) -> Plan:
    """The cut of this request.

    Without a prompt cache, everything before the fold limit folds: whole chunks, then the part of a
    chunk reached so far, with large tool results cut up to the verbatim window. With one, whole
    chunks fold only at the requests where policy.fold_pays says a fold pays, and nothing else
    changes between folds, so the prefix the provider cached stays byte for byte the same.
    """
    start = first_foldable(shape, messages)
    limits = FoldLimits(shape, messages, start, keep_recent)
    last = len(messages) - 1
    limit = limits(last)
    points = cut_points(shape, messages, start, limit)
    starts = chunk_starts(points, start, chunk)
    verbatim = limits.verbatim(last + 1)
    if prices == UNCACHED:
        end = points[-1] if points else start
        if end == starts[-1]:
            return Plan(start, tuple(starts), verbatim, True, complete=tuple(starts))
        return Plan(start, (*starts, end), verbatim, True, partial=True, complete=tuple(starts))

    def chunk_digest(k: int) -> int:
        return digest_tokens(starts[k], starts[k + 1])

    reach = frontier(prices, history, starts, chunk_digest, limits.replaying())
    return Plan(start, tuple(starts[: reach + 1]), verbatim, False, complete=tuple(starts))
