"""Sessions: who is talking (tenant) and which conversation (session), with its compression memory."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import attrs
import structlog

from .compression import SessionMemory
from .records import SessionRecord
from .storage import Store, StoredSession

log = structlog.get_logger(__name__)

SESSION_HEADER = "x-vidurai-session"
# The header's value is kept as the session's label, cut to this many characters.
LABEL_MAX = 200


def client_key(headers: Mapping[str, str]) -> str:
    """The API key the client sent (x-api-key, else Authorization: Bearer); empty without one."""
    key = headers.get("x-api-key", "")
    if not key:
        authorization = headers.get("authorization", "")
        scheme, _, token = authorization.partition(" ")
        key = token.strip() if scheme.lower() == "bearer" else authorization
    return key


def tenant_of(headers: Mapping[str, str]) -> str:
    """First 16 hex characters of sha256 of the client's API key; the key itself is never kept."""
    return hashlib.sha256(client_key(headers).encode("utf-8")).hexdigest()[:16]


def _without_cache_control(value: Any) -> Any:
    """Clients move cache_control markers between turns; they must not change a conversation's identity."""
    if isinstance(value, dict):
        return {k: _without_cache_control(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [_without_cache_control(v) for v in value]
    return value


def _canonical(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    if '"cache_control"' in text:  # rare, and the copy without markers is costly for a huge message
        text = json.dumps(_without_cache_control(value), sort_keys=True, ensure_ascii=False, default=str)
    return text


def session_id_for(tenant: str, provider: str, explicit: str | None, conversation_start: Any) -> str:
    """A session id scoped to its tenant, from the client's header or the conversation's beginning."""
    key = _plain_key(conversation_start) if not explicit else None
    if key is not None:
        known = _KNOWN_STARTS.get((tenant, provider, key))
        if known is not None:
            return known
    if explicit:
        basis = "header\0" + explicit
    else:
        basis = "start\0" + _canonical(conversation_start)
    digest = hashlib.sha256(f"{tenant}\0{provider}\0{basis}".encode()).hexdigest()[:24]
    if key is not None:
        if len(_KNOWN_STARTS) >= KNOWN_STARTS:
            _KNOWN_STARTS.pop(next(iter(_KNOWN_STARTS)))  # the oldest
        _KNOWN_STARTS[(tenant, provider, key)] = digest
    return digest


# Every turn of a conversation sends its beginning again, and its id was that beginning as sorted
# JSON, hashed (3.3 µs a request): ids of beginnings made of short plain text are remembered.
KNOWN_STARTS = 4096
PLAIN_START_CHARS = 4096  # at most 16 MiB held in all
_KNOWN_STARTS: dict[tuple[str, str, tuple[Any, ...]], str] = {}


def _plain_key(start: Any) -> tuple[Any, ...] | None:
    """A hashable stand-in for a conversation start made only of short strings (or lists of them),
    which JSON renders one way only; None for any other (content blocks, cache markers, ...)."""
    if type(start) is not dict:
        return None
    key: list[Any] = []
    size = 0
    for name, value in start.items():
        if type(value) is list:
            if not all(type(item) is str or item is None for item in value):
                return None
            size += sum(len(item) for item in value if item)
            value = tuple(value)
        elif type(value) is str:
            size += len(value)
        elif value is not None:
            return None
        key += (name, value)
    return tuple(key) if size <= PLAIN_START_CHARS else None


@attrs.define(eq=False)
class Session:
    record: SessionRecord
    # Made on the first request with something to fold: a short conversation never needs one. None
    # again once evicted; `stored` then says whether a snapshot in the database can bring it back.
    memory: SessionMemory | None = None
    stored: bool = False
    evicted: bool = False  # released for room (not by a restart), so its return is worth an audit row
    # One request of a conversation compresses at a time: they share one memory.
    lock: asyncio.Lock = attrs.field(factory=asyncio.Lock)
    snapshot_due: bool = False
    # When the request before the current one arrived: tells whether the provider's cache is warm.
    previous_request_at: float | None = None

    @property
    def id(self) -> str:
        return self.record.id


# A session without memory is little more than its record (0.5 KiB held, 1.1 KiB of RSS, by
# bench/memory.py): this many per memory slot are kept, so RAM stays bounded for short conversations
# too; past it the least recently seen are forgotten here early (not expired: the database keeps them).
RECORDS_PER_ACTIVE = 50

# A session this instance last saw longer ago than this is looked up in the database on its next
# request here: another instance may have served it since (its last_seen_at says when, which decides
# whether the provider's prompt cache is still warm: 300 s at the least, Anthropic's default TTL),
# and the request's liveness is written at once, so a fleet-mate's expiry sees it within one flush.
REFRESH_AFTER = 60.0
# The longest a request waits for that look-up: a database that does not answer (a server whose
# host is unreachable) costs the session's history, not the request's latency.
LOOKUP_TIMEOUT = 1.0


class SessionRegistry:
    """The sessions this process serves; the database holds them for every instance.

    No session belongs to an instance: one unknown here is looked up in the store on its first
    request here (its record, whether a snapshot exists) and its memory reloaded lazily from the
    snapshot; expiry is decided in the database from the shared last_seen_at (`expire_idle`).

    At most `max_active` of them hold a compression memory (the costly part: 85 KiB held for a
    60-message conversation, by bench/memory.py); the least recently used beyond that are
    snapshotted and released, and reloaded
    by `memory_for` on their next request. The memory is a cache of work done on the request, so a
    reloaded (or even a lost) one forwards the same prefix.
    """

    def __init__(self, store: Store, timeout: float, max_active: int) -> None:
        self._store = store
        self._timeout = timeout
        self._max_active = max_active
        self._max_records = max_active * RECORDS_PER_ACTIVE
        self._sessions: OrderedDict[str, Session] = OrderedDict()  # least recently seen first
        self._resident: OrderedDict[str, Session] = OrderedDict()  # those holding a memory, same order
        self._evicting: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._sessions)

    @property
    def resident(self) -> int:
        """Sessions whose memory is in RAM."""
        return len(self._resident)

    async def touch(
        self, session_id: str, tenant: str, messages: int, now: float | None = None, label: str | None = None
    ) -> Session:
        """The session for this request: known here, known to the database, or new.

        A session known here and seen within REFRESH_AFTER costs no read; its totals are written
        with the request's own row (one session write per request). A session new here, or not seen
        here for a while, is read from the store first (off the event loop) and its row written now.
        """
        now = time.time() if now is None else now
        label = label[:LABEL_MAX] if label else None
        session = self._sessions.get(session_id)
        refreshed = False
        if session is None or session.record.tenant != tenant:
            stored = await self._lookup(session_id)
            session = self._sessions.get(session_id)  # a request of the same session may have come meanwhile
            if session is None or session.record.tenant != tenant:
                return self._arrive(session_id, tenant, messages, now, label, stored)
        elif now - session.record.last_seen_at > REFRESH_AFTER:
            stored = await self._lookup(session_id)
            if stored is not None and stored.record.expired_at is None:
                # Served by another instance since: its request is this one's previous request.
                session.record.last_seen_at = max(session.record.last_seen_at, stored.record.last_seen_at)
            refreshed = True
        session.previous_request_at = session.record.last_seen_at
        self._sessions.move_to_end(session_id)
        if session_id in self._resident:
            self._resident.move_to_end(session_id)
        learned = bool(label and not session.record.label)  # a restored session learns its label again
        if learned:
            session.record.label = label
        session.record.last_seen_at = now
        session.record.messages = messages
        if learned or refreshed:
            self._store.upsert_session(attrs.evolve(session.record))
        return session

    async def _lookup(self, session_id: str) -> StoredSession | None:
        try:
            return await asyncio.wait_for(self._store.stored_session(session_id), LOOKUP_TIMEOUT)
        except Exception as exc:  # an unreadable database costs the session's history, not the request
            log.warning(
                "session lookup failed, treated as new", session_id=session_id, error=type(exc).__name__
            )
            return None

    def _arrive(
        self,
        session_id: str,
        tenant: str,
        messages: int,
        now: float,
        label: str | None,
        stored: StoredSession | None,
    ) -> Session:
        """A session's first request on this instance: resumed from the database, or created."""
        if stored is None or stored.record.tenant != tenant or stored.record.expired_at is not None:
            session = Session(
                SessionRecord(id=session_id, tenant=tenant, created_at=now, last_seen_at=now, label=label)
            )
            self._store.add_audit(session_id, "created", {"tenant": tenant}, now)
            log.info("session created", session_id=session_id, tenant=tenant)
        else:  # served before by another instance, or by this one before it restarted
            session = Session(
                attrs.evolve(stored.record, label=stored.record.label or label), stored=stored.has_snapshot
            )
            session.previous_request_at = stored.record.last_seen_at
            self._store.add_audit(session_id, "restored", {"from_snapshot": stored.has_snapshot}, now)
        session.record.last_seen_at = now
        session.record.messages = messages
        self._resident.pop(session_id, None)
        self._sessions[session_id] = session
        self._store.upsert_session(attrs.evolve(session.record))  # its label, kept from the start
        self._forget_overflow()
        return session

    async def memory_for(self, session: Session) -> SessionMemory:
        """The session's memory, made or reloaded from its snapshot; call with `session.lock` held."""
        if session.memory is None:
            memory = None
            if session.stored:
                memory = await self._reload(session.id)
                if session.evicted:
                    detail = {"from_snapshot": memory is not None}
                    self._store.add_audit(session.id, "resumed", detail, time.time())
            session.memory = memory or SessionMemory(session.id)
        if self._sessions.get(session.id) is session:  # not expired while this request waited
            self._resident[session.id] = session
            self._resident.move_to_end(session.id)
            if len(self._resident) > self._max_active and self._evicting is None:
                self._evicting = asyncio.create_task(self._evict_overflow(), name="vidurai-evict")
        session.snapshot_due = True
        return session.memory

    async def _reload(self, session_id: str) -> SessionMemory | None:
        try:
            await self._store.flush()  # an eviction moments ago may have its snapshot still queued
            state = await self._store.latest_snapshot(session_id)
            if state is not None:
                return await asyncio.to_thread(SessionMemory.restore, session_id, state)
        except Exception as exc:  # a damaged snapshot or an unreadable database costs the cache only
            log.warning(
                "snapshot unreadable, starting empty", session_id=session_id, error=type(exc).__name__
            )
        return None

    async def _evict_overflow(self) -> None:
        """Snapshot and release the least recently used memories until max_active hold one."""
        try:
            while len(self._resident) > self._max_active:
                session = next(iter(self._resident.values()))
                seen = session.record.last_seen_at
                async with session.lock:  # compression may be using this memory in a thread
                    if session.memory is None:
                        self._resident.pop(session.id, None)
                        continue
                    # Without stored text there is no snapshot to keep: the memory is rebuilt instead.
                    state = await asyncio.to_thread(session.memory.snapshot) if self._store.store_text else ""
                    if session.record.last_seen_at != seen:
                        continue  # it came back meanwhile: no longer the least recently used
                    now = time.time()
                    if state:
                        self._store.add_snapshot(session.id, state, now)
                    self._release(session)
                    detail = {"idle_s": round(now - seen, 3), "max_active": self._max_active}
                    self._store.add_audit(session.id, "evicted", detail, now)
        except Exception:  # the bound is restored on the next overflow; requests are not affected
            log.exception("session eviction failed")
        finally:
            self._evicting = None

    def _release(self, session: Session) -> None:
        session.memory = None
        session.stored = session.evicted = True
        session.snapshot_due = False
        self._resident.pop(session.id, None)

    async def expire_idle(self, now: float | None = None) -> list[str]:
        """Expire, in the database, the sessions no instance has served for the timeout (with their
        "expired" audit rows), and release here those this instance has not served for that long
        (expired, or served by another instance since: they come back on their next request here)."""
        now = time.time() if now is None else now
        cutoff = now - self._timeout
        expired = await self._store.expire_idle(cutoff, now)  # their audit rows written with them
        for session_id, last_seen_at in expired:
            log.info(
                "audit", audit="expired", session_id=session_id, detail={"idle_s": round(now - last_seen_at)}
            )
        for session in list(self._sessions.values()):  # least recently seen first
            if session.record.last_seen_at >= cutoff:
                break
            self._forget(session)
        return [session_id for session_id, _ in expired]

    def _forget_overflow(self) -> None:
        """Past max_records the least recently seen are forgotten here (not expired: they come back
        from the database on their next request)."""
        while len(self._sessions) > self._max_records:
            self._forget(next(iter(self._sessions.values())))

    def _forget(self, session: Session) -> None:
        del self._sessions[session.id]
        self._resident.pop(session.id, None)

    async def snapshot(self, force: bool = False) -> int:
        """Queue the compression memory of sessions that changed since their last snapshot."""
        if not self._store.store_text:
            return 0  # a snapshot is conversation text throughout: none is kept
        count = 0
        for session in list(self._resident.values()):
            if session.snapshot_due or force:
                async with session.lock:  # compression may be updating this memory in a thread
                    if session.memory is None:
                        continue
                    state = await asyncio.to_thread(session.memory.snapshot)  # ~10 ms for a long session
                    session.snapshot_due = False
                    session.stored = True
                self._store.add_snapshot(session.id, state, time.time())
                count += 1
        return count

    async def close(self) -> None:
        """Wait for an eviction under way, then snapshot every memory still held."""
        if self._evicting is not None:
            await self._evicting
        await self.snapshot(force=True)
