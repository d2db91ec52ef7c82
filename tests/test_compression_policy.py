"""When a fold pays: the cost model, and an agent session's prefix changing only where it says so."""

from __future__ import annotations

import json
from typing import Any

import pytest

from proxy.compression import SessionMemory
from proxy.compression.policy import UNCACHED, CachePrices, fold_pays
from tests.compression_support import CLAUDE_CACHE, anthropic_agent, run

OPENAI_CACHE = CachePrices(0.5, 1.0)  # gpt-4o: cached input at half price, no write premium


def test_fold_pays_when_later_reads_repay_the_rewrite() -> None:
    # Folding 10,000 tokens into 1,000 with 2,000 cached after them: the rewrite costs
    # 1.25 * 3,000 - 0.1 * 12,000 = 2,550 more now and saves 0.1 * 9,000 = 900 per later request.
    assert not fold_pays(CLAUDE_CACHE, folded=10_000, digest=1_000, rewritten=2_000, requests=2)
    assert fold_pays(CLAUDE_CACHE, folded=10_000, digest=1_000, rewritten=2_000, requests=3)
    # Without a cache every request pays everything: any smaller digest pays at once.
    assert fold_pays(UNCACHED, folded=10_000, digest=9_999, rewritten=50_000, requests=0)
    assert not fold_pays(UNCACHED, folded=10_000, digest=10_001, rewritten=0, requests=100)
    # OpenAI bills no cache writes, so a rewrite costs it only the lost discount.
    assert fold_pays(OPENAI_CACHE, folded=10_000, digest=1_000, rewritten=2_000, requests=1)


def _steps(total: int, prices: CachePrices) -> list[tuple[dict[str, Any], Any]]:
    """An agent session played step by step, as its client sends it: (original body, result)."""
    memory = SessionMemory("agent")
    full = anthropic_agent(total, thinking=False, result_lines=40)
    played = []
    for steps in range(1, total + 1):
        body = {**full, "messages": full["messages"][: 1 + 2 * steps]}
        played.append((body, run("anthropic", body, memory, prices=prices)))
    return played


def _forwarded(body: dict[str, Any], result: Any) -> list[Any]:
    return result.body["messages"] if result.body is not None else body["messages"]


def test_with_a_warm_cache_the_prefix_changes_only_at_rare_folds() -> None:
    played = _steps(80, CLAUDE_CACHE)
    changes = 0
    previous: list[Any] | None = None
    for body, result in played:
        out = _forwarded(body, result)
        if previous is not None:
            # What the previous request sent, except its last message, is a prefix the provider holds.
            held = json.dumps(previous[:-1])
            if json.dumps(out[: len(previous) - 1]) != held:
                changes += 1
                assert result.reason == "compressed" and result.messages_folded > 0
        previous = out
    # Early steps fold nothing (a rewrite would cost more than it saves), later ones fold in big steps.
    assert played[5][1].reason == "no_fold_pays" and played[5][1].body is None
    assert played[-1][1].reason == "compressed"
    assert 1 <= changes <= 5


def test_without_a_cache_every_request_folds_as_far_as_it_can() -> None:
    played = _steps(40, UNCACHED)
    folded = [r.messages_folded for _, r in played if r.reason == "compressed"]
    assert len(folded) >= 30 and folded == sorted(folded) and len(set(folded)) > 10


@pytest.mark.parametrize("prices", [CLAUDE_CACHE, UNCACHED])
def test_fold_points_are_the_same_on_a_fresh_instance(prices: CachePrices) -> None:
    played = _steps(60, prices)
    for body, result in played[::7]:
        again = run("anthropic", body, SessionMemory("another-instance"), prices=prices)
        assert json.dumps(again.body) == json.dumps(result.body)
