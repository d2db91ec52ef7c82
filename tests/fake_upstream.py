"""A fake Anthropic and OpenAI upstream: a real aiohttp server on loopback, for tests and benchmarks.

Public API (tests and bench/ depend on it; keep it stable)::

    async with running_fake_upstream() as fake:    # FakeUpstream, started on 127.0.0.1:<ephemeral>
        fake.url                 # http://127.0.0.1:PORT
        fake.anthropic_base_url  # http://127.0.0.1:PORT/anthropic   (no /v1, like ANTHROPIC_BASE_URL)
        fake.openai_base_url     # http://127.0.0.1:PORT/openai/v1   (with /v1, like OPENAI_BASE_URL)
        fake.requests            # list[RecordedRequest] in arrival order (FakeUpstream(record=False): none)
        fake.gate                # asyncio.Event the `gated` scenario waits for
        fake.summary_gate        # None, or an asyncio.Event summary answers wait for
        fake.summary_status      # 200, or the error status summary requests get
        fake.summaries()         # the summary requests recorded, in arrival order
        await fake.wait_disconnected(timeout)   # first request whose client went away mid-response
    FakeUpstream().app()         # the web.Application, to run it some other way

Each provider lives under its own path prefix, so a test can tell where the proxy routed a request
(RecordedRequest.provider is "anthropic" or "openai") and a proxy that drops a base URL's path is caught.
RecordedRequest.path is the path the provider sees, prefix removed: "/v1/messages".

Endpoints. Anthropic: POST /v1/messages (JSON or SSE), POST /v1/messages/count_tokens, GET /v1/models.
OpenAI: POST /v1/chat/completions (JSON or SSE), POST /v1/responses (JSON), POST /v1/embeddings,
GET /v1/models. Anything else: 404 in the provider's error shape (still recorded). A request body that is
not a JSON object on a POST endpoint: 400 in the provider's shape.

Usage numbers are derived from the request so tests can predict them:
  input tokens   = body_tokens(record.body) = max(1, len(raw request body) // 4)
                   (Anthropic input_tokens and count_tokens; OpenAI prompt_tokens and input_tokens)
  output tokens  = number of reply pieces, one per content_block_delta / chunk (DEFAULT_PIECES: 9)
  cache tokens   = integer headers x-fake-cache-read / x-fake-cache-write (default 0): Anthropic
                   cache_read_input_tokens / cache_creation_input_tokens (input_tokens does not subtract
                   them), OpenAI prompt_tokens_details.cached_tokens (cache read only); of the writes,
                   x-fake-cache-write-1h (default 0) went to the 1-hour cache (Anthropic's
                   cache_creation.ephemeral_1h_input_tokens, the rest ephemeral_5m_input_tokens).
The reply text is DEFAULT_TEXT, or with header `x-fake-chunks: N` the N pieces "tok0 ", "tok1 ", ...
A forced tool call (Anthropic tool_choice any/tool, OpenAI tool_choice required/function) answers with a
tool_use block / tool_calls whose input has one value per schema property (string "fake", integer 1,
number 1.5, boolean true, array [], object {}), streamed as input_json_delta / arguments pieces.

Scenarios, chosen by header `x-fake-scenario: NAME`, else by a model named `fake-NAME`:
  (none)            a normal answer
  NNN               (e.g. 400, 413, 429, 500, 529) that status with the provider's error body and headers
  retry-once        429 with retry-after-ms: 10 while x-stainless-retry-count is absent or 0, else normal
  slow              x-fake-delay seconds (default 0.05) before every stream event after the first,
                    or before a JSON answer
  first-byte-delay  x-fake-delay seconds (default 1.0) before the response headers
  hang              never answers; the handler returns when the client goes away
  stall             stream: headers and events up to the first delta, then silence until the client goes away
  cut               stream: two deltas after the first, then the connection is closed mid-body;
                    JSON: headers and half the body, then closed
  error-event       stream: two deltas after the first, then a mid-stream error (Anthropic `event: error`
                    overloaded_error, OpenAI `data: {"error": ...}`) and the body ends
  split-utf8        stream: the event holding EMOJI is sent in two TCP writes split inside the character
  deep-event        stream: after the first delta, one extra event whose JSON (with a "usage" key) is
                    nested DEEP_EVENT_DEPTH levels deep, too deep for Python's json to parse
  gated             stream: events up to the first delta, then wait for fake.gate (the test sets it)
                    and send the rest; if unset after x-fake-gate-timeout seconds (default 5) the
                    connection is cut
Summary requests (Vidurai's SemanticCompressor, sent by the proxy's summarizer; recognised by its
system prompt, SUMMARY_PROMPT_START, whatever the scenario) are answered with scripted_summary() of
their user prompt, in the provider's JSON shape (output tokens: the summary's words), after
fake.summary_gate is set when there is one, or with fake.summary_status and its error body.
Headers on every answer: Anthropic request-id and anthropic-ratelimit-*; OpenAI x-request-id,
openai-processing-ms and x-ratelimit-*; errors add x-should-retry (Anthropic) and, on 429,
retry-after and retry-after-ms. Request ids are "req_fake_000001", "req_fake_000002", ... per server.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import itertools
import json
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import attrs
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

EMOJI = "🙂"
DEFAULT_PIECES = ("Hello", " from", " the", " fake", " upstream", ": ", "ünïcödé", " " + EMOJI, " done.")
DEFAULT_TEXT = "".join(DEFAULT_PIECES)
ANTHROPIC_MODELS = ("claude-fake-1", "claude-fake-2")
OPENAI_MODELS = ("gpt-fake-1", "gpt-fake-2")
CREATED = 1700000000
MAX_BODY = 256 * 1024 * 1024
DEEP_EVENT_DEPTH = 100_000
DEEP_EVENT = (
    b'event: ping\ndata: {"type":"ping","usage":'
    + b"[" * DEEP_EVENT_DEPTH
    + b"]" * DEEP_EVENT_DEPTH
    + b"}\n\n"
)

_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_OPENAI_ERRORS = {
    401: ("invalid_request_error", "invalid_api_key"),
    429: ("requests", "rate_limit_exceeded"),
    404: ("invalid_request_error", "model_not_found"),
}


# How Vidurai's SemanticCompressor's system prompt begins (vidurai/core/semantic_compressor_v2.py).
SUMMARY_PROMPT_START = "You are an expert at extracting and summarizing key information from conversations."


def scripted_summary(prompt: str) -> str:
    """The fake's summary of a summary request's user prompt: the same for the same chunk anywhere."""
    digest = hashlib.sha256(prompt.encode()).hexdigest()[:12]
    return f"Summary: scripted summary {digest} of {prompt.count(chr(10)) + 1} lines."


def body_tokens(body: bytes) -> int:
    """The input token count the fake reports for a request body."""
    return max(1, len(body) // 4)


@attrs.define
class RecordedRequest:
    """One request as the fake received it, and what it answered."""

    method: str
    path: str
    query_string: str
    headers: CIMultiDictProxy[str]
    body: bytes
    json: Any | None
    provider: str = ""
    scenario: str = ""
    response_status: int = 0
    response_headers: dict[str, str] = attrs.field(factory=dict)
    response_body: bytearray = attrs.field(factory=bytearray)
    disconnected: bool = False  # the client went away before the fake finished answering


@attrs.define
class _Call:
    """Per-request state shared by the handlers."""

    request: web.Request
    record: RecordedRequest
    scenario: str
    request_id: str
    serial: int

    def option(self, name: str, default: float) -> float:
        raw = self.request.headers.get(f"x-fake-{name}")
        return float(raw) if raw else default

    @property
    def body(self) -> dict[str, Any]:
        return self.record.json if isinstance(self.record.json, dict) else {}

    def pieces(self) -> list[str]:
        count = self.request.headers.get("x-fake-chunks")
        return [f"tok{i} " for i in range(int(count))] if count else list(DEFAULT_PIECES)

    def cache(self) -> tuple[int, int, int]:
        """Cache reads, cache writes, and of the writes those to the 1-hour cache."""
        headers = self.request.headers
        return (
            int(headers.get("x-fake-cache-read", 0)),
            int(headers.get("x-fake-cache-write", 0)),
            int(headers.get("x-fake-cache-write-1h", 0)),
        )

    @property
    def input_tokens(self) -> int:
        return body_tokens(self.record.body)

    def client_gone(self) -> bool:
        transport = self.request.transport
        return transport is None or transport.is_closing()


def _is_summary(body: Any) -> bool:
    """A summary request of the proxy's: Vidurai's system prompt, as Anthropic or OpenAI carry it."""
    if not isinstance(body, dict):
        return False
    system = body.get("system")
    if not isinstance(system, str):
        messages = body.get("messages") or []
        first = messages[0] if messages and isinstance(messages[0], dict) else {}
        system = first.get("content") if first.get("role") == "system" else None
    return isinstance(system, str) and system.startswith(SUMMARY_PROMPT_START)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _tool_input(schema: Any) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "string": "fake",
        "integer": 1,
        "number": 1.5,
        "boolean": True,
        "array": [],
        "object": {},
    }
    properties = schema.get("properties", {}) if isinstance(schema, dict) else {}
    return {
        name: defaults.get(str(spec.get("type")) if isinstance(spec, dict) else "")
        for name, spec in properties.items()
    }


def _json_pieces(text: str, size: int = 8) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


Handler = Callable[[_Call], Awaitable[web.StreamResponse]]


class FakeUpstream:
    """Imitates the Anthropic and OpenAI HTTP APIs; see the module docstring for the contract."""

    def __init__(self, *, record: bool = True) -> None:
        self.requests: list[RecordedRequest] = []
        self.gate = asyncio.Event()
        self.summary_gate: asyncio.Event | None = None
        self.summary_status = 200
        self.url = ""
        self._record = record
        self._serial = itertools.count(1)

    @property
    def anthropic_base_url(self) -> str:
        return f"{self.url}/anthropic"

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/openai/v1"

    def last(self, path: str | None = None) -> RecordedRequest:
        """The latest recorded request, optionally the latest to `path`."""
        matching = [r for r in self.requests if path is None or r.path == path]
        if not matching:
            raise LookupError(f"no request recorded for {path or 'any path'}")
        return matching[-1]

    def summaries(self) -> list[RecordedRequest]:
        """The summary requests recorded, in arrival order."""
        return [r for r in self.requests if r.scenario == "summary"]

    async def wait_disconnected(self, timeout: float = 5.0) -> RecordedRequest:  # noqa: ASYNC109
        """Wait until some request's client went away mid-response, and return that request."""
        async with asyncio.timeout(timeout):
            while True:
                for record in self.requests:
                    if record.disconnected:
                        return record
                await asyncio.sleep(0.01)

    def app(self) -> web.Application:
        """The aiohttp application serving both fake APIs."""
        app = web.Application(client_max_size=MAX_BODY)
        routes: list[tuple[str, str, str, Handler]] = [
            ("anthropic", "POST", "/v1/messages", self._anthropic_messages),
            ("anthropic", "POST", "/v1/messages/count_tokens", self._anthropic_count_tokens),
            ("anthropic", "GET", "/v1/models", self._anthropic_models),
            ("openai", "POST", "/v1/chat/completions", self._openai_chat),
            ("openai", "POST", "/v1/responses", self._openai_responses),
            ("openai", "POST", "/v1/embeddings", self._openai_embeddings),
            ("openai", "GET", "/v1/models", self._openai_models),
        ]
        for provider, method, path, handler in routes:
            app.router.add_route(method, f"/{provider}{path}", self._endpoint(provider, handler))
        for provider in ("anthropic", "openai"):
            app.router.add_route("*", f"/{provider}/{{tail:.*}}", self._endpoint(provider, self._not_found))
        return app

    # --- request plumbing -------------------------------------------------------------------

    def _endpoint(
        self, provider: str, handler: Handler
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            body = await request.read()
            try:
                parsed = json.loads(body) if body else None
            except ValueError:
                parsed = None
            scenario = request.headers.get("x-fake-scenario", "")
            model = parsed.get("model") if isinstance(parsed, dict) else None
            if not scenario and isinstance(model, str) and model.startswith("fake-"):
                scenario = model.removeprefix("fake-")
            if _is_summary(parsed):
                scenario = "summary"
            record = RecordedRequest(
                method=request.method,
                path=request.path.removeprefix(f"/{provider}"),
                query_string=request.rel_url.raw_query_string,  # as sent, not re-encoded
                headers=CIMultiDictProxy(CIMultiDict(request.headers)),
                body=body,
                json=parsed,
                provider=provider,
                scenario=scenario,
            )
            if self._record:
                self.requests.append(record)
            serial = next(self._serial)
            call = _Call(request, record, scenario, f"req_fake_{serial:06d}", serial)
            return await self._dispatch(call, handler)

        return handle

    async def _dispatch(self, call: _Call, handler: Handler) -> web.StreamResponse:
        scenario = call.scenario
        if scenario == "summary":
            return await self._summary(call)
        if scenario.isdigit() and 400 <= int(scenario) <= 599:
            return self._error(call, int(scenario), f"Fake upstream error {scenario}.")
        if scenario == "retry-once" and call.request.headers.get("x-stainless-retry-count", "0") == "0":
            return self._error(call, 429, "Rate limited; retry shortly.", retry_after_ms="10")
        if scenario == "first-byte-delay":
            await asyncio.sleep(call.option("delay", 1.0))
        if scenario == "hang":
            await self._until_client_gone(call)
            return web.Response(status=500)
        if call.request.method == "POST" and handler is not self._not_found and not call.body:
            return self._error(call, 400, "Request body must be a JSON object.")
        if scenario == "slow" and not call.body.get("stream"):
            await asyncio.sleep(call.option("delay", 0.05))
        return await handler(call)

    async def _summary(self, call: _Call) -> web.StreamResponse:
        if self.summary_gate is not None:
            await self.summary_gate.wait()
        if self.summary_status != 200:
            return self._error(call, self.summary_status, "Fake upstream summary error.")
        messages = call.body.get("messages") or []
        prompt = str(messages[-1].get("content", "")) if messages and isinstance(messages[-1], dict) else ""
        text = scripted_summary(prompt)
        words = len(text.split())
        if call.record.provider == "anthropic":
            answer: dict[str, Any] = {
                "id": f"msg_fake_{call.serial:06d}",
                "type": "message",
                "role": "assistant",
                "model": call.body.get("model", ""),
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": self._anthropic_usage(call, words),
            }
        else:
            answer = {
                "id": f"chatcmpl-fake{call.serial:06d}",
                "object": "chat.completion",
                "created": CREATED,
                "model": call.body.get("model", ""),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text, "refusal": None},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": self._openai_usage(call, words),
            }
        return self._json(call, answer)

    async def _until_client_gone(self, call: _Call) -> None:
        # aiohttp signals a lost client only through the transport; poll it (handlers run uncancelled).
        while not call.client_gone():  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        call.record.disconnected = True

    def _headers(self, call: _Call, status: int) -> dict[str, str]:
        if call.record.provider == "anthropic":
            remaining = "0" if status == 429 else "999"
            headers = {"request-id": call.request_id, "anthropic-organization-id": "fake-org"}
            for kind, limit in (
                ("requests", "1000"),
                ("tokens", "80000"),
                ("input-tokens", "40000"),
                ("output-tokens", "16000"),
            ):
                headers[f"anthropic-ratelimit-{kind}-limit"] = limit
                headers[f"anthropic-ratelimit-{kind}-remaining"] = remaining
                headers[f"anthropic-ratelimit-{kind}-reset"] = "2030-01-01T00:00:00Z"
            if status >= 400:
                headers["x-should-retry"] = "true" if status in (408, 409, 429) or status >= 500 else "false"
        else:
            remaining = "0" if status == 429 else "9999"
            headers = {
                "x-request-id": call.request_id,
                "openai-processing-ms": "12",
                "openai-organization": "fake-org",
                "openai-version": "2020-10-01",
                "x-ratelimit-limit-requests": "10000",
                "x-ratelimit-remaining-requests": remaining,
                "x-ratelimit-reset-requests": "6ms",
                "x-ratelimit-limit-tokens": "30000000",
                "x-ratelimit-remaining-tokens": remaining,
                "x-ratelimit-reset-tokens": "0s",
            }
        if status == 429:
            headers["retry-after"], headers["retry-after-ms"] = "7", "7000"
        return headers

    def _json(
        self, call: _Call, payload: Any, status: int = 200, extra: dict[str, str] | None = None
    ) -> web.Response:
        headers = {**self._headers(call, status), **(extra or {}), "content-type": "application/json"}
        body = _dumps(payload).encode()
        call.record.response_status = status
        call.record.response_headers = headers
        call.record.response_body += body
        response_class = _HalfResponse if call.scenario == "cut" else web.Response
        return response_class(status=status, body=body, headers=headers)

    def _error(
        self, call: _Call, status: int, message: str, retry_after_ms: str | None = None
    ) -> web.Response:
        if call.record.provider == "anthropic":
            kind = _ANTHROPIC_ERROR_TYPES.get(
                status, "api_error" if status >= 500 else "invalid_request_error"
            )
            payload: dict[str, Any] = {
                "type": "error",
                "error": {"type": kind, "message": message},
                "request_id": call.request_id,
            }
        else:
            kind, code = _OPENAI_ERRORS.get(
                status, ("server_error" if status >= 500 else "invalid_request_error", None)
            )
            payload = {"error": {"message": message, "type": kind, "param": None, "code": code}}
        extra = {"retry-after": "0", "retry-after-ms": retry_after_ms} if retry_after_ms else None
        return self._json(call, payload, status, extra)

    async def _not_found(self, call: _Call) -> web.StreamResponse:
        return self._error(call, 404, f"Not found: {call.request.method} {call.record.path}")

    # --- streaming --------------------------------------------------------------------------

    async def _stream(
        self, call: _Call, frames: list[bytes], first_delta: int, error_frame: bytes
    ) -> web.StreamResponse:
        """Send SSE frames one write each, applying the stream scenarios."""
        headers = {
            **self._headers(call, 200),
            "cache-control": "no-cache",
            "content-type": "text/event-stream; charset=utf-8",
        }
        response = web.StreamResponse(status=200, headers=headers)
        call.record.response_status = 200
        call.record.response_headers = headers
        scenario = call.scenario
        try:
            await response.prepare(call.request)
            for index, frame in enumerate(frames):
                if index and scenario == "slow":
                    await asyncio.sleep(call.option("delay", 0.05))
                if index == first_delta + 3 and scenario == "cut":
                    self._cut(call)
                    return response
                if index == first_delta + 3 and scenario == "error-event":
                    await self._write(call, response, error_frame)
                    break
                if index == first_delta + 1 and scenario == "deep-event":
                    await self._write(call, response, DEEP_EVENT)
                if scenario == "split-utf8" and EMOJI.encode() in frame:
                    # Two writes with a pause between them, the boundary inside the 4-byte character.
                    cut_at = frame.index(EMOJI.encode()) + 2
                    await self._write(call, response, frame[:cut_at])
                    await asyncio.sleep(0.05)
                    await self._write(call, response, frame[cut_at:])
                else:
                    await self._write(call, response, frame)
                if index == first_delta and scenario == "stall":
                    await self._until_client_gone(call)
                    return response
                if index == first_delta and scenario == "gated":
                    try:
                        await asyncio.wait_for(self.gate.wait(), call.option("gate-timeout", 5.0))
                    except TimeoutError:
                        self._cut(call)
                        return response
            await response.write_eof()
        except ConnectionError:
            call.record.disconnected = True
        return response

    async def _write(self, call: _Call, response: web.StreamResponse, data: bytes) -> None:
        if call.client_gone():
            raise ConnectionResetError("client went away")
        await response.write(data)
        call.record.response_body += data

    @staticmethod
    def _cut(call: _Call) -> None:
        # Closing the socket without the terminating chunk: the client sees a truncated body.
        transport = call.request.transport
        if transport is not None:
            transport.close()

    # --- Anthropic --------------------------------------------------------------------------

    def _anthropic_blocks(self, call: _Call) -> tuple[list[dict[str, Any]], list[str], str]:
        """Content blocks of the answer, the pieces they stream as, and the stop reason."""
        tool = self._anthropic_forced_tool(call.body)
        if tool is not None:
            arguments = _tool_input(tool.get("input_schema"))
            block = {
                "type": "tool_use",
                "id": f"toolu_fake_{call.serial:06d}",
                "name": tool["name"],
                "input": arguments,
            }
            return [block], _json_pieces(_dumps(arguments)), "tool_use"
        pieces = call.pieces()
        return [{"type": "text", "text": "".join(pieces)}], pieces, "end_turn"

    @staticmethod
    def _anthropic_forced_tool(body: dict[str, Any]) -> dict[str, Any] | None:
        tools = [t for t in body.get("tools") or [] if isinstance(t, dict) and "name" in t]
        choice = body.get("tool_choice") or {}
        if not tools or not isinstance(choice, dict) or choice.get("type") not in ("any", "tool"):
            return None
        wanted = choice.get("name")
        return next((t for t in tools if t["name"] == wanted), tools[0])

    def _anthropic_usage(self, call: _Call, output_tokens: int) -> dict[str, Any]:
        cache_read, cache_write, one_hour = call.cache()
        return {
            "input_tokens": call.input_tokens,
            "cache_creation_input_tokens": cache_write,
            "cache_read_input_tokens": cache_read,
            "cache_creation": {
                "ephemeral_5m_input_tokens": cache_write - one_hour,
                "ephemeral_1h_input_tokens": one_hour,
            },
            "output_tokens": output_tokens,
        }

    async def _anthropic_messages(self, call: _Call) -> web.StreamResponse:
        blocks, pieces, stop_reason = self._anthropic_blocks(call)
        message = {
            "id": f"msg_fake_{call.serial:06d}",
            "type": "message",
            "role": "assistant",
            "model": call.body.get("model", ""),
            "content": blocks,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {**self._anthropic_usage(call, len(pieces)), "service_tier": "standard"},
        }
        if not call.body.get("stream"):
            return self._json(call, message)

        def event(name: str, data: dict[str, Any]) -> bytes:
            return f"event: {name}\ndata: {_dumps(data)}\n\n".encode()

        start = {
            **message,
            "content": [],
            "stop_reason": None,
            "usage": {**self._anthropic_usage(call, 1), "service_tier": "standard"},
        }
        block = blocks[0]
        opening: dict[str, Any] = {"type": "text", "text": ""}
        delta_type, delta_field = "text_delta", "text"
        if block["type"] == "tool_use":
            opening, delta_type, delta_field = {**block, "input": {}}, "input_json_delta", "partial_json"
        frames = [
            event("message_start", {"type": "message_start", "message": start}),
            event(
                "content_block_start", {"type": "content_block_start", "index": 0, "content_block": opening}
            ),
            event("ping", {"type": "ping"}),
        ]
        frames += [
            event(
                "content_block_delta",
                {"type": "content_block_delta", "index": 0, "delta": {"type": delta_type, delta_field: p}},
            )
            for p in pieces
        ]
        frames += [
            event("content_block_stop", {"type": "content_block_stop", "index": 0}),
            event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                    "usage": self._anthropic_usage(call, len(pieces)),
                },
            ),
            event("message_stop", {"type": "message_stop"}),
        ]
        error = event(
            "error",
            {
                "type": "error",
                "request_id": call.request_id,
                "error": {"type": "overloaded_error", "message": "Overloaded"},
            },
        )
        return await self._stream(call, frames, 3, error)

    async def _anthropic_count_tokens(self, call: _Call) -> web.StreamResponse:
        return self._json(call, {"input_tokens": call.input_tokens})

    async def _anthropic_models(self, call: _Call) -> web.StreamResponse:
        data = [
            {
                "type": "model",
                "id": model,
                "display_name": model.replace("-", " ").title(),
                "created_at": "2025-01-01T00:00:00Z",
                "lifecycle": "active",
            }
            for model in ANTHROPIC_MODELS
        ]
        return self._json(
            call, {"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]}
        )

    # --- OpenAI -----------------------------------------------------------------------------

    @staticmethod
    def _openai_forced_tool(body: dict[str, Any]) -> dict[str, Any] | None:
        tools: list[dict[str, Any]] = [
            t["function"]
            for t in body.get("tools") or []
            if isinstance(t, dict) and isinstance(t.get("function"), dict) and "name" in t["function"]
        ]
        choice = body.get("tool_choice")
        if not tools or not (choice == "required" or isinstance(choice, dict)):
            return None
        wanted = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
        return next((t for t in tools if t["name"] == wanted), tools[0])

    def _openai_usage(self, call: _Call, completion_tokens: int) -> dict[str, Any]:
        cache_read, _, _ = call.cache()
        return {
            "prompt_tokens": call.input_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": call.input_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cache_read, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    async def _openai_chat(self, call: _Call) -> web.StreamResponse:
        body = call.body
        tool = self._openai_forced_tool(body)
        common = {
            "id": f"chatcmpl-fake{call.serial:06d}",
            "created": CREATED,
            "model": body.get("model", ""),
            "system_fingerprint": "fp_fake",
        }
        call_id = f"call_fake_{call.serial:06d}"
        if tool is not None:
            arguments = _dumps(_tool_input(tool.get("parameters")))
            pieces, finish = _json_pieces(arguments), "tool_calls"
            tool_call = {
                "id": call_id,
                "type": "function",
                "function": {"name": tool["name"], "arguments": arguments},
            }
            message: dict[str, Any] = {
                "role": "assistant",
                "content": None,
                "refusal": None,
                "tool_calls": [tool_call],
            }
        else:
            pieces, finish = call.pieces(), "stop"
            message = {"role": "assistant", "content": "".join(pieces), "refusal": None}
        if not body.get("stream"):
            return self._json(
                call,
                {
                    **common,
                    "object": "chat.completion",
                    "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
                    "usage": self._openai_usage(call, len(pieces)),
                    "service_tier": "default",
                },
            )

        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            data: dict[str, Any] = {
                **common,
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
            }
            if include_usage:
                data["usage"] = None  # with include_usage every chunk carries usage, null until the last
            return f"data: {_dumps(data)}\n\n".encode()

        if tool is not None:
            first = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "index": 0,
                        "id": call_id,
                        "type": "function",
                        "function": {"name": tool["name"], "arguments": ""},
                    }
                ],
            }
            frames = [chunk(first)] + [
                chunk({"tool_calls": [{"index": 0, "function": {"arguments": p}}]}) for p in pieces
            ]
        else:
            frames = [chunk({"role": "assistant", "content": "", "refusal": None})]
            frames += [chunk({"content": p}) for p in pieces]
        frames.append(chunk({}, finish))
        if include_usage:
            final = {
                **common,
                "object": "chat.completion.chunk",
                "choices": [],
                "usage": self._openai_usage(call, len(pieces)),
            }
            frames.append(f"data: {_dumps(final)}\n\n".encode())
        frames.append(b"data: [DONE]\n\n")
        error = {
            "error": {
                "message": "The server had an error while processing your request.",
                "type": "server_error",
                "param": None,
                "code": None,
            }
        }
        return await self._stream(call, frames, 1, f"data: {_dumps(error)}\n\n".encode())

    async def _openai_responses(self, call: _Call) -> web.StreamResponse:
        pieces = call.pieces()
        cache_read, _, _ = call.cache()
        return self._json(
            call,
            {
                "id": f"resp_fake_{call.serial:06d}",
                "object": "response",
                "created_at": CREATED,
                "status": "completed",
                "model": call.body.get("model", ""),
                "output": [
                    {
                        "type": "message",
                        "id": f"msg_fake_{call.serial:06d}",
                        "status": "completed",
                        "role": "assistant",
                        "content": [{"type": "output_text", "text": "".join(pieces), "annotations": []}],
                    }
                ],
                "parallel_tool_calls": True,
                "tool_choice": "auto",
                "tools": [],
                "usage": {
                    "input_tokens": call.input_tokens,
                    "output_tokens": len(pieces),
                    "total_tokens": call.input_tokens + len(pieces),
                    "input_tokens_details": {"cached_tokens": cache_read},
                    "output_tokens_details": {"reasoning_tokens": 0},
                },
            },
        )

    async def _openai_embeddings(self, call: _Call) -> web.StreamResponse:
        inputs = call.body.get("input", "")
        inputs = inputs if isinstance(inputs, list) else [inputs]
        as_base64 = call.body.get("encoding_format") == "base64"
        data = []
        for index, text in enumerate(inputs):
            vector = [round((len(str(text)) + i) / 10, 1) for i in range(8)]
            encoded: Any = base64.b64encode(struct.pack("<8f", *vector)).decode() if as_base64 else vector
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        usage = {"prompt_tokens": call.input_tokens, "total_tokens": call.input_tokens}
        return self._json(
            call, {"object": "list", "data": data, "model": call.body.get("model", ""), "usage": usage}
        )

    async def _openai_models(self, call: _Call) -> web.StreamResponse:
        return self._json(
            call,
            {
                "object": "list",
                "data": [
                    {"id": model, "object": "model", "created": CREATED, "owned_by": "fake"}
                    for model in OPENAI_MODELS
                ],
            },
        )


class _HalfResponse(web.Response):
    """A JSON response that announces its full length, sends half of it, and drops the connection."""

    async def write_eof(self, data: bytes = b"") -> None:
        body = self.body
        assert isinstance(body, bytes)
        await web.StreamResponse.write(self, body[: len(body) // 2])
        if self._req is not None and self._req.transport is not None:
            self._req.transport.close()


@contextlib.asynccontextmanager
async def running_fake_upstream(
    *, record: bool = True, host: str = "127.0.0.1"
) -> AsyncIterator[FakeUpstream]:
    """Start a FakeUpstream on an ephemeral loopback port; stop it on exit."""
    fake = FakeUpstream(record=record)
    # A short shutdown: `hang` handlers only end when their client goes away.
    runner = web.AppRunner(fake.app(), shutdown_timeout=0.5, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, 0)
        await site.start()
        port = runner.addresses[0][1]
        fake.url = f"http://{host}:{port}"
        yield fake
    finally:
        await runner.cleanup()
