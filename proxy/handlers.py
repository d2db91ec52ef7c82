"""Request handlers: request in, provider adapter, session, compressor, upstream, response out."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import attrs
import structlog
from aiohttp import web

from . import __version__, jsonio
from .call import Call
from .compression import compress
from .compression.policy import UNCACHED
from .intake import (
    INLINE_BODY_LIMIT,
    TOO_DEEP,
    BadRequest,
    check_message_count,
    in_thread_if,
    parse_object,
    read_body,
)
from .keys import (
    ADMIN,
    ANTHROPIC,
    CALIBRATION,
    CLUSTER,
    CONFIG,
    LIMITS,
    OPENAI,
    PRICES,
    PROM,
    SESSIONS,
    STARTED_AT,
    STORE,
    SUMMARIZER,
)
from .prompt_cache import prompt_cache
from .providers import Provider
from .records import MemoryRow
from .relay import relay
from .sessions import SESSION_HEADER, session_id_for
from .tags import TAGS_HEADER, parse_tags
from .upstream import UpstreamFailure

log = structlog.get_logger(__name__)

# Endpoints whose conversation the proxy reads, remembers and may compress.
CONVERSATION_ENDPOINTS = frozenset({"messages", "chat_completions"})
# Messages a conversation's turn adds: the reply, and the next user message or tool result.
TURN_MESSAGES = 2


def error_response(provider: Provider, status: int, message: str) -> web.Response:
    """The proxy's own errors, in the provider's shape so SDKs raise their usual exceptions."""
    return web.json_response(provider.error_body(status, message), status=status)


def _tags(request: web.Request) -> dict[str, str] | None:
    """X-Vidurai-Tags, parsed; a malformed header is the client's mistake, answered before forwarding."""
    try:
        return parse_tags(request.headers.getall(TAGS_HEADER, []))
    except ValueError as exc:
        raise BadRequest(400, f"{TAGS_HEADER}: {exc}") from None


def provider_for(request: web.Request) -> Provider:
    """Anthropic when the client speaks its dialect (its key header or version header), else OpenAI."""
    headers = request.headers
    if "x-api-key" in headers or "anthropic-version" in headers:
        return request.app[ANTHROPIC]
    return request.app[OPENAI]


async def _remember_and_compress(
    request: web.Request, call: Call, provider: Provider, body: dict[str, Any], body_size: int
) -> dict[str, Any] | None:
    """Find the session, let its memory compress the history; the rewritten body or None."""
    app = request.app
    tenant = call.tenant
    label = request.headers.get(SESSION_HEADER)
    identity = (tenant, provider.name, label, provider.conversation_start(body))
    large = body_size > INLINE_BODY_LIMIT
    session_id = await in_thread_if(large, session_id_for, *identity)  # hashes the start: huge in a huge body
    messages = provider.messages(body)
    now = time.time()
    session = await app[SESSIONS].touch(session_id, tenant, len(messages), now, label)
    call.record.session_id = session_id
    structlog.contextvars.bind_contextvars(session_id=session_id)
    settings = app[CONFIG].compression
    foldable = settings.enabled and len(messages) >= settings.threshold_messages
    # The previous turn may have gone to another instance: Redis knows, when there is one. Only a
    # fold asks about the cache, so only conversations a turn away from folding ask Redis (100 to
    # 150 us of CPU a call, bench/cluster.py), and short requests cost no round trip.
    previous_at = session.previous_request_at
    if settings.enabled and len(messages) >= settings.threshold_messages - TURN_MESSAGES:
        previous_at = await app[CLUSTER].previous_request_at(session_id, now, previous_at)
    # Only a fold has a recall block to hold to the cache reads it replaces.
    warm = None
    prices = UNCACHED
    if foldable:
        ask = (provider, body, previous_at, now, app[PRICES])
        prices, warm = await in_thread_if(large, prompt_cache, *ask)  # walks the whole body for markers
    rows: list[MemoryRow] = []
    summarizer = app[SUMMARIZER]
    if foldable:
        async with session.lock:
            memory = await app[SESSIONS].memory_for(session)
            # In a thread: a cold session with a long history takes longer than other streams should wait.
            book = summarizer.book
            result = await asyncio.to_thread(
                compress, provider.shape, body, memory, settings, warm, prices, book
            )
            rows = memory.drain_memory_rows()
        if result.to_summarize:  # in the background: this request goes out with what it has
            summarizer.submit(result.to_summarize, request.headers, session_id, tenant)
    else:  # nothing to fold, only to count (even with compression off)
        result = await in_thread_if(large, compress, provider.shape, body, None, settings, warm, prices)
    store = app[STORE]
    if rows:
        store.add_memories(rows)
    call.set_estimates(result.tokens_original_est, result.tokens_forwarded_est, app[CALIBRATION])
    record = call.record
    record.messages_original = result.messages_original
    record.messages_forwarded = result.messages_forwarded
    if result.body is not None:
        store.add_audit(
            session_id,
            "compressed",
            {
                "messages_folded": result.messages_folded,
                "messages_before": result.messages_original,
                "messages_after": result.messages_forwarded,
                "tokens_before_est": record.tokens_original_est,
                "tokens_after_est": record.tokens_forwarded_est,
                "cache_warm": warm is not None,  # recall held to the cache reads it replaces
                "digests": list(result.summarizers),  # who wrote each folded chunk's digest, in order
            },
            time.time(),
        )
    elif result.reason.startswith(("failed_open", "invalid", "input")):
        store.add_audit(session_id, "compression_failed_open", {"reason": result.reason}, time.time())
    return result.body


async def model_call(request: web.Request, provider: Provider, endpoint: str) -> web.StreamResponse:
    """A call the proxy reads: Messages, count_tokens or Chat Completions."""
    call = Call.begin(request, provider.name, endpoint)
    structlog.contextvars.bind_contextvars(provider=provider.name, endpoint=endpoint)
    try:
        call.record.tags = _tags(request)
        data, rewritten = await _outgoing(request, call, provider, endpoint)
        refusal = await request.app[LIMITS].admit(request, call, provider)
        if refusal is not None:
            return refusal
        return await relay(request, call, provider, data, rewritten)
    except (BadRequest, UpstreamFailure) as exc:
        return await _refuse(request, call, provider, exc)
    finally:
        _finish(request.app, call)


async def _outgoing(
    request: web.Request, call: Call, provider: Provider, endpoint: str
) -> tuple[bytes, bool]:
    """The bytes to forward and whether they differ from the client's; the parsed body is freed on
    return, before the upstream call."""
    raw = await read_body(request)
    body = await parse_object(raw)
    try:
        model = body.get("model")
        call.record.model = model if isinstance(model, str) else None
        call.record.stream = body.get("stream") is True
        call.max_tokens = provider.max_output_tokens(body)
        structlog.contextvars.bind_contextvars(model=call.record.model)
        outgoing = None
        if endpoint in CONVERSATION_ENDPOINTS:
            check_message_count(request, provider, body)
            outgoing = await _remember_and_compress(request, call, provider, body, len(raw))
        rewritten = False
        if call.record.stream:
            target = dict(outgoing if outgoing is not None else body)
            if provider.prepare_stream(target):
                outgoing, rewritten = target, True
        if outgoing is None:
            return raw, rewritten
        large = len(raw) > INLINE_BODY_LIMIT
        del raw, body  # the parsed original is no longer needed while the rewrite is serialized
        return await in_thread_if(large, jsonio.dumps, outgoing), rewritten
    except RecursionError:  # parsed, but too deep for the proxy's own walks over it
        raise BadRequest(400, TOO_DEEP) from None


async def _refuse(
    request: web.Request, call: Call, provider: Provider, exc: BadRequest | UpstreamFailure
) -> web.Response:
    call.record.status, call.record.error = exc.status, exc.message
    response = error_response(provider, exc.status, exc.message)
    if exc.status == 413:
        # The unread rest of the body would be taken for the next request; aiohttp reads and drops
        # it for a few seconds before closing, so the client sees this answer, not a reset.
        response.force_close()
    elif exc.status == 408:
        # A client that stopped sending gets the answer, then the connection is closed at once.
        await response.prepare(request)
        await response.write_eof()
        if request.transport is not None:
            request.transport.close()
    return response


async def passthrough(request: web.Request) -> web.StreamResponse:
    """Any other path (/v1/models, /v1/embeddings, /v1/responses, ...), forwarded unchanged."""
    provider = provider_for(request)
    call = Call.begin(request, provider.name, "passthrough")
    structlog.contextvars.bind_contextvars(provider=provider.name, endpoint="passthrough")
    try:
        call.record.tags = _tags(request)
        raw = await read_body(request)
        refusal = await request.app[LIMITS].admit(request, call, provider)
        if refusal is not None:
            return refusal
        return await relay(request, call, provider, raw if raw or request.body_exists else None, False)
    except (BadRequest, UpstreamFailure) as exc:
        return await _refuse(request, call, provider, exc)
    finally:
        _finish(request.app, call)


def _finish(app: web.Application, call: Call) -> None:
    """Price the call and hand its one metrics row to the store; never raises into the response."""
    record = call.close()
    try:
        prices = app[PRICES]
        if record.usage.reported:
            record.cost_usd = prices.cost(record.model, record.usage)
            if record.tokens_saved is not None:
                record.cost_saved_usd = prices.saved_cost(record.model, record.tokens_saved)
        app[PROM].observe(record)
        app[LIMITS].settle(call, record)
    except Exception:  # a pricing or metrics bug must not lose the row
        log.exception("metrics bookkeeping failed")
    app[STORE].add_request(record)


async def health(request: web.Request) -> web.Response:
    """The proxy's own status; usage totals only for whoever may read the admin routes."""
    app = request.app
    storage = app[STORE].health()
    cluster = app[CLUSTER]
    body: dict[str, Any] = {
        "status": "ok" if storage.writable and not cluster.degraded else "degraded",
        "version": __version__,
        "uptime_s": round(time.monotonic() - app[STARTED_AT], 3),
        "active_sessions": len(app[SESSIONS]),
        "sessions_in_memory": app[SESSIONS].resident,
        "admin_locked": app[ADMIN].locked,
        "storage": attrs.asdict(storage),
        "cluster": attrs.asdict(cluster.health()),
        "limits": app[LIMITS].health(),
    }
    if not body["limits"]["reachable"]:
        body["status"] = "degraded"
    if not app[ADMIN].allows(request):
        return web.json_response(body)
    try:
        body["totals"] = await app[STORE].totals()
    except Exception as exc:  # health must answer even if the database is unreadable
        body["status"] = "degraded"
        body["totals"] = None
        body["database_error"] = type(exc).__name__
    return web.json_response(body)


def anthropic_route(endpoint: str) -> Any:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await model_call(request, request.app[ANTHROPIC], endpoint)

    return handler


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await model_call(request, request.app[OPENAI], "chat_completions")
