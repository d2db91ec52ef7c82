"""The upstream side: one shared ClientSession, header hygiene and the proxy's own failure modes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import aiohttp
from multidict import CIMultiDict

from .config import UpstreamConfig

# RFC 9110 section 7.6.1 connection-specific headers, plus what the proxy sets itself.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
_REQUEST_DROP = HOP_BY_HOP | {
    "host",
    "content-length",
    "accept-encoding",
    "x-vidurai-session",
    "x-vidurai-tags",
}
# aiohttp decompresses upstream bodies so usage can be read; length and encoding no longer hold.
_RESPONSE_DROP = HOP_BY_HOP | {"content-length", "content-encoding", "server", "date"}


def _named_in_connection(headers: Mapping[str, str]) -> set[str]:
    return {name.strip().lower() for name in headers.get("connection", "").split(",") if name.strip()}


def _filter(
    headers: Iterable[tuple[str, str]], drop: frozenset[str] | set[str], drop_prefix: str | None = None
) -> CIMultiDict[str]:
    kept: CIMultiDict[str] = CIMultiDict()
    for name, value in headers:
        lowered = name.lower()
        if lowered not in drop and not (drop_prefix and lowered.startswith(drop_prefix)):
            kept.add(name, value)
    return kept


def request_headers(headers: Mapping[str, str]) -> CIMultiDict[str]:
    """End-to-end request headers, unchanged: auth, anthropic-*, openai-*, x-stainless-*, ..."""
    return _filter(headers.items(), _REQUEST_DROP | _named_in_connection(headers))


def response_headers(headers: Mapping[str, str]) -> CIMultiDict[str]:
    """Upstream response headers the client acts on: request ids, retry-after, rate limits, ..."""
    # CORS is the proxy's own policy ([server] allowed_origins), never upstream's.
    return _filter(headers.items(), _RESPONSE_DROP | _named_in_connection(headers), "access-control-")


def client_session(config: UpstreamConfig) -> aiohttp.ClientSession:
    """The one upstream session: no total timeout (streams may think for minutes), an idle-read limit."""
    timeout = aiohttp.ClientTimeout(total=None, connect=config.connect_timeout, sock_read=config.read_timeout)
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
    return aiohttp.ClientSession(
        timeout=timeout,
        connector=connector,
        auto_decompress=True,
        # Forward the client's own User-Agent, never aiohttp's.
        skip_auto_headers=("User-Agent",),
        trust_env=False,
    )


class UpstreamFailure(Exception):
    """The proxy could not get an answer from upstream; becomes a 502 or 504 in the provider's shape."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def describe_failure(exc: BaseException, url: str) -> UpstreamFailure:
    """Translate a client-side exception into what a person can act on."""
    host = url.split("/")[2] if "://" in url else url
    if isinstance(exc, aiohttp.ServerTimeoutError) or isinstance(exc, TimeoutError):
        return UpstreamFailure(
            504,
            f"Upstream {host} did not answer in time (see [upstream] "
            "connect_timeout and read_timeout in vidurai.ini).",
        )
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamFailure(
            502,
            f"Cannot connect to upstream {host}: {exc.os_error.strerror or exc}. "
            "Check [upstream] base URLs in vidurai.ini and your network.",
        )
    return UpstreamFailure(
        502,
        f"Upstream {host} failed: {type(exc).__name__}. Try again; if it persists, "
        "check the upstream service.",
    )
