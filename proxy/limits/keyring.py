"""Virtual keys: issued by `vidurai-proxy keys`, known to the proxy by their hash alone."""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Literal

import attrs
import structlog

from .limiter import Limits

log = structlog.get_logger(__name__)

# "sk-" so tools that check a key's shape accept it; the rest tells the proxy a key is its own.
KEY_PREFIX = "sk-vidurai-"
# The proxy rereads the keys this often, so a revocation by the CLI takes effect within it.
REFRESH_S = 2.0
# An unknown key of ours rereads at once (a key created a moment ago), but no more often than this.
MISS_RELOAD_S = 0.5


@attrs.frozen
class VirtualKey:
    id: str
    name: str
    tenant: str  # what requests.tenant holds for this key's requests
    provider: Literal["anthropic", "openai"]
    upstream_key_env: str  # the NAME of the variable holding the real key
    limits: Limits
    created_at: float
    revoked_at: float | None = None

    def upstream_key(self) -> str | None:
        """The real provider key, read from the proxy's environment at the moment of use."""
        return os.environ.get(self.upstream_key_env) or None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> tuple[str, str]:
    """A fresh virtual key and its hash; the key itself is shown once and kept nowhere."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return key, hash_key(key)


class KeyRing:
    """The virtual keys by hash, reread from the database in the background."""

    def __init__(self, load: Callable[[], Awaitable[dict[str, VirtualKey]]]) -> None:
        self._load = load
        self._keys: dict[str, VirtualKey] = {}
        self._loaded_at = -float("inf")
        self._lock = asyncio.Lock()

    @property
    def keys(self) -> list[VirtualKey]:
        return list(self._keys.values())

    async def reload(self) -> None:
        async with self._lock:
            self._keys = await self._load()
            self._loaded_at = time.monotonic()

    async def find(self, key: str) -> VirtualKey | None:
        """The virtual key (revoked ones included), or None if the proxy never issued it."""
        digest = hash_key(key)
        found = self._keys.get(digest)
        if found is None and time.monotonic() - self._loaded_at >= MISS_RELOAD_S:
            try:
                await self.reload()
            except Exception as exc:  # a locked database: the key stays unknown until the next reload
                self._loaded_at = time.monotonic()
                log.warning("limits.keys_reload_failed", error=type(exc).__name__)
            found = self._keys.get(digest)
        return found

    async def refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_S)
            try:
                await self.reload()
            except Exception as exc:  # a locked or missing database: keep the keys already known
                log.warning("limits.keys_reload_failed", error=type(exc).__name__)
