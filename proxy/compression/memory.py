"""A session's memory: its Vidurai store, the recall index and the cache of folded chunks."""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from datetime import datetime
from typing import Any

import attrs
from vidurai import ViduraiMemory
from vidurai.core.koshas import Memory

from ..records import MemoryRow
from ..tokens import count_message, count_text
from .content import units
from .digest import digest, importance
from .recall import RecallIndex
from .structure import Provider, role
from .text import canonical, dates, sha

SNAPSHOT_VERSION = 1
# Chunks of histories a client has since rewritten stay cached until this many newer ones push them out.
MAX_CHUNKS = 4096


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


def chunk_key(provider: Provider, messages: list[Any], start: int) -> str:
    """What a chunk's cached work is filed under: its provider, position and exact messages."""
    return sha(f"{provider}\n{start}\n{canonical(messages)}")


def _units_of(provider: Provider, messages: list[Any], start: int) -> list[Unit]:
    found: list[Unit] = []
    current: str | None = None
    for offset, message in enumerate(messages):
        for kind, text in units(provider, message):
            written = dates(text)
            if written:
                current = written[-1]
            found.append(Unit(start + offset, role(message), kind, text, current, importance(text)))
    return found


class SessionMemory:
    """One per session: wraps a ViduraiMemory; a cache of work done, never the source of the prefix."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        # No RL agent: it would write its Q-table under the home directory. No semantic compression:
        # its mock summariser would drop turns from the store at times we do not choose.
        self.vidurai = ViduraiMemory(enable_compression=False, enable_rl_agent=False, enable_decay=False)
        self.index = RecallIndex()
        self._chunks: OrderedDict[str, Chunk] = OrderedDict()
        self._rows: list[MemoryRow] = []

    def chunk(
        self, provider: Provider, messages: list[Any], start: int, remember_digest: bool = True
    ) -> Chunk:
        """The folded form of messages[start:start+len], computed once and then reused.

        `remember_digest=False` for the part of a chunk folded so far, which changes every turn: its
        turns are remembered, its passing digest is not stored.
        """
        key = chunk_key(provider, messages, start)
        cached = self._chunks.get(key)
        if cached is not None:
            return cached
        found = _units_of(provider, messages, start)
        made = Chunk(
            key,
            start,
            start + len(messages),
            digest(provider, messages),
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
            self.vidurai.remember(
                unit.text,
                importance=unit.importance,
                position=unit.position,
                role=unit.role,
                kind=unit.kind,
                date=unit.date,
            )
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
        known = {u.text for c in self._chunks.values() for u in c.units}
        return json.dumps(
            {
                "version": SNAPSHOT_VERSION,
                "session_id": self.session_id,
                "chunks": chunks,
                "vidurai": _vidurai_state(self.vidurai, known),
            },
            ensure_ascii=False,
        )

    @classmethod
    def restore(cls, session_id: str, snapshot: str) -> SessionMemory:
        """A memory rebuilt from snapshot(); raises ValueError when the snapshot is not one of ours."""
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
        texts = {sha(text): text for text in memory.index.texts}
        _load_vidurai(memory.vidurai, state.get("vidurai") or [], texts)
        return memory


def _vidurai_state(vidurai: ViduraiMemory, known: set[str]) -> list[dict[str, Any]]:
    """Vidurai 1.5's three layers as plain data (it has no serializer of its own).

    A memory sits in up to three layers as one object: it is written once, with the layers it is in,
    and its text by hash when a chunk already carries it.
    """
    layers: dict[int, tuple[Memory, str]] = {}
    for name, memories in (
        ("w", vidurai.working.memories),
        ("e", vidurai.episodic.memories.values()),
        ("a", vidurai.archival.memories.values()),
    ):
        for memory in memories:
            held = layers.get(id(memory))
            layers[id(memory)] = (memory, (held[1] if held else "") + name)
    state = []
    for memory, where in layers.values():
        text = {"sha": sha(memory.content)} if memory.content in known else {"content": memory.content}
        state.append(
            {
                **text,
                "layers": where,
                "importance": memory.importance,
                "access_count": memory.access_count,
                "timestamp": memory.timestamp.isoformat(),
                "metadata": memory.metadata,
            }
        )
    return state


def _load_vidurai(vidurai: ViduraiMemory, state: list[dict[str, Any]], texts: dict[str, str]) -> None:
    for item in state:
        content = item.get("content") or texts.get(str(item.get("sha")))
        if content is None:
            continue  # its chunk was pushed out of the cache; recall never needed Vidurai's copy anyway
        memory = Memory(
            content=str(content),
            importance=float(item["importance"]),
            timestamp=datetime.fromisoformat(item["timestamp"]),
            access_count=int(item["access_count"]),
            metadata=dict(item.get("metadata") or {}),
        )
        if "w" in item["layers"]:
            vidurai.working.memories.append(memory)
        if "e" in item["layers"]:
            vidurai.episodic.memories[memory.memory_id] = memory
            vidurai.episodic.access_order.append(memory.memory_id)
        if "a" in item["layers"]:
            vidurai.archival.memories[memory.memory_id] = memory
