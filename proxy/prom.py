"""Prometheus metrics for GET /metrics, in a registry of the app's own (not the process-global one)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import attrs
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.registry import Collector

from proxy.cluster import ClusterHealth
from proxy.records import RequestRecord
from proxy.storage import StorageHealth

# Model names come from clients; past this many distinct ones the rest share the label "other"
# so that a misbehaving client cannot blow up the series count.
MAX_MODELS = 100

# LLM calls run from a fraction of a second to minutes; the proxy's own overhead should be
# around a millisecond, hence its finer buckets.
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
TTFB_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
OVERHEAD_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


TOKEN_KINDS = ("input", "output", "cache_read", "cache_write", "saved")


@attrs.frozen
class _Series:
    requests: Any
    tokens: dict[str, Any]
    cost: Any
    cost_saved: Any
    duration: Any
    ttfb: Any
    overhead: Any


def status_class(status: int | None) -> str:
    """The label "2xx", "4xx"...; "none" when no status was sent (the client went away)."""
    return f"{status // 100}xx" if status is not None else "none"


class PromMetrics:
    """The proxy's counters and histograms, fed one RequestRecord per proxied call."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._models: set[str] = set()
        # Bounded: models are capped at MAX_MODELS, providers, endpoints and status classes are few.
        self._children: dict[tuple[str, str, str, str], _Series] = {}
        self.requests = Counter(
            "vidurai_requests",
            "Proxied requests.",
            ["provider", "endpoint", "model", "status_class"],
            registry=self.registry,
        )
        self.tokens = Counter(
            "vidurai_tokens",
            "Tokens by kind: input/output/cache_read/cache_write as upstream reported them, "
            "saved as estimated removed by compression.",
            ["provider", "model", "kind"],
            registry=self.registry,
        )
        self.cost = Counter(
            "vidurai_cost_usd",
            "US dollars spent on priced requests.",
            ["provider", "model"],
            registry=self.registry,
        )
        self.cost_saved = Counter(
            "vidurai_cost_saved_usd",
            "US dollars saved by compression, at the input list price.",
            ["provider", "model"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "vidurai_request_duration_seconds",
            "Time from request received to response finished.",
            ["provider", "endpoint"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.ttfb = Histogram(
            "vidurai_ttfb_seconds",
            "Time from request received to the first response byte sent.",
            ["provider", "endpoint"],
            buckets=TTFB_BUCKETS,
            registry=self.registry,
        )
        self.overhead = Histogram(
            "vidurai_proxy_overhead_seconds",
            "Time the proxy itself added to a request.",
            ["provider", "endpoint"],
            buckets=OVERHEAD_BUCKETS,
            registry=self.registry,
        )

        self.limit_rejections = Counter(
            "vidurai_limit_rejections",
            "Requests refused by a limit ([limits] or a virtual key's), by the limit's name.",
            ["limit"],
            registry=self.registry,
        )
        self.limit_store_failures = Counter(
            "vidurai_limit_store_failures",
            "Admissions or settlements that could not reach the limits' counter store (Redis).",
            registry=self.registry,
        )

    def _model_label(self, model: str | None) -> str:
        if not model:
            return "unknown"
        if model in self._models:
            return model
        if len(self._models) >= MAX_MODELS:
            return "other"
        self._models.add(model)
        return model

    def _series(self, provider: str, endpoint: str, model: str, status: str) -> _Series:
        """The labelled children for one kind of request, looked up once instead of per request."""
        key = (provider, endpoint, model, status)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = self._new_series(provider, endpoint, model, status)
        return found

    def _new_series(self, provider: str, endpoint: str, model: str, status: str) -> _Series:
        return _Series(
            requests=self.requests.labels(provider, endpoint, model, status),
            tokens={kind: self.tokens.labels(provider, model, kind) for kind in TOKEN_KINDS},
            cost=self.cost.labels(provider, model),
            cost_saved=self.cost_saved.labels(provider, model),
            duration=self.duration.labels(provider, endpoint),
            ttfb=self.ttfb.labels(provider, endpoint),
            overhead=self.overhead.labels(provider, endpoint),
        )

    def observe(self, record: RequestRecord) -> None:
        """Count one proxied call."""
        series = self._series(
            record.provider, record.endpoint, self._model_label(record.model), status_class(record.status)
        )
        series.requests.inc()
        usage = record.usage
        for kind, value in zip(
            TOKEN_KINDS,
            (
                usage.input_tokens,
                usage.output_tokens,
                usage.cache_read_tokens,
                usage.cache_write_tokens,
                record.tokens_saved,
            ),
            strict=True,
        ):
            # Counters only go up; a negative "saved" (compression that grew a request) is
            # visible in SQLite but cannot be counted here.
            if value is not None and value > 0:
                series.tokens[kind].inc(value)
        if record.cost_usd is not None and record.cost_usd > 0:
            series.cost.inc(record.cost_usd)
        if record.cost_saved_usd and record.cost_saved_usd > 0:
            series.cost_saved.inc(record.cost_saved_usd)
        for histogram, ms in (
            (series.duration, record.duration_ms),
            (series.ttfb, record.ttfb_ms),
            (series.overhead, record.overhead_ms),
        ):
            if ms is not None:
                histogram.observe(ms / 1000)

    def watch_storage(self, health: Callable[[], StorageHealth]) -> None:
        """Report the writer's queue and failures, read at each scrape."""
        self.registry.register(_StorageCollector(health))

    def watch_cluster(self, health: Callable[[], ClusterHealth]) -> None:
        """Report whether Redis answers, read at each scrape (nothing when no Redis is configured)."""
        self.registry.register(_ClusterCollector(health))

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its Content-Type header value."""
        return generate_latest(self.registry), CONTENT_TYPE_PLAIN_0_0_4


class _StorageCollector(Collector):
    """The writer's state as gauges and counters; read from the writer when scraped, never stored twice."""

    def __init__(self, health: Callable[[], StorageHealth]) -> None:
        self._health = health

    def describe(self) -> list[Metric]:
        return []  # only collected at scrape time: the writer may not exist yet at registration

    def collect(self) -> Iterator[Metric]:
        health = self._health()
        yield GaugeMetricFamily(
            "vidurai_storage_writable",
            "1 while the database accepts writes, 0 during an incident.",
            value=int(health.writable),
        )
        yield GaugeMetricFamily(
            "vidurai_storage_queued_rows", "Rows waiting for the writer.", value=health.queued
        )
        for name, help_text, value in (
            ("vidurai_storage_written_rows", "Rows committed to the database.", health.written),
            ("vidurai_storage_rejected_rows", "Rows the database refused for their values.", health.rejected),
            (
                "vidurai_storage_dropped_rows",
                "Rows lost while the database could not be written (queue limit or stop).",
                health.dropped,
            ),
            (
                "vidurai_storage_loop_yielded_seconds",
                "Event-loop time given to a writer that fell behind.",
                health.loop_yielded_s,
            ),
        ):
            yield CounterMetricFamily(name, help_text, value=value)


class _ClusterCollector(Collector):
    """Redis's state as a gauge and two counters, read from the Cluster object when scraped."""

    def __init__(self, health: Callable[[], ClusterHealth]) -> None:
        self._health = health

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        health = self._health()
        if not health.redis:
            return
        yield GaugeMetricFamily(
            "vidurai_redis_up",
            "1 while Redis answers, 0 while this instance serves on its own state.",
            value=int(health.connected),
        )
        yield CounterMetricFamily(
            "vidurai_redis_fallback_calls",
            "Redis calls answered from this instance's own state because Redis failed or was down.",
            value=health.failed_calls,
        )
        yield CounterMetricFamily(
            "vidurai_redis_incidents", "Times Redis stopped answering.", value=health.incidents
        )
