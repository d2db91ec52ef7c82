"""Streams must not be held back by a reverse proxy in front of this one.

nginx buffers proxied responses by default, which turns a token-by-token SSE stream into a few
large bursts. `X-Accel-Buffering: no` on a response switches that off for it alone, so a proxy put
behind nginx streams without any nginx setting; other servers and clients ignore the header.
"""

from __future__ import annotations

from multidict import CIMultiDict

HEADER = "X-Accel-Buffering"


def no_buffering(headers: CIMultiDict[str]) -> None:
    """For an event stream's response headers: mark it unbuffered (an upstream's own value wins).

    Set by relay.py, the one place that answers with event streams, rather than by an
    on_response_prepare hook that every response of the proxy went through (a signal, a coroutine
    and the Content-Type parsed again, per request)."""
    headers.setdefault(HEADER, "no")
