"""Cluster state in Redis: a session's previous-request time shared by instances, and what happens
when Redis goes away and comes back (a redis-server of the test's own, killed and restarted)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import structlog
from redis.asyncio import Redis

from proxy.cluster import CALIBRATION_TTL, PROBE_INTERVAL, SESSION_TIME_TTL, Cluster
from proxy.config import ClusterConfig
from proxy.tokens import Calibration
from tests.cluster_support import SHARED_REDIS_URL, own_redis, shared_redis_prefix


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    async with shared_redis_prefix() as value:
        yield value


def _config(url: str, prefix: str = "vidurai-test:", timeout: float = 0.25) -> ClusterConfig:
    return ClusterConfig(redis_url=url, key_prefix=prefix, timeout=timeout)


async def _wait_for(condition: object, seconds: float = 5 * PROBE_INTERVAL) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_without_redis_every_answer_is_local() -> None:
    cluster = Cluster(_config(""))
    await cluster.start()
    assert await cluster.previous_request_at("s1", 100.0, local=42.0) == 42.0
    health = cluster.health()
    assert health.redis is False and not cluster.degraded
    assert health.failed_calls == 0
    await cluster.close()


async def test_instances_share_the_previous_request_time(prefix: str) -> None:
    first, second = Cluster(_config(SHARED_REDIS_URL, prefix)), Cluster(_config(SHARED_REDIS_URL, prefix))
    await first.start()
    await second.start()
    try:
        # Each instance's local view knows nothing of the other's turns; Redis does.
        assert await first.previous_request_at("conv", 1000.5, local=None) is None
        assert await second.previous_request_at("conv", 1010.25, local=None) == 1000.5
        assert await first.previous_request_at("conv", 1020.0, local=1000.5) == 1010.25
        assert await first.previous_request_at("other", 1030.0, local=None) is None
        client = Redis.from_url(SHARED_REDIS_URL)
        keys = sorted([key.decode() async for key in client.scan_iter(match=prefix + "*")])
        assert keys == [prefix + "session:conv:at", prefix + "session:other:at"]
        for key in keys:  # nothing in Redis outlives what it is for
            assert 0 < await client.ttl(key) <= SESSION_TIME_TTL
        await client.aclose()
        assert first.health().connected and first.health().failed_calls == 0
    finally:
        await first.close()
        await second.close()


async def test_redis_lost_and_back(tmp_path: Path) -> None:
    async with own_redis(tmp_path) as redis:
        cluster = Cluster(_config(redis.url))
        await cluster.start()
        try:
            assert await cluster.previous_request_at("s", 1.0, local=None) is None
            assert await cluster.previous_request_at("s", 2.0, local=None) == 1.0

            with structlog.testing.capture_logs() as logs:
                await redis.kill()
                started = time.monotonic()
                # Every call answers at once from local state; the first failure opens the incident.
                for n in range(20):
                    assert await cluster.previous_request_at("s", 3.0 + n, local=0.5) == 0.5
                assert time.monotonic() - started < 1.0  # calls are not each waiting out a timeout
                await asyncio.sleep(2 * PROBE_INTERVAL)  # the probe keeps failing, quietly
                health = cluster.health()
                assert cluster.degraded and not health.connected
                assert health.failing_since is not None and health.incidents == 1
                assert health.failed_calls == 20
                assert health.last_error and "Connection" in health.last_error

                await redis.start()  # same port, empty: a restarted Redis without persistence
                await _wait_for(lambda: not cluster.degraded)
                assert await cluster.previous_request_at("s", 30.0, local=None) is None
                assert await cluster.previous_request_at("s", 31.0, local=None) == 30.0
            warnings = [entry["event"] for entry in logs if entry["log_level"] == "warning"]
            assert len(warnings) == 2, warnings  # one line when lost, one when back
            assert warnings[0].startswith("redis unreachable") and warnings[1].startswith("redis reachable")
            assert cluster.health().failing_since is None
        finally:
            await cluster.close()


async def test_a_proxy_starts_while_redis_is_down(tmp_path: Path) -> None:
    async with own_redis(tmp_path) as redis:
        await redis.kill()
        cluster = Cluster(_config(redis.url))
        await cluster.start()
        try:
            assert cluster.degraded
            assert await cluster.previous_request_at("s", 5.0, local=4.0) == 4.0
            await redis.start()
            await _wait_for(lambda: not cluster.degraded)
        finally:
            await cluster.close()


async def test_instances_pool_token_calibration(prefix: str) -> None:
    one, two = Calibration(shared=True), Calibration(shared=True)
    alone = Calibration()  # one instance that saw every sample itself
    first, second = Cluster(_config(SHARED_REDIS_URL, prefix)), Cluster(_config(SHARED_REDIS_URL, prefix))
    try:
        one.observe("claude-x", 100, 150)
        alone.observe("claude-x", 100, 150)
        await first.pool_calibration(one)
        await second.pool_calibration(two)
        assert two.ratio("claude-x") == 1.5  # learned from the other instance's request

        two.observe("claude-x", 100, 200)
        alone.observe("claude-x", 100, 200)
        await second.pool_calibration(two)
        await first.pool_calibration(one)
        # Both report what one instance would have: the samples smoothed in the order they came.
        assert one.ratio("claude-x") == two.ratio("claude-x") == pytest.approx(alone.ratio("claude-x"))
        assert one.adjust("claude-x", 1000) == alone.adjust("claude-x", 1000) == 1600
        client = Redis.from_url(SHARED_REDIS_URL)
        assert 0 < await client.ttl(prefix + "calibration") <= CALIBRATION_TTL
        await client.aclose()
    finally:
        await first.close()
        await second.close()
