"""Memory the proxy holds per session, and its peak on one huge body.

    .venv/bin/python -m bench.memory            # about two minutes
    .venv/bin/python -m bench.memory --quick    # fewer sessions, about 30 seconds
    .venv/bin/python -m bench.memory --sessions 50000   # the issue's 50,000 one-message conversations

Per session: the real proxy in a fresh process (the fake upstream in-process, recording nothing),
a warm-up, then N new conversations; Python allocations still held afterwards (tracemalloc) and RSS
growth, each divided by N, with the process-wide text caches cleared at both points (token counts
and index terms, memoised per distinct text: bounded by entry count, shared by all sessions).
"one message": each conversation is a single user message (nothing to
fold). "60 messages": each is 60 alternating turns of about 100 tokens, folded by the compressor.
Huge body: `python -m proxy` as a user runs it, sent one 60 MiB request of small content blocks;
its peak RSS (VmHWM) before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import io
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import aiohttp

HUGE_MIB = 60
WARMUP = 5


def rss_bytes(pid: int | str = "self", field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise LookupError(field)


def conversation(tag: str, length: int) -> list[dict[str, Any]]:
    if length == 1:
        return [{"role": "user", "content": f"Conversation {tag}: what is the plan for today?"}]
    topics = ("the deployment plan", "the database migration", "the billing export", "the cache layout")
    return [
        {
            "role": "user" if n % 2 == 0 else "assistant",
            "content": (
                f"Conversation {tag}, message {n}: about {topics[n % 4]}, we compared three options, "
                f"measured each twice and wrote down why option {n % 3} was kept for step {n}. "
            )
            * 3,
        }
        for n in range(length)
    ]


async def _per_session(count: int, length: int, traced: bool, settings: dict[str, str]) -> float:
    from tests.fake_upstream import running_fake_upstream

    with tempfile.TemporaryDirectory() as tmp:
        async with running_fake_upstream(record=False) as fake:
            return await _sessions_through(
                fake.anthropic_base_url, Path(tmp), count, length, traced, settings
            )


async def _sessions_through(
    upstream: str, tmp: Path, count: int, length: int, traced: bool, settings: dict[str, str]
) -> float:
    from proxy.app import create_app, start_server
    from proxy.config import load_config
    from proxy.logs import configure_logging

    config = load_config(
        tmp / "absent.ini",
        env={},
        upstream_anthropic_base_url=upstream,
        storage_database=str(tmp / "vidurai.db"),
        logging_level="warning",
        **settings,
    )
    configure_logging(config.logging, tty=False)
    runner, port = await start_server(create_app(config), "127.0.0.1", 0)
    url = f"http://127.0.0.1:{port}/v1/messages"
    headers = {"x-api-key": "sk-ant-bench-memory", "anthropic-version": "2023-06-01"}
    async with aiohttp.ClientSession() as http:

        async def send(tag: str) -> None:
            body = {"model": "claude-haiku-4-5", "max_tokens": 8, "messages": conversation(tag, length)}
            async with http.post(url, json=body, headers=headers) as response:
                assert response.status == 200, await response.text()
                await response.read()
                saved = response.headers["X-Vidurai-Stats"].split(";")[0]
                assert (saved != "tokens_saved=0") == (length > 1), saved  # long ones were compressed

        for n in range(WARMUP):
            await send(f"warm-{n}")
        await asyncio.sleep(1.0)  # the writer drains
        before = _held(traced)
        for n in range(count):
            await send(f"measured-{n}")
        await asyncio.sleep(1.0)
        after = _held(traced)
    await runner.cleanup()
    return (after - before) / count


def _held(traced: bool) -> int:
    """Bytes held now, without the process-wide text caches (bounded by entries; see the docstring)."""
    from proxy import tokens
    from proxy.compression import text

    tokens.clear_cache()
    for cached in (text.terms, text.stem):
        cached.cache_clear()
    gc.collect()
    return tracemalloc.get_traced_memory()[0] if traced else rss_bytes()


def _measure(args: tuple[int, int, bool, dict[str, str]]) -> float:
    count, length, traced, settings = args
    if traced:
        tracemalloc.start()
    return asyncio.run(_per_session(count, length, traced, settings))


def per_session(count: int, length: int, traced: bool, settings: dict[str, str]) -> float:
    """Bytes per session, measured in a fresh process."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return float(pool.apply(_measure, ((count, length, traced, settings),)))


def huge_body_peak() -> tuple[int, int, int, float]:
    """Peak RSS of `python -m proxy` before and after one 60 MiB body of small blocks."""
    block = {"type": "text", "text": "x"}
    blocks = (HUGE_MIB * 1024 * 1024) // len(json.dumps(block))
    message = {"role": "user", "content": [block] * blocks}
    data = json.dumps({"model": "claude-fake-1", "max_tokens": 8, "messages": [message]}).encode()
    del message
    with tempfile.TemporaryDirectory() as tmp:
        return asyncio.run(_huge_body(Path(tmp), data))


async def _huge_body(tmp: Path, data: bytes) -> tuple[int, int, int, float]:
    from tests.fake_upstream import running_fake_upstream

    async with running_fake_upstream(record=False) as fake:
        (tmp / "empty.ini").write_text("")
        env = {k: v for k, v in os.environ.items() if not k.startswith("VIDURAI_")}
        env.update(
            VIDURAI_CONFIG=str(tmp / "empty.ini"),
            VIDURAI_SERVER_PORT="0",
            VIDURAI_STORAGE_DATABASE=str(tmp / "vidurai.db"),
            VIDURAI_UPSTREAM_ANTHROPIC_BASE_URL=fake.anthropic_base_url,
            VIDURAI_UI_TERMINAL="off",
            VIDURAI_SERVER_MAX_BODY_MB="128",
        )
        log = tmp / "proxy.log"
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "proxy", env=env, stdout=subprocess.DEVNULL, stderr=log.open("wb")
        )
        try:
            url = await _listening_url(log, process)
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as http:
                before = rss_bytes(process.pid, "VmHWM")
                started = time.monotonic()
                headers = {
                    "x-api-key": "sk-ant-bench",
                    "anthropic-version": "2023-06-01",
                    "Content-Type": "application/json",
                }
                async with http.post(
                    url + "/v1/messages", data=io.BytesIO(data), headers=headers
                ) as response:
                    status = response.status
                    await response.read()
                elapsed = time.monotonic() - started
                after = rss_bytes(process.pid, "VmHWM")
        finally:
            process.terminate()
            await process.wait()
    return status, before, after, elapsed


async def _listening_url(log: Path, process: asyncio.subprocess.Process) -> str:
    """The URL from the proxy's "listening" line, once /health answers."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.returncode is None, "the proxy exited"
        for line in log.read_text(errors="replace").splitlines():  # noqa: ASYNC240 - a small local file
            if '"listening"' in line:
                return str(json.loads(line)["url"])
        await asyncio.sleep(0.1)
    raise TimeoutError("the proxy did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sessions", type=int, help="one-message conversations (default 2000, quick 300)")
    args = parser.parse_args()
    short, long_ = (300, 10) if args.quick else (2000, 40)
    short = args.sessions or short
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"load average {load} (the machine may be shared: figures vary between runs)\n")
    print("| conversation | sessions | max_active | tracemalloc per session | RSS per session |")
    print("|---|---:|---:|---:|---:|")
    for label, count, length, settings in (
        ("one message", short, 1, {}),
        ("60 messages, compressed", long_, 60, {}),
        ("60 messages, compressed", long_, 60, {"sessions_max_active": "5"}),
    ):
        traced = per_session(count, length, True, settings)
        rss = per_session(count, length, False, settings)
        active = settings.get("sessions_max_active", "1000")
        print(f"| {label} | {count} | {active} | {traced / 1024:,.1f} KiB | {rss / 1024:,.1f} KiB |")
    status, before, after, elapsed = huge_body_peak()
    print(
        f"\n{HUGE_MIB} MiB body of small content blocks: status {status} in {elapsed:.1f} s, "
        f"proxy peak RSS {before / 2**20:,.0f} MiB before, {after / 2**20:,.0f} MiB after"
    )


if __name__ == "__main__":
    main()
