"""One proxied call's timings and record, from arrival to the metrics row."""

from __future__ import annotations

import os
import time

import attrs
from aiohttp import web

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
    # Raw (uncalibrated) estimates; calibrated when the row is written.
    original_est: int | None = None
    forwarded_est: int | None = None

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

    def estimated_saving(self, calibration: Calibration) -> int:
        if self.original_est is None or self.forwarded_est is None:
            return 0
        saved = calibration.adjust(self.record.model, self.original_est - self.forwarded_est)
        return max(saved or 0, 0)

    def stats_header(self, calibration: Calibration) -> str:
        """X-Vidurai-Stats: what the proxy did to this request, readable without the database."""
        now = time.monotonic()
        overhead = (self.sent_at or now) - self.started + (now - (self.headers_at or now))
        parts = [f"tokens_saved={self.estimated_saving(calibration)}", f"overhead_ms={overhead * 1000:.2f}"]
        if self.original_est is not None and self.forwarded_est is not None:
            parts += [
                f"tokens_original_est={calibration.adjust(self.record.model, self.original_est)}",
                f"tokens_forwarded_est={calibration.adjust(self.record.model, self.forwarded_est)}",
            ]
        return "; ".join(parts)

    def settle_usage(self, usage: Usage, calibration: Calibration) -> None:
        """Fill the token columns, scaling estimates by what upstream actually reported when it did."""
        record = self.record
        record.usage = usage
        reported = usage.prompt_tokens if usage.reported else 0
        if self.original_est is None or self.forwarded_est is None:
            if record.messages_original is not None and reported > 0:
                # A conversation too short to fold went out as sent: what it cost is what it was.
                record.tokens_original_est = record.tokens_forwarded_est = reported
                record.tokens_saved = 0
            return
        if reported > 0 and self.forwarded_est > 0:
            calibration.observe(record.model, self.forwarded_est, reported)
            scale = reported / self.forwarded_est
            record.tokens_forwarded_est = reported
            record.tokens_original_est = round(self.original_est * scale)
        else:
            record.tokens_forwarded_est = calibration.adjust(record.model, self.forwarded_est)
            record.tokens_original_est = calibration.adjust(record.model, self.original_est)
        record.tokens_saved = max((record.tokens_original_est or 0) - (record.tokens_forwarded_est or 0), 0)

    def close(self) -> RequestRecord:
        now = time.monotonic()
        record = self.record
        record.duration_ms = round((now - self.started) * 1000, 3)
        if self.first_byte_at is not None:
            record.ttfb_ms = round((self.first_byte_at - self.started) * 1000, 3)
        record.overhead_ms = self.overhead_ms()
        return record
