"""Anthropic Messages API: URLs, error shape and usage fields."""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from multidict import CIMultiDict

from ..records import Usage

if TYPE_CHECKING:
    from ..config import CompressionConfig
from .anthropic_shape import AnthropicShape
from .base import SUMMARY_MAX_TOKENS, SUMMARY_TEMPERATURE, Provider, UsageObserver, token_field

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}


class Anthropic(Provider):
    name = "anthropic"
    cache_reads_at_breakpoints = True
    shape = AnthropicShape()

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url  # without /v1, like ANTHROPIC_BASE_URL

    def upstream_url(self, path: str, query_string: str) -> str:
        url = self.base_url + path
        return f"{url}?{query_string}" if query_string else url

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        kind = _ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")
        return {"type": "error", "error": {"type": kind, "message": message}}

    def rate_limit_headers(
        self, unit: str, limit: int, remaining: int, resets_at: float, now: float
    ) -> dict[str, str]:
        """anthropic-ratelimit-<unit>-limit / -remaining / -reset, the reset as an RFC 3339 time."""
        return {
            f"anthropic-ratelimit-{unit}-limit": str(limit),
            f"anthropic-ratelimit-{unit}-remaining": str(remaining),
            f"anthropic-ratelimit-{unit}-reset": _rfc3339(resets_at),
        }

    def authorize(self, headers: CIMultiDict[str], api_key: str) -> None:
        headers.popall("authorization", None)
        headers["x-api-key"] = api_key

    def max_output_tokens(self, body: dict[str, Any]) -> int | None:
        return token_field(body, "max_tokens")  # required by the Messages API

    def read_usage(self, payload: dict[str, Any], usage: Usage) -> None:
        _merge(payload.get("usage"), usage)

    # The API version, when the client named none.
    summary_headers: Mapping[str, str] = MappingProxyType({"anthropic-version": "2023-06-01"})

    def summary_model(self, settings: CompressionConfig) -> str:
        return settings.summary_model_anthropic

    def summary_call(self, model: str, system: str, text: str) -> tuple[str, dict[str, Any]]:
        body = {
            "model": model,
            "max_tokens": SUMMARY_MAX_TOKENS,
            "temperature": SUMMARY_TEMPERATURE,
            "system": system,
            "messages": [{"role": "user", "content": text}],
        }
        return "/v1/messages", body

    def answer_text(self, payload: dict[str, Any]) -> str | None:
        content = payload.get("content")
        if not isinstance(content, list):
            return None
        texts = [b["text"] for b in content if isinstance(b, dict) and isinstance(b.get("text"), str)]
        return "".join(texts) or None

    def prompt_cache_seconds(self, body: dict[str, Any]) -> float | None:
        """Claude caches only up to a `cache_control` marker: 5 minutes, or an hour with `"ttl": "1h"`."""
        ttls = [marker.get("ttl") for marker in _cache_markers(body)]
        if not ttls:
            return None
        return 3600.0 if "1h" in ttls else 300.0

    def read_stream_event(self, payload: dict[str, Any], observer: UsageObserver) -> None:
        kind = payload.get("type")
        if kind == "message_start":
            message = payload.get("message")
            if isinstance(message, dict):
                if isinstance(message.get("model"), str):
                    observer.model = message["model"]
                _merge(message.get("usage"), observer.usage)
        elif kind == "message_delta":
            # message_delta usage is cumulative: it replaces, never adds to, what came before.
            _merge(payload.get("usage"), observer.usage)


@functools.lru_cache(maxsize=8)
def _rfc3339(at: float) -> str:
    """A window's end, formatted once per window rather than per response."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


def _cache_markers(value: Any) -> Iterator[dict[str, Any]]:
    """Every `cache_control` object in a request body, at any depth."""
    if isinstance(value, dict):
        marker = value.get("cache_control")
        if isinstance(marker, dict):
            yield marker
        for item in value.values():
            yield from _cache_markers(item)
    elif isinstance(value, list):
        for item in value:
            yield from _cache_markers(item)


_FIELDS = (
    ("input_tokens", "input_tokens"),
    ("output_tokens", "output_tokens"),
    ("cache_read_input_tokens", "cache_read_tokens"),
    ("cache_creation_input_tokens", "cache_write_tokens"),
)


def _billed(raw: Any) -> Any:
    """The usage object with every sampling pass counted: compaction (context_management's
    compact_* edit) runs one more pass, billed like the answer, that the top-level fields leave out
    and `usage.iterations` lists beside the answer's own."""
    iterations = raw.get("iterations") if isinstance(raw, dict) else None
    if not isinstance(iterations, list) or not iterations:
        return raw
    totals = dict(raw)
    for source, _ in _FIELDS:
        counts = [token_field(item, source) for item in iterations]
        if any(count is not None for count in counts):
            totals[source] = sum(count or 0 for count in counts)
    return totals


def _one_hour_writes(raw: Any) -> int | None:
    """Cache writes to the 1-hour cache (`usage.cache_creation`, which splits them by TTL), summed over
    the sampling passes when `usage.iterations` lists them."""
    iterations = raw.get("iterations") if isinstance(raw, dict) else None
    parts = iterations if isinstance(iterations, list) and iterations else [raw]
    counts = [
        token_field(part.get("cache_creation"), "ephemeral_1h_input_tokens")
        for part in parts
        if isinstance(part, dict)
    ]
    return sum(c or 0 for c in counts) if any(c is not None for c in counts) else None


def _merge(raw: Any, usage: Usage) -> None:
    """Copy the fields present in an Anthropic usage object; cache tiers are already apart from input."""
    one_hour = _one_hour_writes(raw)
    if one_hour is not None:
        usage.cache_write_1h_tokens = one_hour
    raw = _billed(raw)
    for source, target in _FIELDS:
        value = token_field(raw, source)
        if value is not None:
            setattr(usage, target, value)
