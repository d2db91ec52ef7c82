"""OpenAI Chat Completions (and compatible servers): URLs, error shape, usage and include_usage."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from multidict import CIMultiDict

from ..records import Usage

if TYPE_CHECKING:
    from ..config import CompressionConfig
from ..sse import SSEEvent, event_data, whole_events
from .base import (
    SUMMARY_MAX_TOKENS,
    SUMMARY_TEMPERATURE,
    Provider,
    SSEUsageObserver,
    UsageObserver,
    token_field,
)
from .openai_shape import OpenAIShape

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    504: "timeout",
}
# With include_usage, every chunk carries "usage":null; removed again for clients that did not ask.
# A bare "usage" key cannot occur inside a JSON string (its quotes would be escaped).
_NULL_USAGE = re.compile(rb',\s*"usage"\s*:\s*null|"usage"\s*:\s*null\s*,?')


class OpenAI(Provider):
    name = "openai"
    shape = OpenAIShape()

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url  # with /v1, like OPENAI_BASE_URL

    def upstream_url(self, path: str, query_string: str) -> str:
        # Clients send /v1/... (or /... when their base URL lacks /v1); the base URL carries the version.
        if path == "/v1" or path.startswith("/v1/"):
            path = path[3:]
        url = self.base_url + path
        return f"{url}?{query_string}" if query_string else url

    def summary_model(self, settings: CompressionConfig) -> str:
        return settings.summary_model_openai

    def summary_call(self, model: str, system: str, text: str) -> tuple[str, dict[str, Any]]:
        body = {
            "model": model,
            "max_tokens": SUMMARY_MAX_TOKENS,
            "temperature": SUMMARY_TEMPERATURE,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": text}],
        }
        return "/v1/chat/completions", body

    def answer_text(self, payload: dict[str, Any]) -> str | None:
        choices = payload.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return None
        message = choices[0].get("message")
        content = message.get("content") if isinstance(message, dict) else None
        return content if isinstance(content, str) and content else None

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        kind = _ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
        return {"error": {"message": message, "type": kind, "param": None, "code": None}}

    def quota_error_body(self, message: str) -> dict[str, Any]:
        """What OpenAI answers when an account's quota is spent: type and code insufficient_quota."""
        return {
            "error": {
                "message": message,
                "type": "insufficient_quota",
                "param": None,
                "code": "insufficient_quota",
            }
        }

    def rate_limit_headers(
        self, unit: str, limit: int, remaining: int, resets_at: float, now: float
    ) -> dict[str, str]:
        """x-ratelimit-limit-<unit> / -remaining- / -reset-, the reset as a duration ("17s", "250ms")."""
        return {
            f"x-ratelimit-limit-{unit}": str(limit),
            f"x-ratelimit-remaining-{unit}": str(remaining),
            f"x-ratelimit-reset-{unit}": _duration(resets_at - now),
        }

    def authorize(self, headers: CIMultiDict[str], api_key: str) -> None:
        headers.popall("x-api-key", None)
        headers["authorization"] = f"Bearer {api_key}"

    def max_output_tokens(self, body: dict[str, Any]) -> int | None:
        bound = token_field(body, "max_completion_tokens")
        return bound if bound is not None else token_field(body, "max_tokens")

    def read_usage(self, payload: dict[str, Any], usage: Usage) -> None:
        raw = payload.get("usage")
        if not isinstance(raw, dict):
            return
        # Chat Completions names; the Responses API (passed through) uses input/output names.
        prompt = token_field(raw, "prompt_tokens")
        details = raw.get("prompt_tokens_details")
        if prompt is None:
            prompt = token_field(raw, "input_tokens")
            details = raw.get("input_tokens_details")
        cached = token_field(details, "cached_tokens") or 0
        if prompt is not None:
            # OpenAI counts cached tokens inside the prompt total; keep each tier once.
            usage.input_tokens = max(prompt - cached, 0)
            usage.cache_read_tokens = cached
            usage.cache_write_tokens = 0
        completion = token_field(raw, "completion_tokens")
        if completion is None:
            completion = token_field(raw, "output_tokens")
        if completion is not None:
            usage.output_tokens = completion

    def read_stream_event(self, payload: dict[str, Any], observer: UsageObserver) -> None:
        # Responses API streams wrap the response object: response.created ... response.completed.
        response = payload.get("response")
        if isinstance(response, dict):
            payload = response
        if observer.model is None and isinstance(payload.get("model"), str):
            observer.model = payload["model"]
        self.read_usage(payload, observer.usage)

    def conversation_start(self, body: dict[str, Any]) -> Any:
        system = []
        for message in self.messages(body):
            if not isinstance(message, dict):
                continue
            if message.get("role") in ("system", "developer"):
                system.append(message.get("content"))
            elif message.get("role") == "user":
                return {"system": system, "first_user": message.get("content")}
        return {"system": system, "first_user": None}

    def prompt_cache_seconds(self, body: dict[str, Any]) -> float | None:
        """OpenAI caches every long prompt: cleared after 5 to 10 idle minutes, or kept up to a day
        with `prompt_cache_retention: "24h"`. The longer bound: a cache thought cold when it was
        warm costs more than the reverse."""
        return 86400.0 if body.get("prompt_cache_retention") == "24h" else 600.0

    def prepare_stream(self, body: dict[str, Any]) -> bool:
        """Ask upstream for the usage chunk when the client did not; the observer hides it again."""
        options = body.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage") is True:
            return False
        if options is not None and not isinstance(options, dict):
            return False  # malformed: let upstream answer it as it would without the proxy
        body["stream_options"] = {**(options or {}), "include_usage": True}
        return True

    def observer(self, streaming: bool, rewritten: bool) -> UsageObserver:
        if streaming and rewritten:
            return _HiddenUsageObserver(self)
        return super().observer(streaming, rewritten)


def _duration(seconds: float) -> str:
    """OpenAI's reset format: "250ms" under a second, else minutes and seconds ("1m30s", "17s")."""
    if seconds < 1:
        return f"{max(round(seconds * 1000), 1)}ms"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest}s" if minutes else f"{rest}s"


class _HiddenUsageObserver(SSEUsageObserver):
    """Reads the usage chunk the proxy asked for and forwards the stream as if it had not asked.

    Works event by event (an event is at most one chunk's worth of delay), drops the final
    usage-only chunk and strips the `"usage":null` every other chunk carries.
    """

    def feed(self, chunk: bytes) -> bytes:
        if self._decoder.idle and whole_events(chunk) and b"\n\n\n" not in chunk:
            # The usual shape: whole events, each ending in one blank line; no decoding needed.
            return b"".join(self._forward(raw + b"\n\n", None) for raw in chunk.split(b"\n\n")[:-1])
        return b"".join(self._forward(event.raw, event) for event in self._decoder.feed(chunk))

    def _forward(self, raw: bytes, event: SSEEvent | None) -> bytes:
        """The bytes of one event as the client would have had them without include_usage."""
        if b'"usage":null' in raw:
            if self.model is None:
                self.observe_data(event.data if event else event_data(raw))
            stripped = raw.replace(b',"usage":null', b"", 1)
            return stripped if stripped != raw else _NULL_USAGE.sub(b"", raw, count=1)
        if b'"usage"' not in raw:
            return raw
        data = event.data if event else event_data(raw)
        self.observe_data(data)
        compact = data.replace(" ", "")
        if '"choices":[]' in compact and '"usage":null' not in compact:
            return b""  # the usage chunk the client did not ask for
        return _NULL_USAGE.sub(b"", raw, count=1)

    def finish(self) -> bytes:
        return self._decoder.flush()
