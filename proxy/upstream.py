"""The upstream side: one shared ClientSession, header hygiene and the proxy's own failure modes."""

from __future__ import annotations

from collections.abc import Mapping

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


def _named_in_connection(headers: Mapping[str, str]) -> frozenset[str]:
    named = headers.get("connection")
    if not named:
        return frozenset()
    return frozenset(name.strip().lower() for name in named.split(",") if name.strip())


# Distinct header names whose fate each side remembers; names come from clients and upstreams, so
# the memory is bounded (a few dozen occur in practice).
MAX_REMEMBERED_NAMES = 1024


class _HeaderFilter:
    """Drops some header names (and names with a prefix), keeping the others as they came.

    Each name's fate is decided once: the same few dozen names arrive on every request, and
    lowering and testing each of them every time was the proxy's largest own cost in a JSON
    request's profile (cProfile under wrk).
    """

    def __init__(self, drop: frozenset[str], drop_prefix: str | None = None) -> None:
        self._drop = drop
        self._prefix = drop_prefix
        self._kept: dict[str, bool] = {}

    def _keeps(self, name: str, drop: frozenset[str]) -> bool:
        lowered = name.lower()
        return lowered not in drop and not (self._prefix and lowered.startswith(self._prefix))

    def __call__(self, headers: Mapping[str, str]) -> CIMultiDict[str]:
        named = _named_in_connection(headers)
        if not named <= self._drop:  # Connection names end-to-end headers too: decided afresh
            drop = self._drop | named
            return CIMultiDict([(k, v) for k, v in headers.items() if self._keeps(k, drop)])
        kept = self._kept
        pairs = []
        for name, value in headers.items():
            keep = kept.get(name)
            if keep is None:
                keep = self._keeps(name, self._drop)
                if len(kept) < MAX_REMEMBERED_NAMES:
                    kept[name] = keep
            if keep:
                pairs.append((name, value))
        return CIMultiDict(pairs)


_request_filter = _HeaderFilter(_REQUEST_DROP)
# CORS is the proxy's own policy ([server] allowed_origins), never upstream's.
_response_filter = _HeaderFilter(_RESPONSE_DROP, "access-control-")


def request_headers(headers: Mapping[str, str]) -> CIMultiDict[str]:
    """End-to-end request headers, unchanged: auth, anthropic-*, openai-*, x-stainless-*, ..."""
    return _request_filter(headers)


def response_headers(headers: Mapping[str, str]) -> CIMultiDict[str]:
    """Upstream response headers the client acts on: request ids, retry-after, rate limits, ..."""
    return _response_filter(headers)


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
