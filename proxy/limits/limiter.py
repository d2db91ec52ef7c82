"""Admission before forwarding and settlement once usage is known, against one counter store."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Literal

import attrs
import structlog

from ..config import LimitsConfig
from .counters import Check, Clock, CounterStore, StoreUnavailable
from .windows import Window, bounds, describe_reset

log = structlog.get_logger(__name__)

NANO = 1_000_000_000  # budgets are counted in nano-dollars: integers, exact in Redis and in Lua
# A counter outlives its window by this much, so a settlement arriving just after the end finds it.
GRACE_S = 3600.0
# A failing store is warned about at most this often (every request would fail the same way).
WARN_EVERY_S = 30.0

LimitName = Literal["requests_per_minute", "tokens_per_minute", "budget_usd_per_day", "budget_usd_per_month"]
WINDOWS: dict[LimitName, Window] = {
    "requests_per_minute": "minute",
    "tokens_per_minute": "minute",
    "budget_usd_per_day": "day",
    "budget_usd_per_month": "month",
}
BUDGETS = frozenset({"budget_usd_per_day", "budget_usd_per_month"})


@attrs.frozen
class Limits:
    """One subject's limits; None is no limit."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    budget_usd_per_day: float | None = None
    budget_usd_per_month: float | None = None

    @classmethod
    def defaults(cls, config: LimitsConfig) -> Limits:
        return cls(
            config.requests_per_minute,
            config.tokens_per_minute,
            config.budget_usd_per_day,
            config.budget_usd_per_month,
        )

    def over(self, defaults: Limits) -> Limits:
        """These limits, each unset one taken from `defaults` (a virtual key's own values win)."""
        return attrs.evolve(defaults, **{k: v for k, v in attrs.asdict(self).items() if v is not None})

    def values(self) -> tuple[float | None, ...]:
        """In field order (WINDOWS' order); spelled out, as attrs.astuple costs more than admission."""
        return (
            self.requests_per_minute,
            self.tokens_per_minute,
            self.budget_usd_per_day,
            self.budget_usd_per_month,
        )

    def set(self) -> list[tuple[LimitName, float]]:
        """The limits that are set, by name (WINDOWS lists the names in field order)."""
        return [
            (name, value) for name, value in zip(WINDOWS, self.values(), strict=True) if value is not None
        ]

    @property
    def any(self) -> bool:
        return any(value is not None for value in self.values())


@attrs.frozen
class Reservation:
    """What a request is expected to use: its estimated tokens and dollars (input plus max output)."""

    tokens: int = 0
    usd: float = 0.0


def units(name: LimitName, value: float) -> int:
    """A limit or an amount in the counter's integer unit."""
    return math.ceil(value * NANO) if name in BUDGETS else int(value)


def counter_key(subject: str, name: LimitName, start: float) -> str:
    return f"{subject}:{name}:{int(start)}"


@attrs.frozen
class Count:
    """One limit as it stood at admission: what was used before this request, and when it frees."""

    name: LimitName
    limit: float
    used: float
    key: str
    reserved: int  # counter units this request took
    resets_at: float


@attrs.frozen
class Admission:
    subject: str
    counts: tuple[Count, ...]


@attrs.frozen
class Rejection:
    name: LimitName | Literal["store_unavailable"]
    status: int
    message: str
    retry_after: float | None  # seconds; None: retrying will not help (a budget)
    counts: tuple[Count, ...] = ()

    @property
    def budget(self) -> bool:
        return self.name in BUDGETS


def _show(name: str, value: float) -> str:
    return f"${value:.4f}" if name in BUDGETS else f"{value:g}"


class Limiter:
    """Admits requests against a subject's limits; settles their reservations with what they used."""

    def __init__(
        self,
        store: CounterStore,
        on_store_failure: str,
        clock: Clock = time.time,
        on_failure: Callable[[], None] = lambda: None,
    ) -> None:
        self.store = store
        self._on_failure = on_failure
        self.on_store_failure = on_store_failure
        self.clock = clock
        self.store_failures = 0
        self.store_reachable = True
        self._warned_at = -math.inf
        self._windows: dict[Window, tuple[float, float]] = {}

    def _window(self, window: Window, now: float) -> tuple[float, float]:
        """The window's bounds, recomputed only when `now` leaves the last ones (months cost a gmtime)."""
        cached = self._windows.get(window)
        if cached is None or not cached[0] <= now < cached[1]:
            cached = self._windows[window] = bounds(window, now)
        return cached

    async def admit(
        self, subject: str, limits: Limits, reservation: Reservation
    ) -> Admission | Rejection | None:
        """None when the subject has no limits; else admitted (counters taken) or refused (nothing taken)."""
        named = limits.set()
        if not named:
            return None
        now = self.clock()
        checks, ends = [], []
        for name, limit in named:
            start, end = self._window(WINDOWS[name], now)
            limit_units = units(name, limit)
            if name == "requests_per_minute":
                amount = 1
            elif name == "tokens_per_minute":
                amount = reservation.tokens
            else:
                amount = units(name, reservation.usd)
            # A request that alone needs more than the limit is admitted into an empty window, not never.
            amount = min(amount, limit_units)
            checks.append(Check(counter_key(subject, name, start), limit_units, amount, end - now + GRACE_S))
            ends.append(end)
        try:
            failed, used = await self.store.admit(checks)
        except StoreUnavailable as exc:
            return self._store_failed(exc)
        self.store_reachable = True
        counts = tuple(
            Count(name, limit, value / NANO if name in BUDGETS else value, check.key, check.amount, end)
            for (name, limit), check, value, end in zip(named, checks, used, ends, strict=True)
        )
        if failed:
            return self._rejection(counts[failed - 1], counts, now)
        return Admission(subject, counts)

    def _rejection(self, count: Count, counts: tuple[Count, ...], now: float) -> Rejection:
        when = describe_reset(count.resets_at, now)
        if count.name in BUDGETS:
            period = "daily" if count.name == "budget_usd_per_day" else "monthly"
            message = (
                f"This key's {period} budget ({count.name} = {_show(count.name, count.limit)}) is spent: "
                f"{_show(count.name, count.used)} so far with this request's reservation on top. "
                f"It resets {when}; ask the proxy's operator to raise it sooner."
            )
            return Rejection(count.name, 429, message, None, counts)
        message = (
            f"Rate limit {count.name} = {_show(count.name, count.limit)} reached for this key "
            f"({_show(count.name, count.used)} used this minute); it frees {when}."
        )
        return Rejection(count.name, 429, message, max(count.resets_at - now, 0.001), counts)

    def _store_failed(self, exc: Exception) -> Admission | Rejection | None:
        self.store_failures += 1
        self.store_reachable = False
        self._on_failure()
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY_S:
            self._warned_at = now
            log.warning(
                "limits.store_unreachable",
                store=self.store.name,
                error=str(exc),
                on_store_failure=self.on_store_failure,
                hint="requests are forwarded unlimited"
                if self.on_store_failure == "open"
                else "requests get 503",
            )
        if self.on_store_failure == "open":
            return None
        return Rejection(
            "store_unavailable",
            503,
            "The proxy cannot reach its rate-limit store ([cluster] redis_url) and is set to refuse "
            "requests meanwhile ([limits] on_store_failure = closed); retry shortly.",
            1.0,
        )

    def settle(self, admission: Admission | None, tokens: int, usd: float) -> None:
        """Replace the reservation with what the request used (the store applies it in the background)."""
        if admission is None:
            return
        deltas = []
        for count in admission.counts:
            if count.name == "tokens_per_minute":
                actual = tokens
            elif count.name in BUDGETS:
                actual = units(count.name, usd)
            else:
                continue
            if actual != count.reserved:
                deltas.append((count.key, actual - count.reserved))
        if deltas:
            self.store.settle(deltas, self._store_failed)

    async def drain(self) -> None:
        """Wait for settlements still being written (on shutdown, and in tests before reading counters)."""
        await self.store.drain()

    async def seed(self, spend: dict[str, float], name: LimitName, window: tuple[float, float]) -> None:
        """Spend recorded before this start, per subject, into the window's counters."""
        now = self.clock()
        try:
            for subject, usd in spend.items():
                ttl = window[1] - now + GRACE_S
                await self.store.seed(counter_key(subject, name, window[0]), units(name, usd), ttl)
        except StoreUnavailable as exc:
            self._store_failed(exc)

    async def usage(self, subject: str, limits: Limits) -> dict[str, dict[str, float]]:
        """Each set limit with what the subject has used of it in the current window."""
        now = self.clock()
        names = limits.set()
        keys = [counter_key(subject, name, bounds(WINDOWS[name], now)[0]) for name, _ in names]
        values = await self.store.read(keys)
        return {
            name: {"limit": limit, "used": value / NANO if name in BUDGETS else value}
            for (name, limit), value in zip(names, values, strict=True)
        }
