"""What every provider adapter offers the request path; provider differences live only in adapters."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

from multidict import CIMultiDict

from .. import jsonio
from ..compression.shape import ConversationShape
from ..records import Usage
from ..sse import SSEDecoder, SSEEvent, event_data, whole_events

if TYPE_CHECKING:
    from ..config import CompressionConfig

# Largest non-streamed response body kept in memory to read its usage from; larger ones pass
# through unobserved rather than cost memory.
MAX_OBSERVED_JSON_BYTES = 16 * 1024 * 1024


class UsageObserver(abc.ABC):
    """Watches response bytes as they are forwarded and reads token usage from them."""

    def __init__(self) -> None:
        self.usage = Usage()
        self.model: str | None = None

    @abc.abstractmethod
    def feed(self, chunk: bytes) -> bytes:
        """Observe a chunk; return the bytes to forward (the chunk itself unless the adapter rewrites)."""

    def finish(self) -> bytes:
        """End of stream: bytes still to forward."""
        return b""


class JSONUsageObserver(UsageObserver):
    """A whole JSON body, parsed once it has arrived."""

    def __init__(self, provider: Provider) -> None:
        super().__init__()
        self._provider = provider
        self._body = bytearray()
        self._overflow = False

    def feed(self, chunk: bytes) -> bytes:
        if not self._overflow:
            self._body += chunk
            if len(self._body) > MAX_OBSERVED_JSON_BYTES:
                self._overflow = True
                self._body.clear()
        return chunk

    def finish(self) -> bytes:
        if self._body and not self._overflow:
            try:
                payload = jsonio.loads(self._body)
            except ValueError:
                return b""
            if isinstance(payload, dict):
                self.model = payload.get("model") if isinstance(payload.get("model"), str) else None
                self._provider.read_usage(payload, self.usage)
        return b""


class SSEUsageObserver(UsageObserver):
    """An event stream: forwarded chunk by chunk, events parsed on the side."""

    def __init__(self, provider: Provider) -> None:
        super().__init__()
        self._provider = provider
        self._decoder = SSEDecoder()

    def feed(self, chunk: bytes) -> bytes:
        if self._decoder.idle and whole_events(chunk):
            # The usual shape: whole events. Only those that can carry usage (or a model not yet
            # seen) are parsed; most of a stream is text deltas and is never decoded.
            for raw in chunk.split(b"\n\n"):
                if b'"usage"' in raw or (self.model is None and b'"model"' in raw):
                    self.observe_data(event_data(raw))
            return chunk
        for event in self._decoder.feed(chunk):
            self.observe(event)
        return chunk

    def observe(self, event: SSEEvent) -> None:
        self.observe_data(event.data)

    def observe_data(self, data: str) -> None:
        """One event's data. Only events that can carry usage are parsed: most of a stream is text
        deltas."""
        if '"usage"' not in data and '"model"' not in data:
            return
        try:
            payload = jsonio.loads(data)
        except ValueError:
            return
        if isinstance(payload, dict):
            self._provider.read_stream_event(payload, self)


class Provider(abc.ABC):
    """One upstream API family."""

    name: Literal["anthropic", "openai"]
    # Whether the prompt cache is read only up to breakpoints earlier requests wrote (Claude's
    # cache_control) rather than up to wherever a prefix stops matching (OpenAI's).
    cache_reads_at_breakpoints: bool = False
    base_url: str
    # How compression reads, checks and rewrites this API's messages.
    shape: ConversationShape

    @abc.abstractmethod
    def upstream_url(self, path: str, query_string: str) -> str:
        """The upstream URL for a request the client sent to `path`."""

    @abc.abstractmethod
    def error_body(self, status: int, message: str) -> dict[str, Any]:
        """An error in this provider's own JSON shape, so SDKs raise their usual exceptions."""

    def quota_error_body(self, message: str) -> dict[str, Any]:
        """A spent budget: a 429 the SDK must not retry (the response says x-should-retry: false)."""
        return self.error_body(429, message)

    @abc.abstractmethod
    def rate_limit_headers(
        self, unit: str, limit: int, remaining: int, resets_at: float, now: float
    ) -> dict[str, str]:
        """This provider's own rate-limit headers for one limit (unit "requests" or "tokens")."""

    @abc.abstractmethod
    def authorize(self, headers: CIMultiDict[str], api_key: str) -> None:
        """Put the real provider key in outgoing headers, in place of whatever the client sent."""

    @abc.abstractmethod
    def max_output_tokens(self, body: dict[str, Any]) -> int | None:
        """The most output tokens the request allows, or None when it sets no bound."""

    @abc.abstractmethod
    def read_usage(self, payload: dict[str, Any], usage: Usage) -> None:
        """Fill `usage` from a non-streamed response body."""

    @abc.abstractmethod
    def read_stream_event(self, payload: dict[str, Any], observer: UsageObserver) -> None:
        """Update the observer from one parsed streaming event."""

    def prepare_stream(self, body: dict[str, Any]) -> bool:
        """Adjust a streaming request body before forwarding; True if it was changed."""
        return False

    @abc.abstractmethod
    def summary_call(self, model: str, system: str, text: str) -> tuple[str, dict[str, Any]]:
        """The path and body of the proxy's own summary request (compression/summaries.py)."""

    # Headers a summary request needs when the client's request did not carry them.
    summary_headers: Mapping[str, str] = MappingProxyType({})

    @abc.abstractmethod
    def summary_model(self, settings: CompressionConfig) -> str:
        """The model that writes this provider's chunk summaries ([compression] summary_model_*)."""

    @abc.abstractmethod
    def answer_text(self, payload: dict[str, Any]) -> str | None:
        """The text of a non-streamed answer, None when it has none."""

    @abc.abstractmethod
    def prompt_cache_seconds(self, body: dict[str, Any]) -> float | None:
        """How long the provider keeps this request's prompt prefix cached; None if it caches nothing."""

    def observer(self, streaming: bool, rewritten: bool) -> UsageObserver:
        """How to watch the response of a request (SSE or JSON)."""
        return SSEUsageObserver(self) if streaming else JSONUsageObserver(self)

    @staticmethod
    def messages(body: dict[str, Any]) -> list[Any]:
        messages = body.get("messages")
        return messages if isinstance(messages, list) else []

    def conversation_start(self, body: dict[str, Any]) -> Any:
        """The stable beginning of a conversation (system prompt and first user message)."""
        first_user = next(
            (
                m.get("content")
                for m in self.messages(body)
                if isinstance(m, dict) and m.get("role") == "user"
            ),
            None,
        )
        return {"system": body.get("system"), "first_user": first_user}


# A summary call's answer is capped at this (as vidurai's own LLMClient caps it), at its sampling
# temperature: a chunk of 20 messages in 3-5 sentences.
SUMMARY_MAX_TOKENS = 500
SUMMARY_TEMPERATURE = 0.3


def token_field(container: Any, key: str) -> int | None:
    """A non-negative integer usage field, or None when absent or malformed."""
    if not isinstance(container, dict):
        return None
    value = container.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value
