"""CORS: browser clients on other origins reach the proxy only where `[server] allowed_origins` allows."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

import attrs
import structlog
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

log = structlog.get_logger(__name__)
ResponseHook = Callable[[web.Request, web.StreamResponse], Awaitable[None]]

# Everything the proxy serves or passes through; a browser compares its method against this list.
ALLOW_METHODS = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
# Chrome caps preflight caching at 2 hours; longer values are silently cut.
MAX_AGE_S = 7200
# Response headers the LLM SDKs read (request ids for support tickets, retry hints, our stats).
EXPOSE_ALWAYS = (
    "request-id",
    "x-request-id",
    "retry-after",
    "retry-after-ms",
    "x-should-retry",
    "x-vidurai-stats",
    "openai-processing-ms",
)
# Rate-limit headers have many names (anthropic-ratelimit-*, x-ratelimit-*); exposed as they appear.
_EXPOSE_PREFIXES = ("anthropic-ratelimit-", "x-ratelimit-", "ratelimit")
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_ORIGIN = re.compile(r"^[a-z][a-z0-9+.-]*://[^/?#\s]+$")


@attrs.frozen
class CorsPolicy:
    """Which origins may read the proxy's responses from a browser."""

    origins: frozenset[str]
    any_origin: bool

    @classmethod
    def from_config(cls, allowed: tuple[str, ...]) -> CorsPolicy:
        """The policy for `[server] allowed_origins` as parsed by proxy.config."""
        origins = frozenset(origin.lower() for origin in allowed if origin != "*")
        return cls(origins=origins, any_origin="*" in allowed)

    def allow_origin(self, origin: str | None) -> str | None:
        """The Access-Control-Allow-Origin value for a request's Origin, or None to refuse it."""
        if not origin:
            return None
        if self.any_origin:
            return "*"
        # Browsers serialise origins in lower case; an operator may not have.
        return origin if origin.lower().rstrip("/") in self.origins else None


def _is_preflight(request: web.Request) -> bool:
    return (
        request.method == "OPTIONS"
        and "Origin" in request.headers
        and "Access-Control-Request-Method" in request.headers
    )


def _add_vary(response: web.StreamResponse, *names: str) -> None:
    present = {part.strip().lower() for part in response.headers.get("Vary", "").split(",") if part.strip()}
    missing = [name for name in names if name.lower() not in present]
    if "*" in present or not missing:
        return
    current = response.headers.get("Vary")
    response.headers["Vary"] = ", ".join([current, *missing] if current else missing)


def _requested_headers(request: web.Request) -> str:
    """The headers the browser asks to send (x-api-key, anthropic-*, x-stainless-*, ...), echoed."""
    raw = request.headers.get("Access-Control-Request-Headers", "")
    names = [name.strip().lower() for name in raw.split(",")]
    return ", ".join(name for name in names if name and _TOKEN.match(name))


def cors_middleware(allowed: tuple[str, ...]) -> Middleware:
    """Answers CORS preflight requests itself: 204 for allowed origins, 403 for the others."""
    policy = CorsPolicy.from_config(allowed)

    @web.middleware
    async def preflight(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not _is_preflight(request):
            return await handler(request)
        origin = request.headers.get("Origin")
        if policy.allow_origin(origin) is None:
            log.info("cors.refused", origin=origin)
            return web.Response(status=403, text="CORS: origin not allowed by [server] allowed_origins\n")
        response = web.Response(status=204)
        response.headers["Access-Control-Allow-Methods"] = ALLOW_METHODS
        requested = _requested_headers(request)
        if requested:
            response.headers["Access-Control-Allow-Headers"] = requested
        response.headers["Access-Control-Max-Age"] = str(MAX_AGE_S)
        # Allow-Origin and Vary: Origin are added by the response signal, as for every response.
        _add_vary(response, "Access-Control-Request-Method", "Access-Control-Request-Headers")
        return response

    return preflight


def cors_response_headers(allowed: tuple[str, ...]) -> ResponseHook:
    """An on_response_prepare handler: CORS headers on every response, streamed ones included."""
    policy = CorsPolicy.from_config(allowed)

    async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
        preflight = _is_preflight(request)
        if not preflight:
            # Upstream's own CORS answer (the Anthropic API sends one) must not override the operator's.
            for name in {name for name in response.headers if name.lower().startswith("access-control-")}:
                del response.headers[name]
        # The answer depends on Origin (even with "*": present or not), so caches must key on it.
        _add_vary(response, "Origin")
        value = policy.allow_origin(request.headers.get("Origin"))
        if value is None:
            return  # no CORS headers: the browser keeps the response from the page
        response.headers["Access-Control-Allow-Origin"] = value
        if not preflight:
            response.headers["Access-Control-Expose-Headers"] = ", ".join(_exposed(response))

    return add_headers


def _exposed(response: web.StreamResponse) -> list[str]:
    present = [name.lower() for name in response.headers]
    dynamic = sorted({name for name in present if name.startswith(_EXPOSE_PREFIXES)})
    return [*EXPOSE_ALWAYS, *dynamic]


def setup_cors(app: web.Application, allowed: tuple[str, ...]) -> None:
    """Enable CORS for `allowed` origins; with none, the app is left untouched (OPTIONS is proxied)."""
    if not allowed:
        return
    for origin in allowed:
        if origin != "*" and not _ORIGIN.match(origin.lower()):
            log.warning(
                "cors.origin_malformed",
                origin=origin,
                hint="an origin is scheme://host[:port], without a path",
            )
    app.middlewares.append(cors_middleware(allowed))
    app.on_response_prepare.append(cors_response_headers(allowed))
