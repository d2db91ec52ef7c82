"""The records the request path hands to the single SQLite writer."""

from __future__ import annotations

from typing import Any

import attrs


@attrs.define
class Usage:
    """Token usage as upstream reported it, normalised so that each tier is counted once.

    `input_tokens` excludes cache reads and writes for both providers (OpenAI's `cached_tokens`
    are subtracted from `prompt_tokens`), so cost = input*p_in + cache_read*p_read + ...
    """

    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    # Of cache_write_tokens, those written to Anthropic's 1-hour cache (`ttl: "1h"`), billed higher.
    cache_write_1h_tokens: int | None = None

    @property
    def reported(self) -> bool:
        return self.input_tokens is not None or self.output_tokens is not None

    @property
    def prompt_tokens(self) -> int:
        """Every input token the provider processed, whatever its cache tier."""
        return (self.input_tokens or 0) + (self.cache_read_tokens or 0) + (self.cache_write_tokens or 0)


@attrs.define
class RequestRecord:
    """One row of the `requests` table: one proxied call."""

    id: str
    created_at: float  # unix seconds
    provider: str  # "anthropic" | "openai"
    # "messages" | "count_tokens" | "chat_completions" | "passthrough", or "summary": the proxy's own call
    endpoint: str
    method: str
    path: str
    session_id: str | None = None
    tenant: str | None = None
    model: str | None = None
    stream: bool = False
    status: int | None = None
    duration_ms: float | None = None
    ttfb_ms: float | None = None
    overhead_ms: float | None = None
    usage: Usage = attrs.Factory(Usage)
    tokens_original_est: int | None = None
    tokens_forwarded_est: int | None = None
    tokens_saved: int | None = None
    messages_original: int | None = None
    messages_forwarded: int | None = None
    cost_usd: float | None = None
    cost_saved_usd: float | None = None
    error: str | None = None
    tags: dict[str, str] | None = None  # X-Vidurai-Tags, parsed


@attrs.define
class SessionRecord:
    """The identity and liveness of one row of `sessions`; running totals are kept by the writer."""

    id: str
    tenant: str
    created_at: float
    last_seen_at: float
    messages: int = 0  # messages in the conversation's latest request
    expired_at: float | None = None
    label: str | None = None  # X-Vidurai-Session as the client sent it


@attrs.frozen
class MemoryRow:
    """One row of `memories`: a turn or a folded digest the compressor keeps for a session."""

    session_id: str
    position: int  # index of the (first) message in the conversation
    role: str
    kind: str  # "turn" | "digest"
    importance: float
    content: str
    content_sha: str  # sha256 hex of content, so re-sent turns are stored once
    created_at: float


@attrs.frozen
class MemoryRows:
    """One request's memory rows, queued as one entry: a request with 150,000 new turns must not
    fill the writer's queue and push other tenants' rows out of it."""

    rows: tuple[MemoryRow, ...]


@attrs.frozen
class SnapshotRecord:
    """One row of `snapshots`: a session's serialized compression memory (its folded chunks)."""

    session_id: str
    state: str
    created_at: float


@attrs.frozen
class AuditRecord:
    """One row of `audit`: something the proxy decided about a session; detail becomes JSON."""

    session_id: str | None
    event: str
    detail: dict[str, Any]
    created_at: float
