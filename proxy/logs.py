"""Logging: structlog over stdlib handlers; readable lines on a terminal, JSON lines otherwise."""

from __future__ import annotations

import functools
import logging
import logging.handlers
import sys
from typing import Any

import orjson
import structlog

from .config import LoggingConfig

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


def _drop_secrets(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    """Last line of defence: keys that could carry credentials or message bodies never reach a log."""
    for key, value in event.items():
        if _is_secret(key) or isinstance(value, dict):
            break
    else:  # the usual line: nothing to redact, nothing copied
        return event
    return {key: "[redacted]" if _is_secret(key) else _redact(value) for key, value in event.items()}


def _json(event: dict[str, Any], **_: Any) -> str:
    # default=str: a stray non-JSON value (a Path, an exception class) must not lose the line.
    return orjson.dumps(event, default=str).decode()


_SHARED: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    _drop_secrets,
]
# One list for the life of the process: loggers cached on first use keep a reference to it, so a
# later configure_logging (the terminal UI taking the screen) and capture_logs still reach them.
_PROCESSORS: list[Any] = [
    # Level first: a debug line costs nothing at info, before any processor runs.
    structlog.stdlib.filter_by_level,
    *_SHARED,
    structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
]


def _with_renderer(handler: logging.Handler, renderer: Any) -> logging.Handler:
    """A stdlib handler that renders both structlog and plain stdlib records with `renderer`."""
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
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
    if console:
        renderer: Any = structlog.dev.ConsoleRenderer(colors=True) if tty else json_renderer
        root.addHandler(_with_renderer(logging.StreamHandler(sys.stderr), renderer))
    if config.file:
        rotating = logging.handlers.RotatingFileHandler(
            config.file, maxBytes=config.max_bytes, backupCount=config.backup_count, encoding="utf-8"
        )
        root.addHandler(_with_renderer(rotating, json_renderer))
    # aiohttp's access log repeats our one line per request.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # No line shows the caller, thread or process: the logging HOWTO's "Optimization" switches
    # keep the stdlib from looking them up for every record.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False

    structlog.configure(
        processors=_PROCESSORS,
        logger_factory=structlog.stdlib.LoggerFactory(),
        # Calls below the level return at once (a debug line at info costs a function call), and
        # the others go through structlog's lean bound logger to the stdlib handlers.
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(config.level.upper())),
        # Cached: binding a fresh logger for every line cost more than the line's own work.
        cache_logger_on_first_use=True,
    )
