"""Logging: structlog over stdlib handlers; readable lines on a terminal, JSON lines otherwise."""

from __future__ import annotations

import functools
import logging
import logging.handlers
import os
import sys
import threading
import time
from typing import Any

import attrs
import orjson
import structlog

from .config import LoggingConfig

# The logger of the one line per request (the access log).
ACCESS_LOGGER = "proxy.access"
# Access lines reach their file or console at most this long after the request; every other line
# is written at once, with the access lines before it: one write per batch instead of one system
# call per request (strace under wrk: with the headers sent with the body, relay.py, a JSON request
# went from 4 writes to 2).
ACCESS_FLUSH_INTERVAL = 0.2

_SECRET_KEYS = frozenset({"authorization", "x-api-key", "api-key", "headers", "body", "messages", "content"})


@functools.lru_cache(maxsize=4096)
def _is_secret(key: str) -> bool:
    # Cached: log lines repeat a few dozen keys, and this runs for each of them on every line.
    return key.lower().replace("_", "-") in _SECRET_KEYS


def _redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: "[redacted]" if isinstance(k, str) and _is_secret(k) else _redact(v) for k, v in value.items()
        }
    return value


# Keys already found not secret, and the value types that cannot hold a key of their own: a line
# made of only these is passed on after two set comparisons instead of a check per key (the
# access line: 1.0 µs instead of 2.0).
_safe_keys: set[str] = set()
_PLAIN = frozenset({str, int, float, bool, type(None)})


def _drop_secrets(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    """Last line of defence: keys that could carry credentials or message bodies never reach a log."""
    if event.keys() <= _safe_keys and _PLAIN.issuperset(map(type, event.values())):
        return event
    for key, value in event.items():
        if _is_secret(key) or isinstance(value, dict):
            break
    else:  # nothing to redact, nothing copied
        if len(_safe_keys) < 4096:  # keys are the proxy's own names: a few dozen
            _safe_keys.update(event.keys())
        return event
    return {key: "[redacted]" if _is_secret(key) else _redact(value) for key, value in event.items()}


def _json(event: dict[str, Any], **_: Any) -> str:
    # default=str: a stray non-JSON value (a Path, an exception class) must not lose the line.
    return orjson.dumps(event, default=str).decode()


_second: tuple[int, str] = (0, "")


def _timestamp(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    """ISO 8601 in UTC with microseconds, as structlog's TimeStamper(fmt="iso", utc=True) writes it
    (but always with the fraction), the date and time formatted once per second: TimeStamper
    cost 3.1 µs a line, this 0.7 µs."""
    global _second
    now = time.time()
    second = int(now)
    cached = _second
    if cached[0] != second:
        cached = _second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    event["timestamp"] = f"{cached[1]}.{int((now - second) * 1_000_000):06d}Z"
    return event


_SHARED: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    _timestamp,
    _drop_secrets,
]
# Fields every structlog line of this process carries (a worker's number, proxy/workers.py).
_STATIC: dict[str, Any] = {}


def _static_fields(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    for key, value in _STATIC.items():
        event.setdefault(key, value)
    return event


def add_static_fields(**fields: Any) -> None:
    """Fields every later structlog line carries, e.g. worker=2."""
    _STATIC.update(fields)


# One list for the life of the process: loggers cached on first use keep a reference to it, so a
# later configure_logging (the terminal UI taking the screen) and capture_logs still reach them.
# No level filter among them: the bound logger (make_filtering_bound_logger below) returns at once
# from a call below the level, before any processor runs.
_PROCESSORS: list[Any] = [_static_fields, *_SHARED, structlog.stdlib.ProcessorFormatter.wrap_for_formatter]
# What _PROCESSORS holds as configure_logging sets it (capture_logs changes it in place).
_CONFIGURED = tuple(_PROCESSORS)


class _AccessBatching(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that lets access lines wait in the stream's buffer (see
    ACCESS_FLUSH_INTERVAL); flush() from outside the handler, and close(), write everything."""

    _deferring = False
    _flushed_at = 0.0

    def emit(self, record: logging.LogRecord) -> None:
        # StreamHandler.emit, with the writing apart so that write_access can share it.
        self._deferring = record.name == ACCESS_LOGGER
        try:
            self._write_text(self.format(record))
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)
        finally:
            self._deferring = False

    def write_access(self, text: str) -> None:
        """An access line already rendered (proxy/access.py), written as emit() writes one."""
        with self.lock:  # type: ignore[union-attr]
            self._deferring = True
            try:
                self._write_text(text)
            except RecursionError:
                raise
            except Exception:  # a full disk: reported as emit() reports it, never raised to the request
                self.handleError(logging.makeLogRecord({"name": ACCESS_LOGGER, "msg": text}))
            finally:
                self._deferring = False

    def _write_text(self, text: str) -> None:
        self.stream.write(text + self.terminator)
        self.flush()  # deferred for an access line

    def flush(self) -> None:
        now = time.monotonic()
        if self._deferring and now - self._flushed_at < ACCESS_FLUSH_INTERVAL:
            return
        super().flush()
        self._flushed_at = now


class _BatchedStream(_AccessBatching):
    """Console output through a buffered stream of its own over stderr's descriptor: sys.stderr
    writes each line as it ends."""

    def close(self) -> None:
        try:
            self.flush()
        finally:
            super().close()


def _console_handler() -> logging.Handler:
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no descriptor behind it (a test's capture)
        return logging.StreamHandler(sys.stderr)
    # Lives as long as the handler; closefd=False leaves stderr itself open.
    stream = open(fd, "w", encoding="utf-8", errors="backslashreplace", closefd=False)
    return _BatchedStream(stream)


class _BatchedRotatingFile(_AccessBatching, logging.handlers.RotatingFileHandler):
    """The [logging] file, rotated by size, with access lines batched.

    The stdlib's handler asks the file its size before every line (two stat calls and a seek,
    which also wrote out the batch at each line) and formats each line twice to know its length;
    here the size is counted as lines are written and asked of the file again only after the
    batch is written (another process may write to the same file), and a line is formatted once.
    """

    _size: int | None = None  # bytes in the file, those still buffered included
    _regular = True  # never roll over anything but a regular file (bpo-45401: /dev/null)

    def _write_text(self, text: str) -> None:
        if self.stream is None:
            self.stream = self._open()
        line = text + self.terminator
        if self._size is None:
            self._size = self.stream.seek(0, 2)
            self._regular = not os.path.exists(self.baseFilename) or os.path.isfile(self.baseFilename)
        length = len(line) if line.isascii() else len(line.encode(self.encoding or "utf-8", "replace"))
        if self.maxBytes > 0 and self._regular and self._size + length >= self.maxBytes:
            self.doRollover()  # reopens the file (typeshed does not say the stream is set again)
            self.stream = self.stream or self._open()
            self._size = self.stream.seek(0, 2)
        self.stream.write(line)
        self._size += length
        self.flush()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            flushed_at = self._flushed_at
            super().flush()
            if self._flushed_at != flushed_at:
                self._size = None  # asked of the file again at the next line


def _flush_access_lines() -> None:
    """Every ACCESS_FLUSH_INTERVAL, write what the batching handlers hold (a quiet proxy's last
    access lines too)."""
    while True:
        time.sleep(ACCESS_FLUSH_INTERVAL)
        for handler in list(logging.getLogger().handlers):
            if isinstance(handler, _AccessBatching):
                try:
                    handler.flush()
                except Exception:  # a handler closed meanwhile, a full disk: the next line retries
                    pass


_flusher: threading.Thread | None = None


def _start_flusher() -> None:
    global _flusher
    if _flusher is None:
        _flusher = threading.Thread(target=_flush_access_lines, name="vidurai-log-flush", daemon=True)
        _flusher.start()


class _Formatter(structlog.stdlib.ProcessorFormatter):
    """structlog's ProcessorFormatter, without its copy of the record for the usual structlog line
    (no exception, no stack): rendered here without touching the record, which the copy exists
    to protect from the other handlers' formatters (with the changes above, the access line went
    from 22-28 µs to 12-18 µs of CPU)."""

    def format(self, record: logging.LogRecord) -> str:
        event = record.msg
        logger = getattr(record, "_logger", None)
        if type(event) is not dict or logger is None or record.exc_info or record.stack_info:
            return super().format(record)  # a stdlib line, or one with a traceback to format
        name: str = getattr(record, "_name", record.levelname.lower())
        rendered: Any = {**event, "_record": record, "_from_structlog": True}
        for processor in self.processors:
            rendered = processor(self.logger or logger, name, rendered)
        return str(rendered)


def _with_renderer(handler: logging.Handler, renderer: Any) -> logging.Handler:
    """A stdlib handler that renders both structlog and plain stdlib records with `renderer`."""
    handler.setFormatter(
        _Formatter(
            foreign_pre_chain=_SHARED,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    return handler


def configure_logging(config: LoggingConfig, *, console: bool = True, tty: bool | None = None) -> None:
    """Console output (readable on a TTY, JSON otherwise) and an optional rotated JSON-lines file.

    `console=False` keeps the terminal free for the live dashboard; the file then gets everything.
    """
    tty = sys.stderr.isatty() if tty is None else tty
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.setLevel(config.level.upper())

    json_renderer = structlog.processors.JSONRenderer(serializer=_json)
    json_handlers: list[_AccessBatching] = []
    if console:
        if tty:  # a person reading: every line at once
            console_renderer = structlog.dev.ConsoleRenderer(colors=True)
            root.addHandler(_with_renderer(logging.StreamHandler(sys.stderr), console_renderer))
        else:
            console_handler = _console_handler()
            root.addHandler(_with_renderer(console_handler, json_renderer))
            if isinstance(console_handler, _AccessBatching):
                json_handlers.append(console_handler)
    if config.file:
        rotating = _BatchedRotatingFile(
            config.file, maxBytes=config.max_bytes, backupCount=config.backup_count, encoding="utf-8"
        )
        root.addHandler(_with_renderer(rotating, json_renderer))
        json_handlers.append(rotating)
    # aiohttp's access log repeats our one line per request.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    _start_flusher()
    # No line shows the caller, thread or process: the logging HOWTO's "Optimization" switches
    # keep the stdlib from looking them up for every record.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False

    wrapper_class = structlog.make_filtering_bound_logger(logging.getLevelName(config.level.upper()))
    structlog.configure(
        processors=_PROCESSORS,
        logger_factory=structlog.stdlib.LoggerFactory(),
        # Calls below the level return at once (a debug line at info costs a function call), and
        # the others go through structlog's lean bound logger to the stdlib handlers.
        wrapper_class=wrapper_class,
        # Cached: binding a fresh logger for every line cost more than the line's own work.
        cache_logger_on_first_use=True,
    )
    global _json_setup
    _json_setup = JSONSetup(tuple(json_handlers), wrapper_class)


@attrs.frozen
class JSONSetup:
    """What configure_logging installed: the handlers that render every line as JSON, and the
    bound logger class that filters by level (proxy/access.py writes to those handlers itself)."""

    handlers: tuple[_AccessBatching, ...]
    wrapper_class: Any


_json_setup: JSONSetup | None = None


def json_setup() -> JSONSetup | None:
    """The JSON handlers configure_logging installed, while structlog is still configured as it
    left it (None otherwise: capture_logs in a test, a structlog.configure since)."""
    setup = _json_setup
    if setup is None:
        return None
    config = structlog.get_config()
    if (
        config["processors"] is not _PROCESSORS
        or config["wrapper_class"] is not setup.wrapper_class
        or tuple(_PROCESSORS) != _CONFIGURED
    ):
        return None
    return setup


def render_line(event: dict[str, Any], level: str, logger: str) -> str:
    """A structlog line of `logger` at `level` as the JSON handlers write it, rendered once: the
    processors of _PROCESSORS, then the formatter's (none of which changes a line without an
    exception), then the JSON renderer."""
    _static_fields(None, level, event)
    structlog.contextvars.merge_contextvars(None, level, event)  # in place
    event["level"] = level
    event["logger"] = logger
    return _json(_drop_secrets(None, level, _timestamp(None, level, event)))
