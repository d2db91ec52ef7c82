"""Chunk summaries and fold decisions (summarizer = model), as both engines keep them: read and
written at once, visible to every instance sharing the database (the SummaryStore protocol of
proxy/storage/store.py). The engines give the connection and the SQL (sqlite/summaries.py,
postgresql/summaries.py).

Not through the writer's queue: a fold decision must be in the database before the next request of
its conversation (on this instance or another) asks for it, and both kinds of row are rare (one per
chunk, one per fold). Each thread keeps its own connection (proxy/storage/connections.py): compress()
reads from the worker threads, the summarizer writes from its own.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Sequence
from typing import ClassVar

from proxy.storage.connections import ThreadConnections


class ThreadSummaryStore(ThreadConnections):
    """The `summaries` and `fold_digests` tables of one database (migrated by its store)."""

    INSERT_SUMMARY: ClassVar[str]  # (chunk_key, session_id, model, summary, created_at), first one kept
    SELECT_FOLD: ClassVar[str]  # (fold_key) -> summarized
    INSERT_FOLD: ClassVar[str]  # (fold_key, summarized, created_at), first one kept

    @abc.abstractmethod
    def summaries(self, keys: Sequence[str]) -> dict[str, str]:
        """The stored summary of each of these chunks that has one."""

    @abc.abstractmethod
    def forget(self) -> int:
        """[storage] store_text is off: summaries are conversation text, so none is kept; how many
        summaries went."""

    def add_summary(
        self, chunk_key: str, session_id: str | None, model: str, summary: str, at: float
    ) -> None:
        """Keep a chunk's summary; the first one stored for a chunk stays."""
        self._conn().execute(self.INSERT_SUMMARY, (chunk_key, session_id, model, summary, at))

    def fold(self, fold_key: str) -> tuple[str, ...] | None:
        """The chunks whose digest is their summary in this fold, if the fold was decided."""
        row = self._conn().execute(self.SELECT_FOLD, (fold_key,)).fetchone()
        return None if row is None else tuple(json.loads(row[0]))

    def decide_fold(self, fold_key: str, summarized: Sequence[str], at: float) -> tuple[str, ...]:
        """Record this fold's choice unless one is recorded already; the recorded one is returned, so
        two instances deciding the same fold at once both forward the first one's."""
        conn = self._conn()
        conn.execute(self.INSERT_FOLD, (fold_key, json.dumps(list(summarized)), at))
        row = conn.execute(self.SELECT_FOLD, (fold_key,)).fetchone()
        return tuple(json.loads(row[0]))
