"""Background work on sessions: expire the idle, snapshot the active, restore them at startup."""

from __future__ import annotations

import asyncio
import time

import structlog

from .config import Config, SessionsConfig
from .sessions import RECORDS_PER_ACTIVE, SessionRegistry
from .storage.reader import active_sessions

log = structlog.get_logger(__name__)


async def restore_sessions(config: Config, registry: SessionRegistry) -> None:
    """Sessions active when the proxy stopped come back; each memory is reloaded from its latest
    snapshot on the session's next request."""
    now = time.time()
    restored = 0
    found = await active_sessions(config.storage.database, states=False)  # least recently seen first
    room = config.sessions.max_active * RECORDS_PER_ACTIVE
    for index, active in enumerate(found):
        if now - active.session.last_seen_at > config.sessions.timeout or len(found) - index > room:
            registry.mark_expired(active.session, now)
            continue
        registry.restore(active.session, stored=active.state is not None)
        restored += 1
    if restored:
        log.info("sessions restored", count=restored)


async def maintain_sessions(config: SessionsConfig, registry: SessionRegistry) -> None:
    """Runs for the life of the app: expiry checked often, snapshots every snapshot_interval."""
    tick = max(min(config.snapshot_interval, config.timeout / 4, 30.0), 0.05)
    last_snapshot = time.monotonic()
    while True:
        await asyncio.sleep(tick)
        try:
            expired = registry.expire_idle()
            if expired:
                log.info("sessions expired", count=len(expired))
            if time.monotonic() - last_snapshot >= config.snapshot_interval:
                last_snapshot = time.monotonic()
                await registry.snapshot()
        except Exception:  # keep maintaining; one bad session must not stop expiry for all
            log.exception("session maintenance failed")
