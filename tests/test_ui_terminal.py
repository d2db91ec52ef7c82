"""The terminal dashboard, drawn headless from a real SQLite file, and when it is shown at all."""

from __future__ import annotations

import asyncio
import io
import logging
import time
from pathlib import Path
from typing import Any

import pytest
import structlog
from rich.console import Console

from proxy.records import RequestRecord, SessionRecord, Usage
from proxy.storage import open_store
from proxy.ui.terminal import TerminalUI, WarningBuffer, should_show
from tests.databases import write_db

TENANT_A = "a1b2c3d4e5f60718"
TENANT_B = "0f1e2d3c4b5a6978"


def known_records(now: float) -> tuple[list[SessionRecord], list[RequestRecord]]:
    """Four requests whose totals the tests can predict (one upstream 429 among them)."""
    sessions = [
        SessionRecord(
            id="sess-alpha-0001", tenant=TENANT_A, created_at=now - 300, last_seen_at=now - 20, messages=42
        ),
        SessionRecord(
            id="sess-beta-00002", tenant=TENANT_B, created_at=now - 200, last_seen_at=now - 10, messages=7
        ),
    ]
    requests = [
        RequestRecord(
            id="r1",
            created_at=now - 40,
            provider="anthropic",
            endpoint="messages",
            path="/v1/messages",
            session_id="sess-alpha-0001",
            tenant=TENANT_A,
            model="claude-sonnet-5",
            status=200,
            duration_ms=850.0,
            ttfb_ms=120.0,
            overhead_ms=3.5,
            usage=Usage(12000, 3000, 4000, 1000),
            tokens_original_est=50000,
            tokens_forwarded_est=17000,
            tokens_saved=33000,
            messages_original=42,
            messages_forwarded=12,
            cost_usd=0.12345,
            cost_saved_usd=0.099,
            method="POST",
            stream=True,
        ),
        RequestRecord(
            id="r2",
            created_at=now - 30,
            provider="anthropic",
            endpoint="messages",
            path="/v1/messages",
            session_id="sess-alpha-0001",
            tenant=TENANT_A,
            model="claude-sonnet-5",
            status=200,
            duration_ms=1450.0,
            overhead_ms=2.5,
            usage=Usage(11000, 2500, 0, 0),
            tokens_original_est=52000,
            tokens_forwarded_est=11000,
            tokens_saved=41000,
            cost_usd=1.5,
            cost_saved_usd=0.8765,
            method="POST",
            stream=True,
        ),
        RequestRecord(
            id="r3",
            created_at=now - 20,
            provider="openai",
            endpoint="chat_completions",
            path="/v1/chat/completions",
            session_id="sess-beta-00002",
            tenant=TENANT_B,
            model="gpt-5.4",
            status=200,
            duration_ms=420.0,
            overhead_ms=1.0,
            usage=Usage(900, 150, 0, 0),
            tokens_original_est=1000,
            tokens_forwarded_est=1000,
            tokens_saved=0,
            cost_usd=0.00375,
            cost_saved_usd=0.0,
            method="POST",
            stream=True,
        ),
        RequestRecord(
            id="r4",
            created_at=now - 10,
            provider="openai",
            endpoint="chat_completions",
            path="/v1/chat/completions",
            session_id="sess-beta-00002",
            tenant=TENANT_B,
            model="gpt-5.4",
            status=429,
            duration_ms=35.0,
            error="upstream 429 rate_limit_exceeded",
            method="POST",
        ),
    ]
    return sessions, requests


@pytest.fixture
async def known_metrics(tmp_path: Path) -> dict[str, Any]:
    now = time.time()
    db = await write_db(tmp_path / "ui.db", *known_records(now))
    return await open_store(db).metrics_json(now=now)


def headless(width: int = 120, height: int = 40) -> Console:
    return Console(record=True, width=width, height=height, file=io.StringIO(), color_system=None)


def screen_text(
    metrics: dict[str, Any], width: int = 120, height: int = 40, warnings: WarningBuffer | None = None
) -> str:
    console = headless(width, height)
    ui = TerminalUI(open_store("ui.db"), console=console, warnings=warnings, url="http://127.0.0.1:8080")
    console.print(ui.render(metrics))
    return console.export_text()


def test_totals_sessions_and_requests_are_on_screen(known_metrics: dict[str, Any]) -> None:
    totals = known_metrics["totals"]
    assert (totals["requests"], totals["errors"], totals["tokens_saved"]) == (4, 1, 74000)
    text = screen_text(known_metrics)
    lines = text.splitlines()
    assert len(lines) == 40  # the layout fills the screen exactly, no scrolling
    for expected in (
        "23,900",  # tokens in: 12,000 + 11,000 + 900
        "5,650",  # tokens out
        "4,000 / 1,000",  # cache read / write
        "74,000",  # tokens saved
        "71.8%",  # 74,000 / 103,000 estimated
        "$1.63",  # cost: 0.12345 + 1.5 + 0.00375 (>= $1: two decimals)
        "$0.9755",  # cost saved (< $1: four decimals)
        "2 / 2",  # sessions active / all
        "689 ms",
    ):  # average latency (850 + 1450 + 420 + 35) / 4 = 688.75
        assert expected in text, expected
    # Active sessions: tenant prefix, requests, messages, tokens saved.
    alpha = next(line for line in lines if "a1b2c3d4" in line)
    assert ["2", "42", "74,000", "72.5%"] == alpha.split("│")[1].split()[2:6]
    # Latest requests: before -> after, latency; the newest first.
    assert "50,000 → 17,000" in text and "52,000 → 11,000" in text and "1.45 s" in text
    assert text.index("52,000 → 11,000") < text.index("50,000 → 17,000")
    # The upstream error is listed with its status and message.
    assert "upstream 429 rate_limit_exceeded" in text


def test_warnings_are_shown_newest_last(known_metrics: dict[str, Any]) -> None:
    buffer = WarningBuffer(capacity=3)
    logger = logging.getLogger("tests.ui.warnings")
    logger.propagate = False
    logger.addHandler(buffer)
    try:
        log = structlog.wrap_logger(
            logger,
            processors=[
                structlog.stdlib.add_log_level,
                structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
            ],
            wrapper_class=structlog.stdlib.BoundLogger,
        )
        log.info("not kept")
        for n in range(5):
            log.warning("pricing.unknown_model", model=f"model-{n}")
        logger.error("plain stdlib %s", "error")
    finally:
        logger.removeHandler(buffer)
    lines = buffer.lines()
    assert [line.level for line in lines] == ["WARNING", "WARNING", "ERROR"]
    assert lines[0].text == "pricing.unknown_model model=model-3"
    assert lines[2].text == "tests.ui.warnings: plain stdlib error"
    text = screen_text(known_metrics, warnings=buffer)
    assert "pricing.unknown_model model=model-4" in text
    assert text.index("model=model-4") < text.index("plain stdlib error")


def test_empty_database_and_small_terminal(tmp_path: Path, known_metrics: dict[str, Any]) -> None:
    async def nothing() -> dict[str, Any]:
        return {}

    text = screen_text({}, width=80, height=24)
    assert len(text.splitlines()) == 24 and "no active session" in text
    small = screen_text(known_metrics, width=80, height=24)
    assert "74,000" in small and "gpt-5.4" in small


async def test_unreadable_database_is_reported_in_the_header(tmp_path: Path) -> None:
    console = headless()
    ui = TerminalUI(open_store(str(tmp_path / "missing.db")), console=console)
    assert await ui.fetch() == {}
    console.print(ui.render({}))
    assert "database unreadable: OperationalError" in console.export_text()


async def test_a_postgresql_store_is_drawn_the_same_and_named_without_its_password(
    tmp_path: Path, postgres_url: str
) -> None:
    now = time.time()
    sessions, requests = known_records(now)
    sqlite_ui = TerminalUI(
        open_store(await write_db(tmp_path / "ui.db", sessions, requests)), console=headless()
    )
    await write_db(postgres_url, sessions, requests)
    with_password = postgres_url.replace("postgres@", "postgres:hunter2@")  # trust auth ignores it
    postgres_ui = TerminalUI(open_store(with_password), console=headless())
    metrics = await postgres_ui.fetch()
    assert metrics["totals"] == (await sqlite_ui.fetch())["totals"]
    postgres_ui.console.print(postgres_ui.render(metrics))
    screen = postgres_ui.console.export_text()
    assert "74,000" in screen and "hunter2" not in screen and "postgres:***@" in screen
    await postgres_ui.store.close()


async def test_run_redraws_until_stopped(tmp_path: Path) -> None:
    now = time.time()
    db = await write_db(tmp_path / "ui.db", *known_records(now))
    out = io.StringIO()
    console = Console(file=out, width=120, height=40, force_terminal=True, color_system="truecolor")
    ui = TerminalUI(open_store(db), console=console, refresh_s=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(ui.run(stop))
    await asyncio.sleep(0.3)
    stop.set()
    await asyncio.wait_for(task, 5)
    output = out.getvalue()
    assert output.count("Latest requests") >= 3  # redrawn several times
    assert "\x1b[?1049h" in output and "\x1b[?1049l" in output  # alternate screen entered and left
    assert output.rstrip().endswith(
        "Vidurai Proxy: 4 requests, 74,000 tokens saved (71.8%), cost $1.63, saved $0.9755."
    )


@pytest.mark.parametrize(
    ("mode", "isatty", "shown"),
    [
        ("auto", True, True),
        ("auto", False, False),
        ("on", True, True),
        ("on", False, False),  # not a TTY: plain log lines whatever the setting
        ("off", True, False),
        ("off", False, False),
    ],
)
def test_should_show(mode: str, isatty: bool, shown: bool) -> None:
    assert should_show(mode, isatty) is shown


def test_should_show_rejects_unknown_modes() -> None:
    with pytest.raises(ValueError, match="auto, on, off"):
        should_show("yes", True)
