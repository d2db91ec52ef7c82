"""RSS growth of `python -m proxy` over many one-message conversations (a new session each)."""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from pathlib import Path

import attrs

from . import wrk
from .servers import Proxy, rss_bytes

CONNECTIONS = 32
WARM_UP = 2_000
MIB = 1024 * 1024


@attrs.frozen
class SessionMemoryResult:
    conversations: int
    rss_before: int
    rss_after: int
    active_sessions: int  # sessions the proxy holds in memory at the end, per /health
    stored_sessions: int  # sessions in SQLite at the end
    errors: int

    @property
    def growth_mib(self) -> float:
        return (self.rss_after - self.rss_before) / MIB

    def describe(self) -> str:
        per = (self.rss_after - self.rss_before) / self.conversations
        return (
            f"Memory (bench/session_memory.py): RSS {self.rss_before / MIB:.0f} → "
            f"{self.rss_after / MIB:.0f} MiB "
            f"over {self.conversations:,} one-message conversations (**+{self.growth_mib:.0f} MiB**, "
            f"{per / 1024:.1f} KiB each); {self.active_sessions:,} sessions held in memory at the end, "
            f"{self.stored_sessions:,} stored; {self.errors} errors."
        )


def _health(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url + "/health", timeout=10) as response:
        result: dict[str, object] = json.loads(response.read())
        return result


def _send(proxy: Proxy, script: Path, count: int) -> int:
    result = wrk.run(proxy.url + "/v1/messages", script, connections=CONNECTIONS, seconds=count / 100 + 30)
    if result.requests < count:
        print(f"  only {result.requests} of {count} requests were sent", file=sys.stderr)
    return result.errors + result.status_errors


def measure(upstream: str, workdir: Path, conversations: int) -> SessionMemoryResult:
    """A fresh proxy, warmed up; then `conversations` new ones through it with wrk."""
    proxy = Proxy.start(upstream, workdir)
    headers = {
        "content-type": "application/json",
        "x-api-key": "sk-ant-bench",
        "anthropic-version": "2023-06-01",
    }
    template = json.dumps(
        {"model": "claude-fake-1", "max_tokens": 64, "messages": [{"role": "user", "content": "%s %d %d"}]}
    )
    try:
        warm = wrk.script(workdir / "warm.lua", headers, [template % ("warm-up", 0, 0)], limit=WARM_UP)
        _send(proxy, warm, WARM_UP)
        time.sleep(1.0)  # the writer's flush of the warm-up
        before = rss_bytes(proxy.pid)
        body = template.replace("%s", "Conversation").replace("%d %d", "%d.%d")
        script = wrk.script(workdir / "new.lua", headers, [body], unique=True, limit=conversations)
        errors = _send(proxy, script, conversations)
        time.sleep(1.5)  # written and idle
        after = rss_bytes(proxy.pid)
        active = int(_health(proxy.url)["active_sessions"])  # type: ignore[call-overload]
    finally:
        proxy.stop()
    from .writer_rate import stored_sessions

    return SessionMemoryResult(conversations, before, after, active, stored_sessions(proxy.database), errors)
