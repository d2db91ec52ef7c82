"""Shared fixtures: the fake upstream, the proxy served for real on loopback, and SDK clients."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import openai
import pytest
from aiohttp import web
from playwright.async_api import Browser, async_playwright

from proxy.config import Config, load_config
from tests.databases import postgres_database
from tests.fake_upstream import FakeUpstream, running_fake_upstream

ANTHROPIC_KEY = "sk-ant-test-0123456789"
OPENAI_KEY = "sk-test-0123456789"
# Generous for loopback, yet a broken proxy fails a test instead of hanging the suite.
CLIENT_TIMEOUT = 20.0

ProxyFactory = Callable[..., Awaitable[str]]
# Debian's Chromium, driven by Playwright in the browser tests.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """An empty PostgreSQL database of this test's own (random name), dropped afterwards."""
    with postgres_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """`[storage] database` for each engine in turn: a SQLite file in tmp_path, then a PostgreSQL URL."""
    if request.param == "sqlite":
        yield str(tmp_path / "vidurai.db")
        return
    with postgres_database() as url:
        yield url


@pytest.fixture
async def fake_upstream() -> AsyncIterator[FakeUpstream]:
    """A started FakeUpstream (see tests/fake_upstream.py for its scenarios)."""
    async with running_fake_upstream() as fake:
        yield fake


def _settings(fake: FakeUpstream, tmp_path: Path, overrides: dict[str, Any]) -> dict[str, str]:
    settings = {
        "upstream_anthropic_base_url": fake.anthropic_base_url,
        "upstream_openai_base_url": fake.openai_base_url,
        "upstream_read_timeout": "5",
        "upstream_connect_timeout": "2",
        "storage_database": str(tmp_path / "vidurai.db"),
    }
    settings.update({key: str(value) for key, value in overrides.items()})
    return settings


@pytest.fixture
def proxy_config(fake_upstream: FakeUpstream, tmp_path: Path) -> Config:
    """Defaults plus the fake upstream's URLs and a database in tmp_path; no ini file, no environment."""
    return load_config(path=tmp_path / "absent.ini", env={}, **_settings(fake_upstream, tmp_path, {}))


@pytest.fixture
async def make_proxy(fake_upstream: FakeUpstream, tmp_path: Path) -> AsyncIterator[ProxyFactory]:
    """Start a proxy with setting overrides (`upstream_read_timeout="0.5"`, ...); returns its URL."""
    from proxy.app import create_app, start_server  # imported late: test_config runs without it

    runners: list[web.AppRunner] = []

    async def start(**overrides: Any) -> str:
        # The first proxy uses proxy_config's database; later ones get their own file.
        database = tmp_path / (f"vidurai-{len(runners)}.db" if runners else "vidurai.db")
        settings = _settings(fake_upstream, tmp_path, {"storage_database": database, **overrides})
        config = load_config(path=tmp_path / "absent.ini", env={}, **settings)
        # start_server is what `python -m proxy` uses, so tests run the production server settings.
        runner, port = await start_server(create_app(config), "127.0.0.1", 0)
        runners.append(runner)
        return f"http://127.0.0.1:{port}"

    yield start
    for runner in reversed(runners):
        await runner.cleanup()


@pytest.fixture
async def proxy_url(make_proxy: ProxyFactory) -> str:
    """The URL of a proxy with the default test settings, in front of the fake upstream."""
    return await make_proxy()


@pytest.fixture
def closed_port_url() -> str:
    """A loopback URL where nothing listens (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def anthropic_client(base_url: str, **kwargs: Any) -> anthropic.AsyncAnthropic:
    """An Anthropic SDK client as a user would build it; no retries unless asked."""
    kwargs.setdefault("api_key", ANTHROPIC_KEY)
    kwargs.setdefault("max_retries", 0)
    kwargs.setdefault("timeout", CLIENT_TIMEOUT)
    return anthropic.AsyncAnthropic(base_url=base_url, **kwargs)


def openai_client(base_url: str, **kwargs: Any) -> openai.AsyncOpenAI:
    """An OpenAI SDK client as a user would build it; no retries unless asked."""
    kwargs.setdefault("api_key", OPENAI_KEY)
    kwargs.setdefault("max_retries", 0)
    kwargs.setdefault("timeout", CLIENT_TIMEOUT)
    return openai.AsyncOpenAI(base_url=base_url, **kwargs)


@pytest.fixture
async def anthropic_sdk(proxy_url: str) -> AsyncIterator[anthropic.AsyncAnthropic]:
    """Anthropic SDK pointed at the proxy (ANTHROPIC_BASE_URL=proxy)."""
    async with anthropic_client(proxy_url) as client:
        yield client


@pytest.fixture
async def openai_sdk(proxy_url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    """OpenAI SDK pointed at the proxy (OPENAI_BASE_URL=proxy/v1)."""
    async with openai_client(proxy_url + "/v1") as client:
        yield client


@pytest.fixture
async def direct_anthropic(fake_upstream: FakeUpstream) -> AsyncIterator[anthropic.AsyncAnthropic]:
    """Anthropic SDK talking to the fake upstream directly, for "same as without the proxy" checks."""
    async with anthropic_client(fake_upstream.anthropic_base_url) as client:
        yield client


@pytest.fixture
async def direct_openai(fake_upstream: FakeUpstream) -> AsyncIterator[openai.AsyncOpenAI]:
    """OpenAI SDK talking to the fake upstream directly."""
    async with openai_client(fake_upstream.openai_base_url) as client:
        yield client


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain HTTP client for what the SDKs cannot show (raw bytes, odd headers, bad bodies)."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=CLIENT_TIMEOUT)) as session:
        yield session


@pytest.fixture
def chromium() -> str:
    """Debian's Chromium; a failure, not a skip, when absent: the dashboard must be tested."""
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the dashboard is tested in Debian's Chromium; "
            "install it with `apt-get install -y chromium` (.ci/run does when absent)"
        )
    return CHROMIUM


@pytest.fixture
async def browser(chromium: str) -> AsyncIterator[Browser]:
    """Chromium driven by Playwright (never `playwright install`: nothing is downloaded)."""
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()
