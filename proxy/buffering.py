"""Streams must not be held back by a reverse proxy in front of this one.

nginx buffers proxied responses by default, which turns a token-by-token SSE stream into a few
large bursts. `X-Accel-Buffering: no` on a response switches that off for it alone, so a proxy put
behind nginx streams without any nginx setting; other servers and clients ignore the header.
"""

from __future__ import annotations

from aiohttp import web

HEADER = "X-Accel-Buffering"


async def no_buffering_for_streams(request: web.Request, response: web.StreamResponse) -> None:
    """An on_response_prepare hook: mark event streams unbuffered (an upstream's own value wins)."""
    if response.content_type == "text/event-stream" and HEADER not in response.headers:
        response.headers[HEADER] = "no"
