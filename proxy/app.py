"""Application assembly: create_app(config) wires routes, shared state and background work."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable

import structlog
from aiohttp import web

from . import admin, dashboard, edges, handlers
from .access import log_request
from .admin import Access, AdminGuard, guard_middleware
from .cluster import Cluster
from .compression import route_vidurai_logs
from .compression.semantic import warm_up as warm_up_recall
from .config import Config
from .cors import setup_cors
from .edges import Handler
from .keys import (
    ADMIN,
    ANTHROPIC,
    CALIBRATION,
    CLUSTER,
    CONFIG,
    OPENAI,
    PRICES,
    PROM,
    SESSIONS,
    STARTED_AT,
    STORE,
    SUMMARIZER,
    UPSTREAM,
)
from .limits.context import limits_ctx
from .maintenance import expire_idle, maintain_sessions
from .pricing import PriceTable
from .prom import PromMetrics
from .providers import Anthropic, OpenAI
from .sessions import SessionRegistry
from .storage import open_store
from .summarizer import Summarizer
from .tokens import Calibration, warm_up
from .upstream import client_session
from .views import metrics_json, metrics_text

log = structlog.get_logger(__name__)


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Binds a request id for every log line, logs one line per request, hides tracebacks."""
    structlog.contextvars.clear_contextvars()
    request_id = os.urandom(8).hex()
    structlog.contextvars.bind_contextvars(request_id=request_id, method=request.method, path=request.path)
    started = time.monotonic()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = 499
        raise
    except Exception:
        log.exception("unhandled error")
        if request.writer.output_size > 0:
            # Headers already went out: a second response would land inside the first one's body.
            if request.transport is not None:
                request.transport.abort()
            raise web.HTTPInternalServerError() from None  # aiohttp finds the connection closed
        provider = request.app[ANTHROPIC] if request.path.startswith("/v1/messages") else request.app[OPENAI]
        return handlers.error_response(
            provider,
            500,
            "The proxy hit an internal error; the request was not forwarded. Details are in the proxy's log.",
        )
    finally:
        if request.path not in ("/health", "/metrics", "/metrics.json"):
            log_request(status=status, duration_ms=round((time.monotonic() - started) * 1000, 2))


async def _upstream_ctx(app: web.Application) -> AsyncIterator[None]:
    await asyncio.to_thread(warm_up)
    if app[CONFIG].compression.enabled:
        await asyncio.to_thread(warm_up_recall)
    async with client_session(app[CONFIG].upstream) as session:
        app[UPSTREAM] = session
        yield


async def _cluster_ctx(app: web.Application) -> AsyncIterator[None]:
    cluster = app[CLUSTER]
    await cluster.start(app[CALIBRATION])
    try:
        yield
    finally:
        await cluster.close()


async def _storage_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    store = open_store(config.storage)
    await store.start()
    app[STORE] = store
    app[PROM].watch_storage(store.health)
    registry = SessionRegistry(store, config.sessions.timeout, config.sessions.max_active)
    app[SESSIONS] = registry
    await expire_idle(registry)  # sessions that timed out while no instance was running
    task = asyncio.create_task(maintain_sessions(config.sessions, registry), name="vidurai-sessions")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await registry.close()
        await store.close()


async def _summaries_ctx(app: web.Application) -> AsyncIterator[None]:
    """Model-written digests (summarizer = model): the calls that write them into the store (which
    forgets them itself when store_text is off)."""
    config = app[CONFIG]
    model = config.compression.summarizer == "model"
    if model and not config.storage.store_text:
        log.warning(
            "summarizer = model needs [storage] store_text (a summary is conversation text); "
            "digests stay extractive"
        )
    providers = {"anthropic": app[ANTHROPIC], "openai": app[OPENAI]}
    app[SUMMARIZER] = Summarizer(
        app[UPSTREAM],
        providers,
        app[STORE],
        app[PRICES],
        app[PROM],
        config.compression,
        enabled=model and config.storage.store_text,
    )
    try:
        yield
    finally:
        await app[SUMMARIZER].close()


def create_app(config: Config, *, clock: Callable[[], float] = time.time) -> web.Application:
    """The proxy as an aiohttp application, for `python -m proxy` and for tests (which may set the
    clock that limits' windows follow)."""
    route_vidurai_logs(debug=config.logging.level.lower() == "debug")
    guard = AdminGuard(config.server)
    app = web.Application(
        client_max_size=config.server.max_body_mb * 1024 * 1024,
        middlewares=[request_context, edges.origin_form_only, guard_middleware(guard)],
    )
    app[CONFIG] = config
    app[ADMIN] = guard
    app[STARTED_AT] = time.monotonic()
    app[ANTHROPIC] = Anthropic(config.upstream.anthropic_base_url)
    app[OPENAI] = OpenAI(config.upstream.openai_base_url)
    app[PRICES] = PriceTable(config.pricing)
    app[PROM] = PromMetrics()
    app[CALIBRATION] = Calibration(shared=bool(config.cluster.redis_url))
    app[CLUSTER] = Cluster(config.cluster)
    app[PROM].watch_cluster(app[CLUSTER].health)
    setup_cors(app, config.server.allowed_origins)
    app.cleanup_ctx.append(_upstream_ctx)
    app.cleanup_ctx.append(_cluster_ctx)
    app.cleanup_ctx.append(_storage_ctx)
    app.cleanup_ctx.append(_summaries_ctx)
    app.cleanup_ctx.append(limits_ctx(clock))

    # Routes are admin routes (admin hosts, and the token when set) unless declared otherwise here.
    router = app.router
    router.add_get("/", edges.root)  # an admin route, like the dashboard it leads to
    guard.declare(Access.PUBLIC, router.add_get("/health", handlers.health))
    router.add_get("/metrics", metrics_text)
    router.add_get("/metrics.json", metrics_json)
    router.add_routes(dashboard.routes())
    guard.declare(Access.HOST, *router.add_routes([*dashboard.assets(), *admin.routes(guard)]))
    guard.declare(
        Access.PUBLIC,
        router.add_post("/v1/messages", handlers.anthropic_route("messages")),
        router.add_post("/v1/messages/count_tokens", handlers.anthropic_route("count_tokens")),
        router.add_post("/v1/chat/completions", handlers.chat_completions),
        router.add_post("/chat/completions", handlers.chat_completions),
        router.add_route("*", "/{tail:.*}", handlers.passthrough),
    )
    return app


async def start_server(
    app: web.Application, host: str, port: int, reuse_port: bool = False
) -> tuple[web.AppRunner, int]:
    """Serve `app`; returns the runner (call cleanup() to stop) and the bound port (port 0 picks one).
    `reuse_port`: one of `[server] workers` processes sharing the port (SO_REUSEPORT)."""
    edges.quiet_parser_errors()
    edges.guard_accept(asyncio.get_running_loop())
    # handler_cancellation: a client that disconnects cancels its handler, which closes the upstream call.
    # keepalive_timeout runs from the connection's start and from each response, and is not reset by
    # a partial request: it closes idle connections and those slow to send their headers alike.
    runner = web.AppRunner(
        app,
        handler_cancellation=True,
        access_log=None,
        keepalive_timeout=app[CONFIG].server.keepalive_timeout,
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_port=reuse_port or None)
    await site.start()
    bound: int = runner.addresses[0][1]
    return runner, bound
