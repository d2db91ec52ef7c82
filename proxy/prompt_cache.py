"""Whether the provider likely still caches a conversation's prompt, and what a cached token costs there.

Recalled turns ride after the last cache breakpoint, so each request pays for them in full. While
the provider still holds the conversation's prefix, the history they stand in for would have been
a cache read, so recall is then held to half of what those reads would have cost (see
compression.compressor.recall_budget).
"""

from __future__ import annotations

from typing import Any

from .pricing import PriceTable
from .providers import Provider

# For a model without a known price: cache reads cost a tenth of input for Claude and GPT-5 models.
UNKNOWN_READ_RATIO = 0.1


def warm_read_ratio(
    provider: Provider,
    body: dict[str, Any],
    previous_request_at: float | None,
    now: float,
    prices: PriceTable,
) -> float | None:
    """Cache-read over input price when the session's previous request is recent enough for the
    provider to hold its prefix still; None when the cache is cold or the request uses none."""
    lifetime = provider.prompt_cache_seconds(body)
    if lifetime is None or previous_request_at is None or now - previous_request_at > lifetime:
        return None
    price = prices.price(body.get("model") if isinstance(body.get("model"), str) else None)
    if price is None or price.input <= 0:
        return UNKNOWN_READ_RATIO
    return min(1.0, price.cache_read / price.input)
