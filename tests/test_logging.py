"""Log files: JSON lines rotated by size and count, no secrets or bodies, request ids on request lines."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog

from proxy import access
from proxy.access import log_request
from proxy.config import ConfigError, LoggingConfig, load_config
from proxy.logs import ACCESS_FLUSH_INTERVAL, ACCESS_LOGGER, configure_logging
from tests.conftest import ANTHROPIC_KEY, OPENAI_KEY, ProxyFactory
from tests.proxy_calls import logging_restored

SECRET = "sk-ant-SECRET-do-not-log-0123456789"
BODY_MARKER = "CONFIDENTIAL-PROMPT-TEXT-7f3a"


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    with logging_restored():
        yield


def setup_logging(config: LoggingConfig, **kwargs: Any) -> None:
    """configure_logging, minus the logger cache: a logger cached here would stay blind to
    structlog.testing.capture_logs in every later test of the session."""
    configure_logging(config, **kwargs)
    structlog.configure(cache_logger_on_first_use=False)


def file_config(
    path: Path, *, level: str = "debug", max_bytes: int = 10_485_760, backup_count: int = 5
) -> LoggingConfig:
    return LoggingConfig(level=level, file=str(path), max_bytes=max_bytes, backup_count=backup_count)


def read_lines(*paths: Path) -> list[dict[str, Any]]:
    """Every line of the files, each parsed as one JSON object (fails on any other line)."""
    for handler in logging.getLogger().handlers:
        handler.flush()
    records = []
    for path in paths:
        for line in path.read_text(encoding="utf-8").splitlines():
            records.append(json.loads(line))
    return records


def assert_rotated(folder: Path, lines: int) -> None:
    """proxy.log and its three backups, none over 2,000 bytes; oldest backup first, current file last,
    they hold the most recent of `lines` events numbered n, in order, none torn."""
    files = sorted(p.name for p in folder.iterdir())
    assert files == ["proxy.log", "proxy.log.1", "proxy.log.2", "proxy.log.3"]
    for name in files:
        assert (folder / name).stat().st_size <= 2_000
    ns = [r["n"] for r in read_lines(*(folder / n for n in reversed(files)))]
    assert ns == list(range(ns[0], lines)) and ns[0] > 0


def test_rotation_past_max_bytes_keeps_backup_count_files(tmp_path: Path) -> None:
    path = tmp_path / "proxy.log"
    setup_logging(file_config(path, max_bytes=2_000, backup_count=3), console=False)
    log = structlog.get_logger("test.rotation")
    for n in range(200):
        log.info("tick", n=n, padding="x" * 40)
    assert_rotated(tmp_path, lines=200)


def test_backup_count_zero_is_refused() -> None:
    # RotatingFileHandler never rolls over with backupCount=0, so 0 would ignore max_bytes.
    with pytest.raises(ConfigError, match=r"\[logging\] backup_count = '0'.*positive integer"):
        load_config(env={}, logging_backup_count="0")


def test_lines_are_json_with_event_level_timestamp(tmp_path: Path) -> None:
    path = tmp_path / "proxy.log"
    setup_logging(file_config(path, level="info"), console=False)
    structlog.get_logger("test.json").info("hello", count=3, text="ünïcödé\nsecond line")
    structlog.get_logger("test.json").debug("below the level")
    logging.getLogger("some.library").warning("stdlib %s", "message")
    try:
        raise ValueError("boom")
    except ValueError:
        structlog.get_logger("test.json").exception("failed")
    records = read_lines(path)
    assert [r["event"] for r in records] == ["hello", "stdlib message", "failed"]
    for record in records:
        assert {"event", "level", "timestamp"} <= set(record)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", record["timestamp"])
    assert [r["level"] for r in records] == ["info", "warning", "error"]
    assert records[0]["text"] == "ünïcödé\nsecond line" and records[0]["count"] == 3
    assert "ValueError: boom" in records[2]["exception"]


def test_terminal_stays_readable_while_the_file_gets_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "proxy.log"
    setup_logging(file_config(path, level="info"), console=True, tty=True)
    structlog.get_logger("test.console").info("listening", url="http://127.0.0.1:8080")
    err = capsys.readouterr().err
    assert "listening" in err and "http://127.0.0.1:8080" in err
    assert not err.lstrip().startswith("{")  # a readable line, not JSON
    assert read_lines(path)[0]["url"] == "http://127.0.0.1:8080"


def test_terminal_tracebacks_show_no_local_variables(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    setup_logging(LoggingConfig(level="info", file="", max_bytes=1, backup_count=1), console=True, tty=True)
    body = {"messages": [{"role": "user", "content": "a private question"}]}
    try:
        raise ValueError(f"bad body of {len(body)} fields")
    except ValueError:
        structlog.get_logger("test.console").exception("unhandled error")
    err = capsys.readouterr().err
    assert "ValueError" in err and "bad body of 1 fields" in err
    assert "a private question" not in err


def test_without_a_terminal_the_console_gets_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging(LoggingConfig(level="info", file="", max_bytes=1, backup_count=1), console=True, tty=False)
    structlog.get_logger("test.console").info("listening", port=8080)
    assert json.loads(capsys.readouterr().err.splitlines()[-1])["port"] == 8080
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("key", ["authorization", "x-api-key", "api_key", "headers", "body", "messages"])
def test_secret_keys_are_redacted(tmp_path: Path, key: str) -> None:
    path = tmp_path / "proxy.log"
    setup_logging(file_config(path), console=False)
    value: Any = {"authorization": f"Bearer {SECRET}", "x-api-key": SECRET, "content": BODY_MARKER}
    structlog.get_logger("test.secrets").info("oops", **{key: value})
    structlog.get_logger("test.secrets").info("oops", **{key: f"Bearer {SECRET} {BODY_MARKER}"})
    text = path.read_text(encoding="utf-8")
    assert SECRET not in text and BODY_MARKER not in text
    assert [r[key] for r in read_lines(path)] == ["[redacted]", "[redacted]"]


@pytest.mark.parametrize("key", ["x_api_key", "Authorization", "X-Api-Key"])
def test_secret_key_spellings_are_redacted(tmp_path: Path, key: str) -> None:
    path = tmp_path / "proxy.log"
    setup_logging(file_config(path), console=False)
    structlog.get_logger("test.secrets").info("oops", **{key: SECRET})
    assert SECRET not in path.read_text(encoding="utf-8")


async def test_request_lines_carry_request_id_and_no_secrets(
    tmp_path: Path, make_proxy: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    path = tmp_path / "proxy.log"
    # Debug: the most the proxy (and vidurai underneath) ever writes.
    setup_logging(file_config(path, level="debug"), console=False)
    url = await make_proxy(compression_min_tokens="0", compression_threshold_messages="2")
    messages = [
        {"role": "user" if n % 2 == 0 else "assistant", "content": f"{BODY_MARKER} turn {n} " * 20}
        for n in range(9)
    ]
    anthropic_headers = {"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01"}
    for stream in (False, True):
        body = {"model": "claude-fake-1", "max_tokens": 16, "messages": messages, "stream": stream}
        async with http.post(url + "/v1/messages", json=body, headers=anthropic_headers) as response:
            assert response.status == 200
            await response.read()
    async with http.post(
        url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {OPENAI_KEY}"},
        json={"model": "gpt-fake-1", "messages": messages},
    ) as response:
        assert response.status == 200
        await response.read()
    async with http.post(
        url + "/v1/messages", data=b"{not json " + BODY_MARKER.encode(), headers=anthropic_headers
    ) as response:
        assert response.status == 400

    text = path.read_text(encoding="utf-8")
    for secret in (ANTHROPIC_KEY, OPENAI_KEY, BODY_MARKER):
        assert secret not in text, f"{secret} leaked into the log file"
    records = read_lines(path)
    requests = [r for r in records if r["event"] == "request"]
    assert len(requests) == 4
    ids = [r["request_id"] for r in requests]
    assert all(re.fullmatch(r"[0-9a-f]{16}", i) for i in ids) and len(set(ids)) == 4
    assert [r["status"] for r in requests] == [200, 200, 200, 400]
    # Everything logged while handling a request carries its id, not only the summary line.
    during = [r for r in records if r.get("path") == "/v1/messages" and r["event"] != "request"]
    assert during and all(r.get("request_id") in ids for r in during)


def test_access_lines_reach_the_file_before_any_later_line_and_soon_without_one(tmp_path: Path) -> None:
    # Access lines may wait in the buffer (written in batches under load), but never behind a later
    # line, and never for long when nothing follows them.
    path = tmp_path / "proxy.log"
    setup_logging(file_config(path, level="info"), console=False)
    access = structlog.get_logger(ACCESS_LOGGER)
    for n in range(5):
        access.info("request", n=n)
    structlog.get_logger("test.order").warning("something else")
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]  # no flush
    assert [line.get("n") for line in lines] == [0, 1, 2, 3, 4, None]
    assert lines[-1]["event"] == "something else"

    access.info("request", n=5)
    deadline = time.monotonic() + 5 * ACCESS_FLUSH_INTERVAL + 2
    while '"n":5' not in path.read_text(encoding="utf-8"):
        assert time.monotonic() < deadline, "the last access line was never written"
        time.sleep(0.02)


def test_access_line_written_directly_is_the_structlog_line(tmp_path: Path) -> None:
    # proxy/access.py renders the line once and writes it to the JSON handlers itself: the same
    # line, field for field and in the same order, as structlog and the stdlib would write.
    path = tmp_path / "proxy.log"
    setup_logging(file_config(path, level="info"), console=False)
    structlog.contextvars.bind_contextvars(request_id="0123456789abcdef", path="/v1/messages", x_api_key="k")
    try:
        structlog.get_logger(ACCESS_LOGGER).info("request", status=200, duration_ms=1.5)
        log_request(status=200, duration_ms=1.5)
    finally:
        structlog.contextvars.clear_contextvars()
    assert access._route.direct() is not None  # the direct path was the one taken
    first, second = read_lines(path)
    assert first.pop("timestamp") and second.pop("timestamp")
    assert list(first.items()) == list(second.items())
    assert first["x_api_key"] == "[redacted]" and first["logger"] == ACCESS_LOGGER


def test_access_line_goes_the_usual_way_while_logs_are_captured(tmp_path: Path) -> None:
    setup_logging(file_config(tmp_path / "proxy.log", level="info"), console=False)
    with structlog.testing.capture_logs() as logs:
        log_request(status=204, duration_ms=0.5)
    assert [(e["event"], e["status"]) for e in logs] == [("request", 204)]


def test_access_lines_below_the_level_are_not_written(tmp_path: Path) -> None:
    path = tmp_path / "proxy.log"
    setup_logging(file_config(path, level="warning"), console=False)
    log_request(status=200, duration_ms=1.0)
    structlog.get_logger("test.level").warning("kept")
    assert [r["event"] for r in read_lines(path)] == ["kept"]


def test_access_lines_rotate_by_size_like_any_line(tmp_path: Path) -> None:
    path = tmp_path / "proxy.log"
    setup_logging(file_config(path, level="info", max_bytes=2_000, backup_count=3), console=False)
    for n in range(200):
        log_request(status=200, n=n, note="é" * (n % 3))  # some lines longer in bytes than in characters
    assert_rotated(tmp_path, lines=200)


def test_an_access_line_that_cannot_be_written_is_reported_not_raised(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A full disk: the request it ends must still be answered (tests/test_crash_e2e.py's full disk).
    setup_logging(file_config(tmp_path / "proxy.log", level="info"), console=False)

    class Full:
        def write(self, text: str) -> int:
            raise OSError(27, "File too large")

        def flush(self) -> None:
            raise OSError(27, "File too large")

    handler = next(h for h in logging.getLogger().handlers if h.__class__.__name__ == "_BatchedRotatingFile")
    stream, handler.stream = handler.stream, Full()  # type: ignore[attr-defined]
    handler._size = 0  # type: ignore[attr-defined]
    try:
        log_request(status=200, duration_ms=1.0)
    finally:
        handler.stream = stream  # type: ignore[attr-defined]
    assert "File too large" in capsys.readouterr().err  # as logging reports a handler's failure
