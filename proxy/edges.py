"""The server's edges: what the proxy refuses or quiets before a handler runs, and at the fd limit."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from .handlers import error_response, provider_for

log = structlog.get_logger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# CPython's wording when accept() fails for want of a file descriptor (asyncio/selector_events.py).
ACCEPT_FAILED = "socket.accept() out of system resource"
# Failures further apart than this are separate incidents, each logged once.
INCIDENT_GAP_S = 60.0


@web.middleware
async def origin_form_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    """`GET http://example.com/ HTTP/1.1` asks a forward proxy for another site; this proxy has
    one upstream per provider and serves paths only (RFC 9112 section 3.2.1, origin-form)."""
    if request.raw_path.startswith("/"):
        return await handler(request)
    return error_response(
        provider_for(request),
        400,
        "The proxy serves paths such as /v1/messages, not absolute URLs: it is not a forward proxy. "
        "Set the client's base URL to the proxy instead.",
    )


async def root(request: web.Request) -> web.StreamResponse:
    """GET /: a person who opens the proxy's address in a browser lands on the dashboard."""
    raise web.HTTPFound("/dashboard")


class ParserErrorFilter(logging.Filter):
    """aiohttp logs a malformed request ("Error handling request") with its parser's message, which
    quotes the raw header line, an API key in it too: the line keeps only the error's name."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg = "malformed request refused with %s: %s"
            record.args = (exc.code, type(exc).__name__)
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def quiet_parser_errors() -> None:
    """Install ParserErrorFilter on aiohttp's server logger, once per process."""
    logger = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, ParserErrorFilter) for f in logger.filters):
        logger.addFilter(ParserErrorFilter())


class AcceptFailures:
    """Loop exception handler: at the file-descriptor limit asyncio's own loop logs a traceback for
    every failed accept(), up to 128 a tick; this logs one line per incident instead. New
    connections wait in the listen backlog meanwhile, and are served as soon as descriptors free up
    ([server] keepalive_timeout closes the idle ones). uvloop, which `python -m proxy` runs, needs
    none of this: libuv accepts and closes what it has no descriptor for, silently."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._previous = loop.get_exception_handler()
        self._last: float | None = None

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") != ACCEPT_FAILED:
            if self._previous is not None:
                self._previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        now = time.monotonic()
        if self._last is None or now - self._last > INCIDENT_GAP_S:
            exc = context.get("exception")
            log.warning(
                "cannot accept connections: out of file descriptors; new ones wait until some close",
                error=getattr(exc, "strerror", None) or type(exc).__name__,
            )
        self._last = now


def guard_accept(loop: asyncio.AbstractEventLoop) -> None:
    """Install AcceptFailures on the loop, once."""
    if not isinstance(loop.get_exception_handler(), AcceptFailures):
        loop.set_exception_handler(AcceptFailures(loop))
