"""Prometheus metrics: the expected series, per-app registries, bounded model labels."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from proxy.prom import MAX_MODELS, PromMetrics, status_class
from proxy.records import RequestRecord, Usage


def record(rid: str, **fields: object) -> RequestRecord:
    base: dict[str, object] = {
        "provider": "anthropic",
        "endpoint": "messages",
        "model": "claude-sonnet-4-5",
        "status": 200,
        "duration_ms": 1500.0,
        "ttfb_ms": 400.0,
        "overhead_ms": 1.2,
        "usage": Usage(input_tokens=1000, output_tokens=200, cache_read_tokens=5000, cache_write_tokens=300),
        "tokens_saved": 4000,
        "cost_usd": 0.0123,
        "cost_saved_usd": 0.012,
    }
    base.update(fields)
    return RequestRecord(id=rid, created_at=0.0, method="POST", path="/v1/messages", **base)  # type: ignore[arg-type]


def samples(metrics: PromMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, _ = metrics.render()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def test_render_contains_the_expected_series() -> None:
    metrics = PromMetrics()
    metrics.observe(record("r1"))
    metrics.observe(
        record(
            "r2", status=529, usage=Usage(), tokens_saved=0, cost_usd=None, cost_saved_usd=None, ttfb_ms=None
        )
    )
    metrics.observe(
        record(
            "r3",
            provider="openai",
            endpoint="chat_completions",
            model="gpt-4o",
            usage=Usage(10, 5),
            tokens_saved=None,
            cost_usd=0.0001,
        )
    )
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain; version=0.0.4")
    text = body.decode()
    for name in (
        "vidurai_requests_total",
        "vidurai_tokens_total",
        "vidurai_cost_usd_total",
        "vidurai_cost_saved_usd_total",
        "vidurai_request_duration_seconds_bucket",
        "vidurai_ttfb_seconds_bucket",
        "vidurai_proxy_overhead_seconds_bucket",
    ):
        assert name in text

    got = samples(metrics)
    anthropic = (("endpoint", "messages"), ("model", "claude-sonnet-4-5"), ("provider", "anthropic"))
    assert got[("vidurai_requests_total", (*anthropic, ("status_class", "2xx")))] == 1
    assert got[("vidurai_requests_total", (*anthropic, ("status_class", "5xx")))] == 1
    tokens = {
        kind: got[
            (
                "vidurai_tokens_total",
                (("kind", kind), ("model", "claude-sonnet-4-5"), ("provider", "anthropic")),
            )
        ]
        for kind in ("input", "output", "cache_read", "cache_write", "saved")
    }
    assert tokens == {"input": 1000, "output": 200, "cache_read": 5000, "cache_write": 300, "saved": 4000}
    assert (
        got[("vidurai_cost_usd_total", (("model", "claude-sonnet-4-5"), ("provider", "anthropic")))] == 0.0123
    )
    assert got[("vidurai_cost_usd_total", (("model", "gpt-4o"), ("provider", "openai")))] == 0.0001

    by_endpoint = (("endpoint", "messages"), ("provider", "anthropic"))
    assert got[("vidurai_request_duration_seconds_count", by_endpoint)] == 2
    assert got[("vidurai_request_duration_seconds_sum", by_endpoint)] == 3.0
    assert got[("vidurai_ttfb_seconds_count", by_endpoint)] == 1  # r2 had no first byte time
    bucket = "vidurai_proxy_overhead_seconds_bucket"
    assert got[(bucket, tuple(sorted((*by_endpoint, ("le", "0.0025")))))] == 2
    assert got[(bucket, tuple(sorted((*by_endpoint, ("le", "0.001")))))] == 0


def test_each_app_has_its_own_registry() -> None:
    first, second = PromMetrics(), PromMetrics()
    first.observe(record("r1"))
    assert "vidurai_requests_total{" in first.render()[0].decode()
    assert "vidurai_requests_total{" not in second.render()[0].decode()


def test_model_labels_are_bounded() -> None:
    metrics = PromMetrics()
    for i in range(MAX_MODELS + 5):
        metrics.observe(record(f"r{i}", model=f"model-{i}"))
    metrics.observe(record("again", model="model-0"))
    metrics.observe(record("none", model=None))
    models = {
        dict(labels).get("model") for name, labels in samples(metrics) if name == "vidurai_requests_total"
    }
    assert len(models) == MAX_MODELS + 2
    assert {"other", "unknown", "model-0"} <= models


def test_status_class() -> None:
    assert [status_class(s) for s in (200, 404, 529, None)] == ["2xx", "4xx", "5xx", "none"]
