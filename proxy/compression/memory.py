"""A session's memory: its folded chunks, the recall index and the summaries Vidurai wrote of them."""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import attrs

from ..records import MemoryRow
from ..tokens import count_message, count_text
from .content import units
from .digest import digest, importance
from .recall import RecallIndex
from .shape import ConversationShape
from .structure import role
from .summaries import SummaryBook
from .text import canonical, dates, sha

SNAPSHOT_VERSION = 1
# Chunks of histories a client has since rewritten stay cached until this many newer ones push them out.
MAX_CHUNKS = 4096
# Fold decisions held: a conversation asks for its latest fold only, or an earlier one when a client
# rewinds; the rest are in the database.
MAX_FOLDS = 8


@attrs.frozen
class Unit:
    """One remembered piece of a folded message, as recall quotes it."""

    position: int
    role: str
    kind: str
    text: str
    date: str | None  # the last date written in the chunk up to this unit, if any
    importance: float


@attrs.frozen
class Chunk:
    """A folded chunk: its digest (the bytes forwarded in its place) and its units."""

    key: str
    start: int
    end: int
    digest: str
    units: tuple[Unit, ...]
    docs: tuple[int, ...]  # the recall index id of each unit
    tokens: int  # estimated tokens of the messages it stands for

    @property
    def digest_tokens(self) -> int:
        return count_text(self.digest)

    @property
    def last_date(self) -> str | None:
        return next((u.date for u in reversed(self.units) if u.date), None)


def chunk_key(shape: ConversationShape, messages: list[Any], start: int) -> str:
    """What a chunk's cached work is filed under: its provider, position and exact messages."""
    return sha(f"{shape.name}\n{start}\n{canonical(messages)}")


def _units_of(shape: ConversationShape, messages: list[Any], start: int) -> list[Unit]:
    found: list[Unit] = []
    current: str | None = None
    for offset, message in enumerate(messages):
        for kind, text in units(shape, message):
            written = dates(text)
            if written:
                current = written[-1]
            found.append(Unit(start + offset, role(message), kind, text, current, importance(text)))
    return found


class SessionMemory:
    """One per session: a cache of work done, never the source of the prefix.

    What it holds is what compress() reads: the folded chunks (digest, units), the recall index over
    their units, and with summarizer = model the summaries Vidurai's SemanticCompressor wrote of its
    chunks and the fold decisions read from the database. It used to wrap vidurai 1.5's ViduraiMemory
    too, a copy of every unit in three layers that nothing read: LoCoMo conv-41 played turn by turn
    held 1.29 MiB with it and 0.99 MiB without, its snapshot 302 KiB and now 143 KiB (tracemalloc).
    """

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.index = RecallIndex()
        self._chunks: OrderedDict[str, Chunk] = OrderedDict()
        self._rows: list[MemoryRow] = []
        self._summaries: dict[str, str] = {}  # chunk key -> its stored summary
        self._folds: OrderedDict[str, tuple[str, ...]] = OrderedDict()  # fold key -> summarized chunks
        self._requested: set[str] = set()  # chunks handed to the summarizer by this memory

    def chunk(
        self, shape: ConversationShape, messages: list[Any], start: int, remember_digest: bool = True
    ) -> Chunk:
        """The folded form of messages[start:start+len], computed once and then reused.

        `remember_digest=False` for the part of a chunk folded so far, which changes every turn: its
        turns are remembered, its passing digest is not stored.
        """
        key = chunk_key(shape, messages, start)
        cached = self._chunks.get(key)
        if cached is not None:
            return cached
        found = _units_of(shape, messages, start)
        made = Chunk(
            key,
            start,
            start + len(messages),
            digest(shape, messages),
            tuple(found),
            tuple(self._remember(unit) for unit in found),
            sum(count_message(m) for m in messages),
        )
        self._store(made)
        if remember_digest:
            self._rows.append(
                MemoryRow(
                    self.session_id, start, "user", "digest", 1.0, made.digest, sha(made.digest), time.time()
                )
            )
        return made

    def _store(self, chunk: Chunk) -> None:
        self._chunks[chunk.key] = chunk
        while len(self._chunks) > MAX_CHUNKS:
            self._chunks.popitem(last=False)

    def _remember(self, unit: Unit) -> int:
        known = len(self.index)
        doc = self.index.add(unit.text)
        if doc == known:  # a text seen for the first time in this session
            self._rows.append(
                MemoryRow(
                    self.session_id,
                    unit.position,
                    unit.role,
                    "turn",
                    unit.importance,
                    unit.text,
                    sha(unit.text),
                    time.time(),
                )
            )
        return doc

    def summaries(self, keys: Sequence[str], book: SummaryBook) -> dict[str, str]:
        """The stored summaries of these chunks; the database is asked only for those not known here."""
        missing = [key for key in keys if key not in self._summaries]
        if missing:
            self._summaries.update(book.summaries(missing))
            while len(self._summaries) > MAX_CHUNKS:
                del self._summaries[next(iter(self._summaries))]
        return {key: self._summaries[key] for key in keys if key in self._summaries}

    def fold_summarized(self, keys: Sequence[str], book: SummaryBook, fold: str) -> tuple[str, ...]:
        """The chunks whose digest is their summary in the fold of `keys` (filed as `fold`): as
        recorded, or decided now from the summaries stored and recorded (see compression/summaries.py)."""
        held = self._folds.get(fold)
        if held is None:
            held = book.fold(fold)
            if held is None:
                held = book.decide_fold(fold, list(self.summaries(keys, book)), time.time())
            self._folds[fold] = held
            while len(self._folds) > MAX_FOLDS:
                self._folds.popitem(last=False)
        return held

    def to_summarize(self, keys: Sequence[str]) -> list[str]:
        """Those of these chunks with no known summary that this memory has not asked for yet; each is
        asked for once per memory (a failed summary leaves the extractive digest, not a retry loop)."""
        wanted = [key for key in keys if key not in self._summaries and key not in self._requested]
        self._requested.update(wanted)
        return wanted

    def drain_memory_rows(self) -> list[MemoryRow]:
        """Rows for the `memories` table added since the last call."""
        rows, self._rows = self._rows, []
        return rows

    def snapshot(self) -> str:
        """The session's state as JSON text, for the `snapshots` table."""
        chunks = [
            {
                "key": c.key,
                "start": c.start,
                "end": c.end,
                "digest": c.digest,
                "tokens": c.tokens,
                "units": [[u.position, u.role, u.kind, u.text, u.date, u.importance] for u in c.units],
            }
            for c in self._chunks.values()
        ]
        # Summaries and fold decisions are not in it: the database holds them for every instance.
        return json.dumps(
            {"version": SNAPSHOT_VERSION, "session_id": self.session_id, "chunks": chunks},
            ensure_ascii=False,
        )

    @classmethod
    def restore(cls, session_id: str, snapshot: str) -> SessionMemory:
        """A memory rebuilt from snapshot(); raises ValueError when the snapshot is not one of ours.

        An older snapshot's "vidurai" layers are ignored: nothing read them."""
        state = json.loads(snapshot)
        if not isinstance(state, dict) or state.get("version") != SNAPSHOT_VERSION:
            raise ValueError("unknown snapshot version")
        memory = cls(session_id)
        for item in state["chunks"]:
            found = tuple(
                Unit(int(p), str(r), str(k), str(t), d, float(i)) for p, r, k, t, d, i in item["units"]
            )
            docs = tuple(memory.index.add(u.text) for u in found)
            memory._store(
                Chunk(
                    str(item["key"]),
                    int(item["start"]),
                    int(item["end"]),
                    str(item["digest"]),
                    found,
                    docs,
                    int(item["tokens"]),
                )
            )
        return memory
