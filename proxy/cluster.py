"""State instances share through Redis (`[cluster] redis_url`), with this process's own as the fallback.

Every Redis call goes through `Cluster.run`: bounded by `[cluster] timeout`, and on any failure it
answers with the caller's local fallback, so a request never fails or waits long because Redis
did. A failure opens an incident (one warning line, /health degraded, `vidurai_redis_up` 0);
while it lasts calls skip Redis at once, and a background probe pings it every PROBE_INTERVAL
until it answers, which closes the incident (one line again); while Redis answers, the probe's
call each second is the one that pools token calibration. Keys carry `[cluster] key_prefix` and
a TTL, so nothing in Redis grows without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import attrs
import structlog
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from .config import ClusterConfig
from .tokens import Calibration

log = structlog.get_logger(__name__)

T = TypeVar("T")

# Seconds between pings: how soon a lost Redis is noticed without traffic, and a recovered one
# taken back. A ping on loopback costs about 0.1 ms, so once a second is nothing.
PROBE_INTERVAL = 1.0
# The longest a provider keeps a prompt cached (OpenAI's prompt_cache_retention "24h"): a
# session's previous-request time older than this can only say "cold", so its key expires then.
SESSION_TIME_TTL = 86400
# Error text kept for /health and the log: enough to name the cause, never a whole dump.
ERROR_CHARS = 200
# Token calibration is pooled in one hash: a ratio per model, kept a week past its last update,
# for at most this many models (names come from clients).
CALIBRATION_TTL = 7 * 86400
CALIBRATION_MODELS = 1000
# Folds a batch of samples into the shared ratios with Calibration's own smoothing, atomically
# (instances sync at once), and answers every ratio: one round trip a second per instance.
_POOL_CALIBRATION = """
local key, smoothing = KEYS[1], tonumber(ARGV[1])
for i = 4, #ARGV, 2 do
  local model, sample = ARGV[i], tonumber(ARGV[i + 1])
  local previous = tonumber(redis.call('HGET', key, model))
  if previous then
    redis.call('HSET', key, model, tostring(previous + smoothing * (sample - previous)))
  elseif redis.call('HLEN', key) < tonumber(ARGV[3]) then
    redis.call('HSET', key, model, tostring(sample))
  end
end
if #ARGV >= 4 then redis.call('EXPIRE', key, ARGV[2]) end
return redis.call('HGETALL', key)
"""


@attrs.frozen
class ClusterHealth:
    """What /health and /metrics say about Redis."""

    redis: bool  # configured at all; False means every instance-shared value is this process's own
    connected: bool
    last_error: str | None
    failing_since: float | None  # epoch seconds the current incident began; None when connected
    failed_calls: int  # calls answered from local state because Redis failed or was skipped
    incidents: int


class Cluster:
    """The Redis client (None when `redis_url` is empty), its key prefix and its health."""

    def __init__(self, config: ClusterConfig) -> None:
        self.prefix = config.key_prefix
        self.timeout = config.timeout
        self.redis: Redis | None = None
        if config.redis_url:
            # No retries inside redis-py (it retries 10 times with backoff by default): one short
            # attempt, then the local fallback; the probe is what tries again.
            self.redis = Redis.from_url(
                config.redis_url,
                socket_timeout=config.timeout,
                socket_connect_timeout=config.timeout,
                retry=Retry(NoBackoff(), 0),
                decode_responses=True,
            )
        self._connected = self.redis is not None
        self._last_error: str | None = None
        self._failing_since: float | None = None
        self._failed_calls = 0
        self._incidents = 0
        self._probe: asyncio.Task[None] | None = None

    def key(self, *parts: str) -> str:
        """A Redis key under this deployment's prefix: key("session", id) -> "vidurai:session:<id>"."""
        return self.prefix + ":".join(parts)

    async def run(self, call: Callable[[Redis], Awaitable[T]], fallback: T) -> T:
        """`call(redis)`'s result; `fallback` (the caller's local answer) without Redis, while it is
        failing, or when this call fails or exceeds the timeout."""
        redis = self.redis
        if redis is None or not self._connected:
            if redis is not None:
                self._failed_calls += 1
            return fallback
        try:
            async with asyncio.timeout(self.timeout):
                return await call(redis)
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed_calls += 1
            self._incident(exc)
            return fallback

    async def previous_request_at(self, session_id: str, now: float, local: float | None) -> float | None:
        """When the session's previous request arrived at any instance, recording this one's `now`;
        `local` (this process's own view) without Redis."""

        async def swap(redis: Redis) -> float | None:
            # SET ... GET: the previous time read and this one written in one atomic step, so two
            # instances serving turns of one conversation at once each see the other's.
            previous = await redis.set(
                self.key("session", session_id, "at"), repr(now), ex=SESSION_TIME_TTL, get=True
            )
            return float(previous) if previous is not None else None

        return await self.run(swap, local)

    def health(self) -> ClusterHealth:
        return ClusterHealth(
            redis=self.redis is not None,
            connected=self._connected,
            last_error=self._last_error,
            failing_since=self._failing_since,
            failed_calls=self._failed_calls,
            incidents=self._incidents,
        )

    @property
    def degraded(self) -> bool:
        """Redis is configured and not answering: instances are each on their own state."""
        return self.redis is not None and not self._connected

    async def start(self, calibration: Calibration | None = None) -> None:
        """Check Redis once (a failure opens an incident; the proxy starts all the same) and start
        the probe that notices losses and recoveries; while Redis answers, the probe pools
        `calibration` with the other instances' instead of pinging."""
        if self.redis is None:
            return
        await self._ping()
        if self._connected:
            log.info("redis connected", prefix=self.prefix)
        self._probe = asyncio.create_task(self._probe_forever(calibration), name="vidurai-redis-probe")

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
        if self.redis is not None:
            await self.redis.aclose()

    async def _probe_forever(self, calibration: Calibration | None) -> None:
        while True:
            await asyncio.sleep(PROBE_INTERVAL)
            if calibration is not None and self._connected:
                await self.pool_calibration(calibration)
            else:
                await self._ping()

    async def pool_calibration(self, calibration: Calibration) -> None:
        """Send this instance's new calibration samples and take the fleet's ratios back."""
        samples = calibration.drain_samples()
        args: list[str | float | int] = [Calibration.SMOOTHING, CALIBRATION_TTL, CALIBRATION_MODELS]
        for model, sample in samples:
            args += [model, sample]

        async def pool(redis: Redis) -> list[str]:
            result = await redis.eval(_POOL_CALIBRATION, 1, self.key("calibration"), *args)
            return list(result)

        flat: list[str] = await self.run(pool, [])  # lost with Redis: this instance's own ratios have them
        calibration.merge({flat[i]: float(flat[i + 1]) for i in range(0, len(flat) - 1, 2)})

    async def _ping(self) -> None:
        assert self.redis is not None
        try:
            async with asyncio.timeout(self.timeout):
                await self.redis.ping()
        except (RedisError, OSError, TimeoutError) as exc:
            self._incident(exc)
            return
        if not self._connected:
            # Connections pooled before the incident point at the Redis that went away: the first
            # call on each would fail and open a new incident. Fresh ones are made as needed.
            await self.redis.connection_pool.disconnect()
            log.warning(
                "redis reachable again: shared state back in use",
                down_s=round(time.time() - (self._failing_since or time.time()), 3),
                calls_served_locally=self._failed_calls,
            )
            self._connected = True
            self._failing_since = None

    def _incident(self, exc: BaseException) -> None:
        """Keep the latest error; the first failure of an incident opens it with one log line."""
        self._last_error = (f"{type(exc).__name__}: {exc}".rstrip(": "))[:ERROR_CHARS]
        if self._connected:
            self._connected = False
            self._failing_since = time.time()
            self._incidents += 1
            log.warning(
                "redis unreachable: serving on this instance's own state until it answers",
                error=self._last_error,
            )
