"""The limits' part of the app's lifetime: counters, virtual keys and the gate behind app[LIMITS]."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import structlog
from aiohttp import web

from ..keys import CLUSTER, CONFIG, LIMITS, PRICES, PROM, STORE
from .counters import Clock, CounterStore, MemoryCounters, RedisCounters
from .gate import Gate
from .keyring import KeyRing, VirtualKey
from .limiter import Limiter, Limits

log = structlog.get_logger(__name__)


def limits_ctx(clock: Clock) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context (after storage's: it needs the store, started and migrated)."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        config = app[CONFIG]
        storage = app[STORE]
        prom = app[PROM]
        cluster = app[CLUSTER]
        # With [cluster] redis_url every instance counts in Redis; without it, in this process.
        store: CounterStore = RedisCounters(cluster) if cluster.redis is not None else MemoryCounters(clock)
        limiter = Limiter(
            store,
            config.limits.on_store_failure,
            clock,
            on_failure=prom.limit_store_failures.inc,
        )

        async def load() -> dict[str, VirtualKey]:
            return await asyncio.to_thread(storage.limits().keys_by_hash)

        keys = KeyRing(load)
        try:
            await keys.reload()
        except (
            Exception
        ) as exc:  # a database down at startup (PostgreSQL): served, keys known once it is back
            log.warning("limits.keys_reload_failed", error=str(exc))
        gate = Gate(limiter, keys, Limits.defaults(config.limits), app[PRICES], storage, prom)
        limited = gate.defaults.any or any(key.limits.any for key in keys.keys)
        if limited and cluster.redis is None and config.server.workers > 1:
            log.warning(
                "limits.counted_per_worker",
                workers=config.server.workers,
                hint="each worker counts on its own, so a limit admits up to `workers` times its value; "
                "set [cluster] redis_url for one count",
            )
        try:
            await gate.seed_spend()
        except Exception as exc:
            log.warning("limits.spend_unread", error=str(exc), hint="budgets count from zero until a restart")
        app[LIMITS] = gate
        refresh = asyncio.create_task(keys.refresh_forever(), name="vidurai-virtual-keys")
        try:
            yield
        finally:
            refresh.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresh
            await limiter.drain()

    return context
