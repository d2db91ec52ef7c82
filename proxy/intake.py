"""A client's request body: read within the proxy's limits, parsed off the loop when it is large."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import web

from . import jsonio
from .keys import CONFIG
from .providers import Provider

# Bodies above this are parsed, hashed, counted and serialized in a thread, even when too short to
# fold: a huge tool result would otherwise hold up every other stream while it is tokenized.
INLINE_BODY_LIMIT = 64 * 1024
T = TypeVar("T")
TOO_DEEP = "Request body is nested too deeply to process; flatten its JSON."


class BadRequest(Exception):
    """A request the proxy answers itself with a 4xx in the provider's shape, never forwarding it."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def in_thread_if(large: bool, fn: Callable[..., T], *args: Any) -> T:
    """fn(*args); in a thread when working on a large body, which would hold up every other
    request on the loop (a thread hop costs more than a small body's work)."""
    return await asyncio.to_thread(fn, *args) if large else fn(*args)


async def read_body(request: web.Request) -> bytes:
    """The whole body, within [server] max_body_mb, each read within [server] read_timeout."""
    settings = request.app[CONFIG].server
    limit = settings.max_body_mb * 1024 * 1024
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(settings.max_body_mb)  # refused before a byte of it is read
    content = request.content
    chunks: list[bytes] = []
    size = 0
    try:
        while True:
            # What has arrived already is taken without a timer: a small body usually came with
            # its headers, and arming a timeout for it cost more than the read itself.
            chunk = content.read_nowait()
            if not chunk:
                if content.at_eof():
                    break
                async with asyncio.timeout(settings.read_timeout):
                    chunk = await content.readany()
                if not chunk:
                    break
            size += len(chunk)
            if size > limit:
                raise _too_large(settings.max_body_mb)
            chunks.append(chunk)
    except TimeoutError:
        raise BadRequest(
            408,
            f"The client sent no part of the request body for {settings.read_timeout:g} s "
            "([server] read_timeout in vidurai.ini).",
        ) from None
    return b"".join(chunks)


def _too_large(max_body_mb: int) -> BadRequest:
    return BadRequest(
        413,
        f"Request body exceeds the proxy's limit of {max_body_mb} MiB "
        "(raise [server] max_body_mb in vidurai.ini).",
    )


async def parse_object(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object, or a BadRequest saying why not."""
    try:
        body = await in_thread_if(
            len(raw) > INLINE_BODY_LIMIT, jsonio.loads, raw
        )  # 60 MiB: a good part of a second
    except RecursionError:
        raise BadRequest(400, TOO_DEEP) from None
    except ValueError as exc:
        raise BadRequest(400, f"Request body is not valid JSON: {exc}.") from None
    if not isinstance(body, dict):
        raise BadRequest(400, "Request body must be a JSON object.")
    return body


def check_message_count(request: web.Request, provider: Provider, body: dict[str, Any]) -> None:
    """At most [server] max_messages messages."""
    limit = request.app[CONFIG].server.max_messages
    count = len(provider.messages(body))
    if count > limit:
        raise BadRequest(
            400,
            f"Request has {count} messages; the proxy accepts at most {limit} "
            "(raise [server] max_messages in vidurai.ini).",
        )
