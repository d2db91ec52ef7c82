"""Load generator for the overhead benchmark: keep-alive aiohttp clients timing every request."""

from __future__ import annotations

import asyncio
import json
import math
import statistics
import time

import aiohttp
import attrs


@attrs.frozen
class Target:
    """Where a client sends requests: base URLs as an SDK would be configured with them."""

    name: str
    anthropic_base_url: str  # without /v1, like ANTHROPIC_BASE_URL
    openai_base_url: str  # with /v1, like OPENAI_BASE_URL


@attrs.frozen
class Scenario:
    """One kind of request, as the Anthropic or OpenAI SDK would send it."""

    name: str
    provider: str  # "anthropic" or "openai"
    stream: bool

    def url(self, target: Target) -> str:
        if self.provider == "anthropic":
            return f"{target.anthropic_base_url}/v1/messages"
        return f"{target.openai_base_url}/chat/completions"

    def headers(self) -> dict[str, str]:
        common = {"content-type": "application/json", "user-agent": "vidurai-bench/1"}
        if self.provider == "anthropic":
            return {**common, "x-api-key": "sk-ant-bench", "anthropic-version": "2023-06-01"}
        return {**common, "authorization": "Bearer sk-bench"}

    def body(self, conversation: int) -> bytes:
        """A short conversation (below any compression threshold); one per concurrent worker."""
        messages = [{"role": "user", "content": f"Benchmark conversation {conversation}: say hello."}]
        body: dict[str, object] = {
            "model": "claude-fake-1" if self.provider == "anthropic" else "gpt-fake-1",
            "max_tokens": 64,
            "messages": messages,
        }
        if self.stream:
            body["stream"] = True  # OpenAI without stream_options, as the SDK sends it by default
        return json.dumps(body).encode()


SCENARIOS = (
    Scenario("Anthropic messages, JSON", "anthropic", False),
    Scenario("Anthropic messages, stream", "anthropic", True),
    Scenario("OpenAI chat, stream", "openai", True),
)


@attrs.define
class Samples:
    """Timings of one (scenario, target, concurrency) cell, accumulated over rounds; seconds."""

    ttfb: list[float] = attrs.field(factory=list)  # first byte of the body
    total: list[float] = attrs.field(factory=list)  # whole response read
    errors: int = 0
    first_error: str | None = None
    block_rps: list[float] = attrs.field(factory=list)  # one per concurrent block, in round order
    cpu_seconds: float = 0.0  # CPU the server behind the path used during the concurrent blocks
    cpu_requests: int = 0  # requests those blocks sent
    client_cpu_seconds: float = 0.0  # CPU the load generator itself used during those blocks

    @property
    def cpu_per_request(self) -> float:
        return self.cpu_seconds / self.cpu_requests if self.cpu_requests else math.nan

    @property
    def client_cpu_per_request(self) -> float:
        return self.client_cpu_seconds / self.cpu_requests if self.cpu_requests else math.nan

    @property
    def rps(self) -> float:
        """Median over blocks: a burst of load from elsewhere on the machine spoils one block, not all."""
        return statistics.median(self.block_rps) if self.block_rps else 0.0

    def error(self, message: str) -> None:
        self.errors += 1
        self.first_error = self.first_error or message


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of `values`; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def client_session(concurrency: int) -> aiohttp.ClientSession:
    """One keep-alive pool per target, as large as the highest concurrency."""
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency, force_close=False)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=30),
        auto_decompress=False,
        skip_auto_headers=("User-Agent",),
    )


async def _one(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str], samples: Samples
) -> float:
    """One request; returns when it finished (perf_counter), or 0 after an error."""
    started = time.perf_counter()
    first: float | None = None
    try:
        async with session.post(url, data=body, headers=headers) as response:
            async for chunk in response.content.iter_any():
                if first is None and chunk:
                    first = time.perf_counter()
            if response.status != 200:
                samples.error(f"HTTP {response.status} from {url}")
                return 0.0
    except (aiohttp.ClientError, TimeoutError) as exc:
        samples.error(f"{type(exc).__name__}: {exc} ({url})")
        return 0.0
    done = time.perf_counter()
    samples.ttfb.append((first or done) - started)
    samples.total.append(done - started)
    return done


async def sequential(
    session: aiohttp.ClientSession, target: Target, scenario: Scenario, count: int, samples: Samples
) -> None:
    """Concurrency 1: `count` requests one after another on one keep-alive connection."""
    url, headers, body = scenario.url(target), scenario.headers(), scenario.body(0)
    for _ in range(count):
        await _one(session, url, body, headers, samples)


async def concurrent(
    session: aiohttp.ClientSession,
    target: Target,
    scenario: Scenario,
    concurrency: int,
    duration: float,
    samples: Samples,
) -> None:
    """`concurrency` workers (one conversation each) sending back to back for `duration` seconds.

    Throughput counts the requests finished within `duration`; those still running then are
    timed but not counted, which offsets the ramp-up at the start.
    """
    url, headers = scenario.url(target), scenario.headers()
    deadline = time.perf_counter() + duration
    finished = 0

    async def worker(index: int) -> None:
        nonlocal finished
        body = scenario.body(index)
        while time.perf_counter() < deadline:
            if 0 < await _one(session, url, body, headers, samples) <= deadline:
                finished += 1

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    samples.block_rps.append(finished / duration)
