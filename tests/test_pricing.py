"""Prices: longest-prefix match, dated ids, cache tiers, unknown models, [pricing] overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from proxy.config import Price, load_config
from proxy.pricing import BUILTIN_PRICES, PriceTable
from proxy.records import Usage


@pytest.fixture
def table() -> PriceTable:
    return PriceTable()


@pytest.mark.parametrize(
    ("model", "entry"),
    [
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-sonnet-4-5", "claude-sonnet-4-5"),
        ("claude-sonnet-4-20250514", "claude-sonnet-4"),
        ("claude-sonnet-4-5@20250929", "claude-sonnet-4-5"),
        ("claude-opus-4-20250514", "claude-opus-4"),
        ("claude-opus-4-0", "claude-opus-4"),
        ("claude-opus-4-1-20250805", "claude-opus-4-1"),
        ("claude-opus-4-5-20251101", "claude-opus-4-5"),
        ("claude-haiku-4-5-20251001", "claude-haiku-4-5"),
        ("claude-3-5-haiku-latest", "claude-3-5-haiku"),
        ("claude-3-7-sonnet-20250219", "claude-3-7-sonnet"),
        ("claude-3-haiku-20240307", "claude-3-haiku"),
        ("claude-sonnet-5", "claude-sonnet-5"),
        ("claude-sonnet-5-5", "claude-sonnet-5-5"),
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-2024-05-13", "gpt-4o-2024-05-13"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("gpt-4.1-mini-2025-04-14", "gpt-4.1-mini"),
        ("gpt-5-2025-08-07", "gpt-5"),
        ("gpt-5-mini", "gpt-5-mini"),
        ("gpt-5.1-codex-mini", "gpt-5.1-codex-mini"),
        ("o3-2025-04-16", "o3"),
        ("o4-mini-2025-04-16", "o4-mini"),
        ("o1", "o1"),
        ("GPT-4o", "gpt-4o"),
    ],
)
def test_model_ids_resolve_to_the_longest_matching_prefix(table: PriceTable, model: str, entry: str) -> None:
    assert table.price(model) == BUILTIN_PRICES[entry]


@pytest.mark.parametrize("model", ["gpt-4", "gpt-4o1", "gpt-5.7", "claude-3", "llama-3-70b", "o5"])
def test_a_prefix_does_not_reach_a_different_model(table: PriceTable, model: str) -> None:
    assert table.price(model) is None


def test_anthropic_cost_bills_every_tier_at_its_rate(table: PriceTable) -> None:
    # Anthropic reports cache reads and writes apart from input_tokens.
    usage = Usage(input_tokens=1000, output_tokens=500, cache_read_tokens=10_000, cache_write_tokens=2000)
    expected = (1000 * 3.00 + 500 * 15.00 + 2000 * 3.75 + 10_000 * 0.30) / 1e6
    assert table.cost("claude-sonnet-4-5-20250929", usage) == pytest.approx(expected)
    assert expected == pytest.approx(0.021)


def test_anthropic_one_hour_cache_writes_cost_twice_the_input_price(table: PriceTable) -> None:
    # 2000 cache writes, 1500 of them to the 1-hour cache ($6/M on Sonnet 4.5, the 5-minute $3.75/M).
    usage = Usage(input_tokens=1000, output_tokens=500, cache_write_tokens=2000, cache_write_1h_tokens=1500)
    expected = (1000 * 3.00 + 500 * 15.00 + 500 * 3.75 + 1500 * 6.00) / 1e6
    assert table.cost("claude-sonnet-4-5", usage) == pytest.approx(expected)


def test_openai_cached_tokens_are_billed_at_the_cached_rate(table: PriceTable) -> None:
    # prompt_tokens=1000 of which cached_tokens=400, normalised into Usage by the adapter.
    usage = Usage(input_tokens=600, output_tokens=100, cache_read_tokens=400)
    assert usage.prompt_tokens == 1000
    assert table.cost("gpt-4o-2024-08-06", usage) == pytest.approx(
        (600 * 2.50 + 400 * 1.25 + 100 * 10.00) / 1e6
    )
    assert table.cost("gpt-5", usage) == pytest.approx((600 * 1.25 + 400 * 0.125 + 100 * 10) / 1e6)


def test_unknown_model_costs_none_with_one_warning(table: PriceTable) -> None:
    with capture_logs() as logs:
        for _ in range(3):
            assert table.cost("mystery-model-9", Usage(100, 10)) is None
            assert table.saved_cost("mystery-model-9", 1000) is None
        assert table.cost("another-mystery", Usage(1, 1)) is None
    warnings = [(e["event"], e["model"], e["log_level"]) for e in logs]
    assert warnings == [
        ("pricing.unknown_model", "mystery-model-9", "warning"),
        ("pricing.unknown_model", "another-mystery", "warning"),
    ]


def test_no_model_or_no_usage_costs_none(table: PriceTable) -> None:
    assert table.cost(None, Usage(10, 10)) is None
    assert table.cost("gpt-4o", Usage()) is None
    assert table.cost("gpt-4o", Usage(input_tokens=0, output_tokens=0)) == 0.0


def test_saved_cost_is_saved_tokens_at_the_input_price(table: PriceTable) -> None:
    assert table.saved_cost("claude-opus-4-1", 100_000) == pytest.approx(1.50)
    assert table.saved_cost("claude-haiku-4-5", 0) == 0.0
    assert table.saved_cost("claude-haiku-4-5", None) is None
    # It equals "what the uncompressed request would have cost" minus "what it cost".
    usage = Usage(input_tokens=2000, output_tokens=300, cache_read_tokens=5000)
    uncompressed = Usage(input_tokens=2000 + 7000, output_tokens=300, cache_read_tokens=5000)
    difference = table.cost("gpt-4.1", uncompressed) - table.cost("gpt-4.1", usage)  # type: ignore[operator]
    assert table.saved_cost("gpt-4.1", 7000) == pytest.approx(difference)


def test_pricing_section_overrides_and_extends_the_built_ins(tmp_path: Path) -> None:
    ini = tmp_path / "vidurai.ini"
    ini.write_text(
        "[pricing]\n"
        "gpt-4o = 2.0, 8.0, 2.0, 1.0\n"
        "my-local-llama = 0.1, 0.2, 0.1, 0.05\n"
        "claude-sonnet-4-5-2025 = 1, 1, 1, 1\n"
    )
    config = load_config(ini, env={})
    table = PriceTable(config.pricing)
    assert table.price("gpt-4o-2024-11-20") == Price(2.0, 8.0, 2.0, 1.0)
    assert table.price("gpt-4o-mini") == BUILTIN_PRICES["gpt-4o-mini"]  # longer built-in still wins
    assert table.price("my-local-llama-3") == Price(0.1, 0.2, 0.1, 0.05)
    assert table.price("claude-sonnet-4-5-20250929") == Price(1, 1, 1, 1)
    assert table.price("claude-sonnet-4-5") == BUILTIN_PRICES["claude-sonnet-4-5"]
    assert table.cost("my-local-llama", Usage(1_000_000, 1_000_000)) == pytest.approx(0.3)


def test_every_built_in_price_is_sane() -> None:
    for prefix, price in BUILTIN_PRICES.items():
        assert prefix == prefix.lower()
        assert 0 < price.cache_read <= price.input <= price.cache_write <= price.output, prefix
