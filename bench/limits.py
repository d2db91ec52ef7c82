"""What admission costs: the proxy with limits off, on with in-process counters, and on with the
counters in Redis, under the same wrk load (Anthropic JSON messages at concurrency 32).

Every limit is set (requests and tokens per minute, budgets per day and month) and high enough
that every request is admitted, so each one takes four counters before forwarding and settles
tokens and dollars after. CPU per request of the proxy process is the figure to compare (least
disturbed by other load on the shared machine); req/s is printed beside it.

    .venv/bin/python -m bench.limits            # alone: about a minute
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import attrs
import redis

from proxy.cluster import Cluster
from proxy.config import ClusterConfig
from proxy.limits.counters import CounterStore, MemoryCounters, RedisCounters
from proxy.limits.limiter import Admission, Limiter, Limits, Reservation

from . import wrk
from .servers import Proxy, Server, cpu_seconds

VARIANTS = ("off", "memory", "redis_off", "redis")
TITLES = {
    "off": "Limits off",
    "memory": "Limits on, in process",
    "redis_off": "Limits off, [cluster] redis_url set",
    "redis": "Limits on, counters in Redis",
}
# Each variant with limits on is compared with the same deployment without them: with a Redis
# the proxy already shares session times through it, which is not admission's cost.
BASELINE = {"memory": "off", "redis": "redis_off"}
CONNECTIONS = 32
REDIS_URL = "redis://127.0.0.1:6379/0"  # the machine's Redis; the bench's keys are deleted after
# Every limit set, none ever reached: the cost of checking and settling, not of refusing.
LIMITS = {
    "limits_requests_per_minute": "1000000000",
    "limits_tokens_per_minute": "1000000000000",
    "limits_budget_usd_per_day": "1000000000",
    "limits_budget_usd_per_month": "1000000000",
}
# A price for the fake model, so each request's reservation and settlement are real dollars.
PRICING = "[pricing]\nclaude-fake = 3, 15, 3.75, 0.30\n"


@attrs.define
class Variant:
    runs: list[wrk.WrkResult] = attrs.Factory(list)
    cpu_seconds: float = 0.0

    @property
    def rps(self) -> float:
        return statistics.median(run.rps for run in self.runs)

    @property
    def cpu_ms(self) -> float:
        requests = sum(run.requests for run in self.runs)
        return self.cpu_seconds * 1000 / requests if requests else float("nan")


@attrs.frozen
class LimitsResult:
    variants: dict[str, Variant]
    rounds: int
    seconds: float
    alone: dict[str, float]  # CPU microseconds per admission and settlement, by store and way

    def describe(self) -> str:
        lines = [
            "Admission alone (bench/limits.py, in this process): Limiter.admit and settle with all four "
            f"limits, CPU microseconds per request over {ALONE_REQUESTS:,} requests: "
            + "; ".join(f"{name} {value:.1f} µs" for name, value in self.alone.items())
            + ".",
            "",
            f"Admission cost (bench/limits.py): wrk, Anthropic JSON messages at concurrency {CONNECTIONS}, "
            f"{self.rounds} rounds of {self.seconds:g} s per variant, order rotated; every limit set and "
            "none reached (four counters taken and settled per request).",
            "",
            "| Deployment | req/s | Proxy CPU ms/req | Admission CPU ms/req | Throughput vs limits off |",
            "|---|---:|---:|---:|---:|",
        ]
        worst = 1.0
        for name in VARIANTS:
            variant = self.variants[name]
            cost, versus = "—", "—"
            if name in BASELINE:
                baseline = self.variants[BASELINE[name]]
                # CPU per request is the inverse of what one saturated core serves: its ratio is
                # the throughput ratio with the noise of other load on the machine taken out.
                share = baseline.cpu_ms / variant.cpu_ms
                worst = min(worst, share)
                cost, versus = f"{variant.cpu_ms - baseline.cpu_ms:+.3f}", f"{share:.0%}"
            lines.append(f"| {TITLES[name]} | {variant.rps:.0f} | {variant.cpu_ms:.3f} | {cost} | {versus} |")
        verdict = "met" if worst >= 0.9 else "**not met**"
        lines += ["", f"- limits on within 10% of limits off (CPU per request): worst {worst:.0%}, {verdict}"]
        return "\n".join(lines)


def measure(upstream: str, work: Path, rounds: int = 3, seconds: float = 3.0) -> LimitsResult:
    """The three variants against one upstream, each its own `python -m proxy` process."""
    prefix = f"vidurai-bench-{os.urandom(4).hex()}:"
    settings = {
        "off": {},
        "memory": LIMITS,
        "redis_off": {"cluster_redis_url": REDIS_URL, "cluster_key_prefix": prefix},
        "redis": {**LIMITS, "cluster_redis_url": REDIS_URL, "cluster_key_prefix": prefix},
    }
    proxies: dict[str, Proxy] = {}
    try:
        for name in VARIANTS:
            proxies[name] = Proxy.start(upstream, work / name, PRICING, **settings[name])
        lua = wrk.script(
            work / "limits.lua",
            {
                "content-type": "application/json",
                "x-api-key": "sk-ant-bench",
                "anthropic-version": "2023-06-01",
            },
            [
                '{"model": "claude-fake-1", "max_tokens": 64, "messages": '
                f'[{{"role": "user", "content": "Limits benchmark {n}: say hello."}}]}}'
                for n in range(CONNECTIONS)
            ],
        )
        for proxy in proxies.values():  # connections and caches warm before anything counts
            wrk.run(proxy.url + "/v1/messages", lua, connections=CONNECTIONS, seconds=1)
        variants = {name: Variant() for name in VARIANTS}
        for round_no in range(rounds):
            order = VARIANTS[round_no % 4 :] + VARIANTS[: round_no % 4]
            print(f"  limits round {round_no + 1}/{rounds}: {', '.join(order)}", file=sys.stderr)
            for name in order:
                proxy, variant = proxies[name], variants[name]
                before = cpu_seconds(proxy.pid)
                variant.runs.append(
                    wrk.run(proxy.url + "/v1/messages", lua, connections=CONNECTIONS, seconds=seconds)
                )
                variant.cpu_seconds += cpu_seconds(proxy.pid) - before
        return LimitsResult(variants, rounds, seconds, asyncio.run(_alone(prefix)))
    finally:
        for proxy in proxies.values():
            proxy.stop()
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)
        client.close()


ALONE_REQUESTS = 20_000
ALL_LIMITS = Limits(10**9, 10**12, 1e9, 1e9)


async def _admit_settle(limiter: Limiter, subject: str) -> None:
    admission = await limiter.admit(subject, ALL_LIMITS, Reservation(40, 0.001))
    assert isinstance(admission, Admission)
    limiter.settle(admission, 49, 0.0004)


async def _per_request(store: CounterStore, concurrent: int) -> float:
    """CPU microseconds per admission and settlement, `concurrent` requests at a time."""
    limiter = Limiter(store, "closed")
    for _ in range(200):  # connections opened, the script loaded
        await _admit_settle(limiter, "warm")
    started = time.process_time()
    for _ in range(ALONE_REQUESTS // concurrent):
        if concurrent == 1:
            await _admit_settle(limiter, "t0")  # as a handler does: no task of its own
        else:
            await asyncio.gather(*(_admit_settle(limiter, f"t{n}") for n in range(concurrent)))
    await limiter.drain()
    return (time.process_time() - started) / (ALONE_REQUESTS // concurrent * concurrent) * 1e6


async def _alone(prefix: str) -> dict[str, float]:
    cluster = Cluster(ClusterConfig(redis_url=REDIS_URL, key_prefix=prefix, timeout=5.0))
    await cluster.start()
    try:
        return {
            "in process": await _per_request(MemoryCounters(), 1),
            "Redis, one at a time": await _per_request(RedisCounters(cluster), 1),
            f"Redis, {CONNECTIONS} at a time": await _per_request(RedisCounters(cluster), CONNECTIONS),
        }
    finally:
        await cluster.close()


def main(argv: list[str] | None = None) -> int:
    description = (__doc__ or "").splitlines()[0]
    parser = argparse.ArgumentParser(prog="python -m bench.limits", description=description)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args(argv)
    wrk.binary()
    with tempfile.TemporaryDirectory(prefix="vidurai-bench-limits-") as tmp:
        upstream = Server.start("upstream")
        try:
            result = measure(upstream.url, Path(tmp), args.rounds, args.seconds)
        finally:
            upstream.stop()
    print(result.describe())
    return 0


if __name__ == "__main__":
    sys.exit(main())
