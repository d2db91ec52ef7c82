"""Sessions: who is talking (tenant) and which conversation (session), with its Vidurai memory."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Mapping
from typing import Any

import attrs
import structlog

from .compression import SessionMemory
from .records import SessionRecord
from .storage.writer import Writer

log = structlog.get_logger(__name__)

SESSION_HEADER = "x-vidurai-session"
# The header's value is kept as the session's label, cut to this many characters.
LABEL_MAX = 200


def tenant_of(headers: Mapping[str, str]) -> str:
    """First 16 hex characters of sha256 of the client's API key; the key itself is never kept."""
    key = headers.get("x-api-key", "")
    if not key:
        authorization = headers.get("authorization", "")
        scheme, _, token = authorization.partition(" ")
        key = token.strip() if scheme.lower() == "bearer" else authorization
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


def _without_cache_control(value: Any) -> Any:
    """Clients move cache_control markers between turns; they must not change a conversation's identity."""
    if isinstance(value, dict):
        return {k: _without_cache_control(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [_without_cache_control(v) for v in value]
    return value


def session_id_for(tenant: str, provider: str, explicit: str | None, conversation_start: Any) -> str:
    """A session id scoped to its tenant, from the client's header or the conversation's beginning."""
    if explicit:
        basis = "header\0" + explicit
    else:
        basis = "start\0" + json.dumps(
            _without_cache_control(conversation_start), sort_keys=True, ensure_ascii=False, default=str
        )
    digest = hashlib.sha256(f"{tenant}\0{provider}\0{basis}".encode()).hexdigest()
    return digest[:24]


@attrs.define(eq=False)
class Session:
    record: SessionRecord
    memory: SessionMemory
    # One request of a conversation compresses at a time: they share one memory.
    lock: asyncio.Lock = attrs.field(factory=asyncio.Lock)
    snapshot_due: bool = False
    # When the request before the current one arrived: tells whether the provider's cache is warm.
    previous_request_at: float | None = None

    @property
    def id(self) -> str:
        return self.record.id


class SessionRegistry:
    """The live sessions of this process; SQLite holds their history and snapshots."""

    def __init__(self, writer: Writer, timeout: float) -> None:
        self._writer = writer
        self._timeout = timeout
        self._sessions: dict[str, Session] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def touch(
        self, session_id: str, tenant: str, messages: int, now: float | None = None, label: str | None = None
    ) -> Session:
        """The session for this request, created on first sight.

        Its totals are written with the request's own row (one session write per request); only a
        new session, or a label learned again after a restart, writes its row here too.
        """
        now = time.time() if now is None else now
        label = label[:LABEL_MAX] if label else None
        session = self._sessions.get(session_id)
        if session is None or session.record.tenant != tenant:
            session = Session(
                SessionRecord(id=session_id, tenant=tenant, created_at=now, last_seen_at=now, label=label),
                SessionMemory(session_id),
            )
            self._sessions[session_id] = session
            self._writer.upsert_session(attrs.evolve(session.record))  # its label, kept from the start
            self._writer.add_audit(session_id, "created", {"tenant": tenant}, now)
            log.info("session created", session_id=session_id, tenant=tenant)
        else:
            session.previous_request_at = session.record.last_seen_at
            if label and not session.record.label:  # a restored session learns its label again
                session.record.label = label
                self._writer.upsert_session(attrs.evolve(session.record))
        session.record.last_seen_at = now
        session.record.messages = messages
        session.snapshot_due = True
        return session

    def restore(self, record: SessionRecord, state: str | None) -> None:
        """Bring back a session that was active when the proxy last stopped."""
        memory = SessionMemory(record.id)
        if state:
            try:
                memory = SessionMemory.restore(record.id, state)
            except Exception as exc:  # a damaged snapshot costs the cache, never the session
                log.warning(
                    "snapshot unreadable, starting empty", session_id=record.id, error=type(exc).__name__
                )
        self._sessions[record.id] = Session(record, memory)
        self._writer.add_audit(record.id, "restored", {"from_snapshot": bool(state)}, time.time())

    def mark_expired(self, record: SessionRecord, now: float) -> None:
        """A session that timed out while the proxy was down."""
        record.expired_at = now
        self._writer.upsert_session(record)
        self._writer.add_audit(record.id, "expired", {"idle_s": round(now - record.last_seen_at)}, now)

    def expire_idle(self, now: float | None = None) -> list[str]:
        """Release sessions idle longer than the timeout and mark them expired in SQLite."""
        now = time.time() if now is None else now
        expired = [s for s in self._sessions.values() if now - s.record.last_seen_at > self._timeout]
        for session in expired:
            del self._sessions[session.id]
            session.record.expired_at = now
            self._writer.upsert_session(attrs.evolve(session.record))
            self._writer.add_audit(
                session.id, "expired", {"idle_s": round(now - session.record.last_seen_at)}, now
            )
        return [s.id for s in expired]

    async def snapshot(self, force: bool = False) -> int:
        """Queue the Vidurai state of sessions that changed since their last snapshot."""
        if not self._writer.store_text:
            return 0  # a snapshot is conversation text throughout: none is kept
        count = 0
        for session in list(self._sessions.values()):
            if session.snapshot_due or force:
                async with session.lock:  # compression may be updating this memory in a thread
                    state = await asyncio.to_thread(session.memory.snapshot)  # ~10 ms for a long session
                    session.snapshot_due = False
                self._writer.add_snapshot(session.id, state, time.time())
                count += 1
        return count
