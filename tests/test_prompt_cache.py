"""When the provider likely still caches a conversation, and what recall may cost then."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from proxy.compression.compressor import recall_budget
from proxy.compression.policy import UNCACHED, CachePrices
from proxy.pricing import PriceTable
from proxy.prompt_cache import UNKNOWN_READ_RATIO, UNKNOWN_WRITE_RATIO, prompt_cache
from proxy.providers.anthropic import Anthropic
from proxy.providers.openai import OpenAI
from tests.compression_support import SETTINGS

NOW = 1_000_000.0
PRICES = PriceTable()
CLAUDE = Anthropic("http://127.0.0.1:9")
GPT = OpenAI("http://127.0.0.1:9")


def warm(provider: Any, body: dict[str, Any], previous: float | None, now: float, table: PriceTable) -> Any:
    """The warm half of prompt_cache(): the cache-read ratio while the provider still holds the prefix."""
    return prompt_cache(provider, body, previous, now, table)[1]


def claude_body(marker: dict[str, Any] | None) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "text", "text": "Hello"}
    if marker is not None:
        block["cache_control"] = marker
    return {"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": [block]}]}


@pytest.mark.parametrize(
    ("marker", "idle", "expected"),
    [
        (None, 10, None),  # no cache_control: Claude caches nothing
        ({"type": "ephemeral"}, 10, 0.1),  # $0.30 read vs $3 input
        ({"type": "ephemeral"}, 299, 0.1),
        ({"type": "ephemeral"}, 301, None),  # the 5-minute cache has lapsed
        ({"type": "ephemeral", "ttl": "1h"}, 301, 0.1),
        ({"type": "ephemeral", "ttl": "1h"}, 3601, None),
    ],
)
def test_claude_caches_only_behind_a_marker_for_its_lifetime(
    marker: dict[str, Any] | None, idle: float, expected: float | None
) -> None:
    ratio = warm(CLAUDE, claude_body(marker), NOW - idle, NOW, PRICES)
    assert ratio == (pytest.approx(expected) if expected is not None else None)


def test_a_marker_on_the_system_prompt_or_tools_counts_too() -> None:
    body = {"model": "claude-sonnet-4-5", "system": [{"type": "text", "text": "x", "cache_control": {}}]}
    assert warm(CLAUDE, body, NOW - 10, NOW, PRICES) == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("extra", "idle", "expected"),
    [
        ({}, 10, 0.5),  # gpt-4o: cached input at half price, automatic
        ({}, 599, 0.5),
        ({}, 601, None),
        ({"prompt_cache_retention": "24h"}, 601, 0.5),
        ({"model": "gpt-5"}, 10, 0.1),
    ],
)
def test_openai_caches_every_long_prompt(extra: dict[str, Any], idle: float, expected: float | None) -> None:
    body = {"model": "gpt-4o", "messages": [], **extra}
    ratio = warm(GPT, body, NOW - idle, NOW, PRICES)
    assert ratio == (pytest.approx(expected) if expected is not None else None)


def test_first_request_and_unknown_models() -> None:
    assert warm(GPT, {"model": "gpt-4o"}, None, NOW, PRICES) is None  # nothing cached yet
    assert warm(GPT, {"model": "acme-9"}, NOW - 1, NOW, PRICES) == UNKNOWN_READ_RATIO
    assert warm(GPT, {"model": ["not", "a", "name"]}, NOW - 1, NOW, PRICES) == UNKNOWN_READ_RATIO


def test_recall_budget_is_held_to_the_cache_reads_it_replaces() -> None:
    settings = attrs.evolve(SETTINGS, recall_budget_tokens=6000, recall_share=0.3)
    assert recall_budget(settings, 10_000, None) == 3000  # cold: a share of what was folded
    assert recall_budget(settings, 100_000, None) == 6000  # and never past the budget
    assert recall_budget(settings, 10_000, 0.1) == 500  # warm: half of what the reads would have cost
    assert recall_budget(settings, 10_000, 0.5) == 2500
    assert recall_budget(settings, 10_000, 1.0) == 3000  # an undiscounted cache doesn't raise it
    assert recall_budget(attrs.evolve(settings, cache_aware_recall=False), 10_000, 0.1) == 3000


def test_cache_prices_decide_what_a_fold_costs() -> None:
    marked = claude_body({"type": "ephemeral"})
    # Claude: reads 0.1 and writes 1.25 of input, read only up to a breakpoint; whatever the idle time.
    claude = prompt_cache(CLAUDE, marked, None, NOW, PRICES)[0]
    assert (claude.read, claude.write, claude.from_breakpoint) == (pytest.approx(0.1), 1.25, True)
    assert prompt_cache(CLAUDE, claude_body(None), NOW - 1, NOW, PRICES) == (UNCACHED, None)
    # OpenAI: cached input at its own price, no write premium, any matching prefix read.
    gpt = prompt_cache(GPT, {"model": "gpt-4o"}, None, NOW, PRICES)[0]
    assert (gpt.read, gpt.write, gpt.from_breakpoint) == (pytest.approx(0.5), 1.0, False)
    unknown = prompt_cache(GPT, {"model": "acme-9"}, None, NOW, PRICES)[0]
    assert unknown == CachePrices(UNKNOWN_READ_RATIO, UNKNOWN_WRITE_RATIO, False)
