"""Limit counters and windows: the in-process store and the Redis store answer alike; virtual keys,
spend and refusals alike in both storage engines."""

from __future__ import annotations

import calendar
from collections.abc import AsyncIterator

import attrs
import pytest

from proxy.cluster import Cluster
from proxy.config import ClusterConfig
from proxy.limits.counters import Check, CounterStore, MemoryCounters, RedisCounters
from proxy.limits.keyring import VirtualKey
from proxy.limits.limiter import Limiter, Limits, Rejection, Reservation
from proxy.limits.windows import bounds
from proxy.records import RequestRecord
from proxy.storage import open_store
from proxy.storage.limits import REJECTED_PREFIX
from tests.cluster_support import SHARED_REDIS_URL, shared_redis_prefix


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[CounterStore]:
    if request.param == "memory":
        yield MemoryCounters()
        return
    async with shared_redis_prefix() as prefix:
        cluster = Cluster(ClusterConfig(redis_url=SHARED_REDIS_URL, key_prefix=prefix, timeout=1.0))
        await cluster.start()
        try:
            yield RedisCounters(cluster)
        finally:
            await cluster.close()


async def test_checks_are_taken_all_or_none(store: CounterStore) -> None:
    rpm, budget = Check("t:rpm", 2, 1, 60), Check("t:usd", 100, 60, 60)
    assert await store.admit([rpm, budget]) == (0, [0, 0])
    # The budget cannot take another 60: refused, and the request counter is left as it was.
    assert await store.admit([rpm, budget]) == (2, [1, 60])
    assert await store.read(["t:rpm", "t:usd"]) == [1, 60]
    await store.adjust([("t:usd", -50)])  # settled: it cost 10, not the 60 reserved
    assert await store.admit([rpm, budget]) == (0, [1, 10])
    assert await store.admit([rpm, budget]) == (1, [2, 70])


async def test_settling_an_expired_window_does_not_revive_it(store: CounterStore) -> None:
    await store.adjust([("gone", 5)])
    assert await store.read(["gone"]) == [0]
    await store.seed("seeded", 7, 60)
    await store.seed("seeded", 9, 60)  # another instance seeded first: kept
    assert await store.read(["seeded"]) == [7]


async def test_a_budget_reached_mid_day_refuses_until_midnight_utc() -> None:
    day = calendar.timegm((2026, 12, 1, 0, 0, 0))
    clock = Clock(day + 15 * 3600)
    limiter = Limiter(MemoryCounters(clock), "open", clock)
    limits = Limits(budget_usd_per_day=1.0)
    first = await limiter.admit("t", limits, Reservation(usd=0.5))
    assert first is not None and not isinstance(first, Rejection)
    limiter.settle(first, tokens=0, usd=1.25)  # the answer cost more than reserved
    await limiter.drain()
    refused = await limiter.admit("t", limits, Reservation(usd=0.01))
    assert isinstance(refused, Rejection) and refused.budget and refused.retry_after is None
    assert "budget_usd_per_day = $1.0000" in refused.message and "2026-12-02 00:00 UTC" in refused.message
    clock.now = day + 86400 + 1  # the next UTC day
    assert not isinstance(await limiter.admit("t", limits, Reservation(usd=0.01)), Rejection)


async def test_rate_limit_frees_at_the_minute() -> None:
    clock = Clock(1_800_000_000.0 + 30)
    limiter = Limiter(MemoryCounters(clock), "open", clock)
    limits = Limits(requests_per_minute=1)
    assert not isinstance(await limiter.admit("t", limits, Reservation()), Rejection)
    refused = await limiter.admit("t", limits, Reservation())
    assert isinstance(refused, Rejection) and refused.retry_after == pytest.approx(30)
    assert not isinstance(await limiter.admit("other", limits, Reservation()), Rejection)
    clock.now += 30
    assert not isinstance(await limiter.admit("t", limits, Reservation()), Rejection)


def test_month_window_crosses_the_year() -> None:
    start, end = bounds("month", calendar.timegm((2026, 12, 31, 23, 0, 0)))
    assert (start, end) == (calendar.timegm((2026, 12, 1, 0, 0, 0)), calendar.timegm((2027, 1, 1, 0, 0, 0)))


def test_a_key_s_own_limits_replace_the_defaults_they_set() -> None:
    defaults = Limits(requests_per_minute=50, budget_usd_per_day=5.0)
    assert Limits(requests_per_minute=600).over(defaults) == Limits(600, None, 5.0, None)


async def test_the_store_keeps_virtual_keys_spend_and_refusals(database: str) -> None:
    """The limits' part of the store's contract, alike on both engines."""
    store = open_store(database)
    await store.start()
    try:
        limits = store.limits()
        key = VirtualKey(
            "id-1", "alice", "a1" * 8, "anthropic", "REAL_KEY", Limits(5, None, 2.5, None), 1000.0
        )
        assert limits.add_key(key, "hash-alice")
        assert not limits.add_key(attrs.evolve(key, id="id-2"), "hash-other")  # the name is taken
        assert limits.update_key("alice", {"requests_per_minute": None, "tokens_per_minute": 900}, 1001.0)
        [found] = limits.keys()
        assert found.limits == Limits(None, 900, 2.5, None) and found.upstream_key_env == "REAL_KEY"
        assert limits.revoke_key("alice", 1002.0)
        assert not limits.revoke_key("alice", 1003.0) and not limits.update_key(
            "alice", {"tokens_per_minute": 1}, 1
        )
        assert limits.keys_by_hash()["hash-alice"].revoked_at == 1002.0

        for at, tenant, cost, status, error in [
            (2000.0, "t1", 0.25, 200, None),
            (2001.0, "t1", 0.5, 200, None),
            (500.0, "t1", 9.0, 200, None),  # before the window
            (2002.0, "t2", None, 429, REJECTED_PREFIX + "requests_per_minute"),
            (2003.0, "t2", None, 429, REJECTED_PREFIX + "requests_per_minute"),
        ]:
            store.add_request(
                RequestRecord(
                    id=f"r{at}", created_at=at, provider="anthropic", endpoint="messages", method="POST",
                    path="/v1/messages", tenant=tenant, cost_usd=cost, status=status, error=error,
                )
            )  # fmt: skip
        assert await store.flush()
        assert limits.spend_since(1000.0) == {"t1": pytest.approx(0.75)}
        assert limits.rejections_since(1000.0) == [("t2", "requests_per_minute", 2)]
    finally:
        await store.close()
