"""Background work on sessions: expire the idle (decided in the database), snapshot the active.

Nothing is restored at startup: a session comes back on its first request here (proxy/sessions.py).
"""

from __future__ import annotations

import asyncio
import time

import structlog

from .config import SessionsConfig
from .sessions import SessionRegistry

log = structlog.get_logger(__name__)


async def expire_idle(registry: SessionRegistry) -> None:
    """One expiry pass; an unreachable database is logged and tried again on the next."""
    try:
        expired = await registry.expire_idle()
    except Exception:
        log.exception("session expiry failed")
        return
    if expired:
        log.info("sessions expired", count=len(expired))


async def maintain_sessions(config: SessionsConfig, registry: SessionRegistry) -> None:
    """Runs for the life of the app (after a first expiry pass at startup): expiry checked often,
    snapshots every snapshot_interval."""
    tick = max(min(config.snapshot_interval, config.timeout / 4, 30.0), 0.05)
    last_snapshot = time.monotonic()
    while True:
        await asyncio.sleep(tick)
        await expire_idle(registry)
        if time.monotonic() - last_snapshot >= config.snapshot_interval:
            last_snapshot = time.monotonic()
            try:
                await registry.snapshot()
            except Exception:  # keep maintaining; one bad session must not stop the others' snapshots
                log.exception("session snapshots failed")
