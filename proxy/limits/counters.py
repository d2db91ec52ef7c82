"""Counter stores: one integer per (subject, limit, window), checked and taken in one atomic step.

Two stores with one interface: in-process (one instance) and Redis (a fleet sharing one count).
Amounts are integers (requests, tokens, nano-dollars) so Redis and Python add them exactly.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import attrs
from redis.asyncio import Redis

from ..cluster import Cluster

Clock = Callable[[], float]
# Keys of windows past their end are swept after this many admissions (in-process store only).
SWEEP_EVERY = 4096


@attrs.frozen
class Check:
    """Take `amount` from the counter `key` if it stays within `limit`; the counter lives `ttl` s."""

    key: str
    limit: int
    amount: int
    ttl: float


# Settlements are summed per counter for this long, then written in one call: at 600 req/s that is
# one call for about 30 requests (bench/limits.py), and a counter lags its true value by at most
# this, on the safe side (the reservation, usually larger, stands until then).
SETTLE_DELAY_S = 0.05
# What Cluster.run answers when Redis failed: told apart from any value a script returns.
_UNREACHABLE: Any = object()


class StoreUnavailable(Exception):
    """The counters cannot be reached (Redis down); [limits] on_store_failure decides."""


class CounterStore(Protocol):
    name: str

    async def admit(self, checks: Sequence[Check]) -> tuple[int, list[int]]:
        """All checks taken, or none: (0, used before) or (1-based index of the first that failed, used)."""

    async def adjust(self, deltas: Sequence[tuple[str, int]]) -> None:
        """Correct counters that still exist (a reservation settled with the actual figure)."""

    def settle(self, deltas: Sequence[tuple[str, int]], on_failure: Callable[[Exception], object]) -> None:
        """`adjust` without waiting: applied now, or written in the background (see drain)."""

    async def drain(self) -> None:
        """Wait until every settlement is written."""

    async def seed(self, key: str, value: int, ttl: float) -> None:
        """Set a counter unless some instance already has: spend recorded before a restart."""

    async def read(self, keys: Sequence[str]) -> list[int]:
        """Current values (0 for absent counters)."""


def _refused(checks: Sequence[Check], used: Sequence[int]) -> int:
    """The first check whose counter cannot take its amount (1-based), or 0."""
    for index, (check, value) in enumerate(zip(checks, used, strict=True), start=1):
        if value >= check.limit or value + check.amount > check.limit:
            return index
    return 0


class MemoryCounters:
    """In-process counters: exact for one instance, since the event loop runs one admission at a time."""

    name = "memory"

    def __init__(self, clock: Clock = time.time) -> None:
        self._clock = clock
        self._values: dict[str, list[float]] = {}  # key -> [value, expires_at]
        self._since_sweep = 0

    def _get(self, key: str, now: float) -> int:
        entry = self._values.get(key)
        if entry is None or entry[1] <= now:
            return 0
        return int(entry[0])

    async def admit(self, checks: Sequence[Check]) -> tuple[int, list[int]]:
        now = self._clock()
        used = [self._get(check.key, now) for check in checks]
        failed = _refused(checks, used)
        if not failed:
            for check, value in zip(checks, used, strict=True):
                self._values[check.key] = [value + check.amount, now + check.ttl]
        self._since_sweep += 1
        if self._since_sweep >= SWEEP_EVERY:
            self._since_sweep = 0
            self._values = {k: v for k, v in self._values.items() if v[1] > now}
        return failed, used

    async def adjust(self, deltas: Sequence[tuple[str, int]]) -> None:
        self.settle(deltas, lambda exc: None)

    def settle(self, deltas: Sequence[tuple[str, int]], on_failure: Callable[[Exception], object]) -> None:
        now = self._clock()
        for key, delta in deltas:
            entry = self._values.get(key)
            if entry is not None and entry[1] > now:
                entry[0] = max(entry[0] + delta, 0)

    async def drain(self) -> None:
        return None

    async def seed(self, key: str, value: int, ttl: float) -> None:
        now = self._clock()
        if self._get(key, now) == 0:
            self._values[key] = [value, now + ttl]

    async def read(self, keys: Sequence[str]) -> list[int]:
        now = self._clock()
        return [self._get(key, now) for key in keys]


# One script call admits a batch of requests, in order, each all-or-none: a request refused by its
# budget does not use up its rate limit. KEYS: every request's counters, in turn; ARGV[1]: one
# string of integers, the number of requests, the number of counters of each, then limit, amount
# and ttl_ms per counter (one argument, not dozens: encoding each cost more proxy CPU than the
# Lua that splits them). Returns, per request, the index of the first counter that refused it
# (0: admitted) and each counter's value before. Atomic in Redis: every instance sees one count.
_ADMIT = """
local a, text = {}, {}
for number in string.gmatch(ARGV[1], '[^ ]+') do
  text[#text + 1] = number  -- as sent: a Lua number turned back into text may read 1e+14
  a[#a + 1] = tonumber(number)
end
local n = a[1]
local arg = 1 + n
local key = 0
local out = {}
for r = 1, n do
  local size = a[1 + r]
  local used = {}
  local failed = 0
  for i = 1, size do
    local value = tonumber(redis.call('GET', KEYS[key + i]) or '0')
    used[i] = value
    local limit = a[arg + 3 * i - 2]
    if failed == 0 and (value >= limit or value + a[arg + 3 * i - 1] > limit) then
      failed = i
    end
  end
  if failed == 0 then
    for i = 1, size do
      redis.call('INCRBY', KEYS[key + i], text[arg + 3 * i - 1])
      redis.call('PEXPIRE', KEYS[key + i], text[arg + 3 * i])
    end
  end
  out[#out + 1] = failed
  for i = 1, size do out[#out + 1] = used[i] end
  key = key + size
  arg = arg + 3 * size
end
return out
"""
# A settlement after the window ended must not recreate its counter without an expiry.
_ADJUST = """
for i, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then
    local value = redis.call('INCRBY', key, ARGV[i])
    if value < 0 then redis.call('SET', key, 0, 'KEEPTTL') end
  end
end
return 0
"""


class RedisCounters:
    """Counters in Redis, shared by every instance, through the cluster's client (its timeout,
    incident log and health).

    Admissions that queue while one call is in flight go to Redis together as the next call, and
    settlements are summed per counter and written together: a round trip costs more CPU than the
    rest of admission (bench/limits.py), and a batch is still one atomic, ordered step.
    """

    name = "redis"

    def __init__(self, cluster: Cluster) -> None:
        assert cluster.redis is not None
        self._cluster = cluster
        self._prefix = cluster.key("limits", "")
        self._admit = cluster.redis.register_script(_ADMIT)
        self._adjust = cluster.redis.register_script(_ADJUST)
        self._queued: list[tuple[Sequence[Check], asyncio.Future[tuple[int, list[int]]]]] = []
        self._deltas: dict[str, int] = {}
        self._failure: Callable[[Exception], object] = lambda exc: None
        self._tasks: set[asyncio.Task[None]] = set()
        self._admitting: asyncio.Future[None] | None = None

    async def _run(self, call: Callable[[Redis], Awaitable[Any]]) -> Any:
        result = await self._cluster.run(call, _UNREACHABLE)
        if result is _UNREACHABLE:
            raise StoreUnavailable(self._cluster.health().last_error or "Redis is not answering")
        return result

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def admit(self, checks: Sequence[Check]) -> tuple[int, list[int]]:
        future: asyncio.Future[tuple[int, list[int]]] = asyncio.get_running_loop().create_future()
        self._queued.append((checks, future))
        if self._admitting is None:
            self._admitting = asyncio.ensure_future(self._admit_queued())
        return await future

    async def _admit_queued(self) -> None:
        """One batch in flight at a time: what queues meanwhile leaves together as the next."""
        try:
            while self._queued:
                batch, self._queued = self._queued, []
                await self._admit_batch(batch)
        finally:
            self._admitting = None

    async def _admit_batch(
        self, batch: list[tuple[Sequence[Check], asyncio.Future[tuple[int, list[int]]]]]
    ) -> None:
        keys: list[str] = []
        numbers: list[int] = [len(batch), *(len(checks) for checks, _ in batch)]
        for checks, _ in batch:
            for check in checks:
                keys.append(self._prefix + check.key)
                numbers += [check.limit, check.amount, max(int(check.ttl * 1000), 1)]
        args = [" ".join(map(str, numbers))]
        try:
            out = await self._run(lambda redis: self._admit(keys=keys, args=args, client=redis))
        except Exception as exc:  # unreachable (StoreUnavailable) or a bug: every waiter hears of it
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        at = 0
        for checks, future in batch:
            size = len(checks)
            if not future.done():  # its client may have gone; the counters were taken all the same
                future.set_result((int(out[at]), [int(value) for value in out[at + 1 : at + 1 + size]]))
            at += 1 + size

    async def adjust(self, deltas: Sequence[tuple[str, int]]) -> None:
        if deltas:
            keys = [self._prefix + key for key, _ in deltas]
            args = [delta for _, delta in deltas]
            await self._run(lambda redis: self._adjust(keys=keys, args=args, client=redis))

    def settle(self, deltas: Sequence[tuple[str, int]], on_failure: Callable[[Exception], object]) -> None:
        if not self._deltas:
            asyncio.get_running_loop().call_later(SETTLE_DELAY_S, lambda: self._spawn(self._settle_batch()))
        self._failure = on_failure
        for key, delta in deltas:
            self._deltas[key] = self._deltas.get(key, 0) + delta

    async def _settle_batch(self) -> None:
        deltas, self._deltas = self._deltas, {}
        try:
            await self.adjust([(key, delta) for key, delta in deltas.items() if delta])
        except StoreUnavailable as exc:
            self._failure(exc)

    async def drain(self) -> None:
        if self._deltas:  # not waiting out the delay: written now
            await self._settle_batch()
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def seed(self, key: str, value: int, ttl: float) -> None:
        ttl_ms = max(int(ttl * 1000), 1)
        await self._run(lambda redis: redis.set(self._prefix + key, value, px=ttl_ms, nx=True))

    async def read(self, keys: Sequence[str]) -> list[int]:
        if not keys:
            return []
        full = [self._prefix + key for key in keys]
        values = await self._run(lambda redis: redis.mget(full))
        return [int(value or 0) for value in values]
