"""One connection per calling thread, for the stores read and written at once rather than through the
writer's queue (summaries, virtual keys and limits): neither driver's connection is shared between
threads here, and asyncio.to_thread and the summarizer call from their own."""

from __future__ import annotations

import abc
import threading
from typing import Any


class ThreadConnections(abc.ABC):
    """Each thread's autocommit connection to one database, opened on first use."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._opened: list[Any] = []
        self._lock = threading.Lock()

    @abc.abstractmethod
    def _connect(self) -> Any:
        """A new autocommit connection for the calling thread."""

    def _usable(self, conn: Any) -> bool:
        return True

    def _conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is not None and not self._usable(conn):
            conn.close()
            conn = None
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._lock:
                self._opened.append(conn)
        return conn

    def close(self) -> None:
        """Close every thread's connection (once nothing reads or writes any more)."""
        with self._lock:
            opened, self._opened = self._opened, []
        for conn in opened:
            conn.close()
        self._local = threading.local()
