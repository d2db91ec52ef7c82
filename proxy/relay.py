"""The upstream call and its response, streamed to the client chunk by chunk as it arrives."""

from __future__ import annotations

import asyncio
import io
import time

import aiohttp
import structlog
from aiohttp import web
from yarl import URL

from .buffering import no_buffering
from .call import Call
from .keys import CALIBRATION, UPSTREAM
from .providers import Provider, UsageObserver
from .tokens import Calibration
from .upstream import describe_failure, request_headers, response_headers

log = structlog.get_logger(__name__)

STATS_HEADER = "X-Vidurai-Stats"
# A client that went away: nginx's convention, so such rows are easy to tell from upstream errors.
CLIENT_CLOSED = 499
# aiohttp sends bodies above 1 MiB from a thread only when given a file-like object.
LARGE_BODY = 1024 * 1024


class _WholeResponse(web.StreamResponse):
    """An answer other than an event stream: its headers leave with the first part of its body,
    in one write instead of two, as aiohttp's own web.Response sends them (strace under wrk: one
    system call less per JSON request). An event stream's headers still leave at once, so its
    client knows the call was accepted while the model thinks."""

    _send_headers_immediately = False


async def relay(
    request: web.Request, call: Call, provider: Provider, data: bytes | None, rewritten: bool
) -> web.StreamResponse:
    """Send the request upstream and stream its answer back, reading usage on the way.

    Nothing is held back: each upstream chunk is written as soon as it arrives. Failures before the
    response starts become 502/504 in the provider's shape; after it starts, the client's connection
    is dropped just as upstream's was, so its SDK sees a broken stream instead of a silent truncation.
    """
    path, _, query = request.raw_path.partition("?")
    # Raw path and query, sent as received: re-encoding could change what upstream sees.
    url = URL(provider.upstream_url(path, query), encoded=True)
    if data is not None and len(data) > LARGE_BODY:
        body: bytes | io.BytesIO | None = io.BytesIO(data)  # sent from a thread, not the event loop
    else:
        body = data
    headers = request_headers(request.headers)
    if call.upstream_key is not None:  # a virtual key: upstream gets the real one in its place
        provider.authorize(headers, call.upstream_key)
    calibration = request.app[CALIBRATION]
    response: web.StreamResponse | None = None
    observer: UsageObserver | None = None
    call.sent_at = time.monotonic()
    try:
        async with request.app[UPSTREAM].request(
            request.method, url, data=body, headers=headers, allow_redirects=False
        ) as upstream:
            call.headers_at = time.monotonic()
            call.record.status = upstream.status
            streaming = upstream.content_type == "text/event-stream"
            observer = provider.observer(streaming, rewritten)
            kind = web.StreamResponse if streaming else _WholeResponse
            answer_headers = response_headers(upstream.headers)
            if streaming:
                no_buffering(answer_headers)
            response = kind(status=upstream.status, reason=upstream.reason, headers=answer_headers)
            response.headers[STATS_HEADER] = call.stats_header()
            if call.limit_headers:
                response.headers.update(call.limit_headers)
            if (
                upstream.content_length is not None
                and not rewritten
                and "content-encoding" not in upstream.headers
            ):
                response.content_length = upstream.content_length
            await response.prepare(request)
            call.prepared_at = time.monotonic()
            observing = True
            async for chunk in upstream.content.iter_any():
                if call.first_byte_at is None:
                    call.first_byte_at = time.monotonic()
                out = chunk
                if observing:
                    try:
                        out = observer.feed(chunk)
                    except Exception as exc:  # usage is a side show: the stream goes on untouched
                        observing = _observer_failed(call, exc)
                if out:
                    await response.write(out)
            if observing:
                try:
                    tail = observer.finish()
                    if tail:
                        await response.write(tail)
                except (ConnectionError, asyncio.CancelledError):
                    raise
                except Exception as exc:
                    _observer_failed(call, exc)
            await response.write_eof()
    except ConnectionResetError as exc:
        # Must come first: aiohttp's "cannot write to closing transport" is also a ClientError.
        if response is None or not response.prepared:
            raise describe_failure(exc, str(url)) from None  # upstream reset us before answering
        call.record.status, call.record.error = CLIENT_CLOSED, "client disconnected"
        log.info("client disconnected mid-response")
    except asyncio.CancelledError:
        call.record.status, call.record.error = CLIENT_CLOSED, "client disconnected"
        _settle(call, observer, calibration)
        raise
    except (aiohttp.ClientError, TimeoutError) as exc:
        failure = describe_failure(exc, str(url))
        if response is None or not response.prepared:
            raise failure from None
        call.record.error = f"upstream failed mid-response: {type(exc).__name__}"
        log.warning("upstream failed mid-response", error=type(exc).__name__)
        if request.transport is not None:
            request.transport.abort()
    except Exception:
        if response is None or not response.prepared:
            raise  # nothing sent yet: the error middleware answers in the provider's shape
        # The client has our headers and part of the body: a second response cannot follow, so the
        # connection is dropped as for a broken upstream.
        log.exception("proxy failed mid-response")
        call.record.error = "proxy failed mid-response"
        if request.transport is not None:
            request.transport.abort()
    _settle(call, observer, calibration)
    return response


def _observer_failed(call: Call, exc: Exception) -> bool:
    """Record why usage was not read; the stream is forwarded unobserved from here on."""
    call.record.error = f"usage not read: observer failed with {type(exc).__name__}"
    log.warning("usage observer failed; forwarding the rest unobserved", error=type(exc).__name__)
    return False


def _settle(call: Call, observer: UsageObserver | None, calibration: Calibration) -> None:
    """Usage read so far (all of it, or what a broken stream delivered) goes into the record."""
    if observer is None:
        return
    if observer.model and not call.record.model:
        call.record.model = observer.model
    call.settle_usage(observer.usage, calibration)
