"""One proxied call's timings and record, from arrival to the metrics row."""

from __future__ import annotations

import os
import time

import attrs
from aiohttp import web

from .limits.limiter import Admission
from .records import RequestRecord, Usage
from .sessions import tenant_of
from .tokens import Calibration


@attrs.define
class Call:
    record: RequestRecord
    tenant: str  # hashed API key, computed once per request
    started: float  # monotonic seconds
    sent_at: float | None = None  # request handed to upstream
    headers_at: float | None = None  # upstream answered with headers
    prepared_at: float | None = None  # our headers went to the client
    first_byte_at: float | None = None
    # The raw (uncalibrated) forwarded estimate: what upstream's reported prompt tokens calibrate.
    forwarded_raw: int | None = None
    max_tokens: int | None = None  # the request's bound on output, for a budget's reservation
    # Set by the limits' admission (proxy/limits/gate.py): the counters taken, the headers that
    # report them, and for a virtual key the real provider key sent upstream in its place.
    admission: Admission | None = None
    limit_headers: dict[str, str] | None = None
    upstream_key: str | None = attrs.field(default=None, repr=False)  # never in a log line

    @classmethod
    def begin(cls, request: web.Request, provider: str, endpoint: str) -> Call:
        tenant = tenant_of(request.headers)
        record = RequestRecord(
            id=os.urandom(16).hex(),
            created_at=time.time(),
            provider=provider,
            endpoint=endpoint,
            method=request.method,
            path=request.path,
            tenant=tenant,
        )
        return cls(record=record, tenant=tenant, started=time.monotonic())

    def overhead_ms(self) -> float | None:
        """Time spent in the proxy itself: before the upstream call, and turning its answer around."""
        if self.sent_at is None:
            return None
        overhead = self.sent_at - self.started
        if self.headers_at is not None and self.prepared_at is not None:
            overhead += self.prepared_at - self.headers_at
        return round(overhead * 1000, 3)

    def set_estimates(self, original: int, forwarded: int, calibration: Calibration) -> None:
        """The request's one pair of token estimates, calibrated to the model once, before it is sent:
        the same figures in X-Vidurai-Stats, the `requests` row, the audit row and the dashboard."""
        record = self.record
        self.forwarded_raw = forwarded
        record.tokens_original_est = calibration.adjust(record.model, original)
        record.tokens_forwarded_est = calibration.adjust(record.model, forwarded)
        record.tokens_saved = max((record.tokens_original_est or 0) - (record.tokens_forwarded_est or 0), 0)

    def stats_header(self) -> str:
        """X-Vidurai-Stats: what the proxy did to this request, readable without the database."""
        now = time.monotonic()
        overhead = (self.sent_at or now) - self.started + (now - (self.headers_at or now))
        record = self.record
        parts = [f"tokens_saved={record.tokens_saved or 0}", f"overhead_ms={overhead * 1000:.2f}"]
        if record.tokens_original_est is not None and record.tokens_forwarded_est is not None:
            parts += [
                f"tokens_original_est={record.tokens_original_est}",
                f"tokens_forwarded_est={record.tokens_forwarded_est}",
            ]
        return "; ".join(parts)

    def settle_usage(self, usage: Usage, calibration: Calibration) -> None:
        """Record upstream's usage, and let its prompt tokens calibrate the next requests' estimates."""
        self.record.usage = usage
        if usage.reported and usage.prompt_tokens > 0:
            calibration.observe(self.record.model, self.forwarded_raw, usage.prompt_tokens)

    def close(self) -> RequestRecord:
        now = time.monotonic()
        record = self.record
        record.duration_ms = round((now - self.started) * 1000, 3)
        if self.first_byte_at is not None:
            record.ttfb_ms = round((self.first_byte_at - self.started) * 1000, 3)
        record.overhead_ms = self.overhead_ms()
        return record
