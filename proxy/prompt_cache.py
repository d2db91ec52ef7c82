"""Whether the provider likely still caches a conversation's prompt, and what a cached token costs there.

Recalled turns ride after the last cache breakpoint, so each request pays for them in full. While
the provider still holds the conversation's prefix, the history they stand in for would have been
a cache read, so recall is then held to half of what those reads would have cost (see
compression.compressor.recall_budget).
"""

from __future__ import annotations

from typing import Any

from .compression.policy import UNCACHED, CachePrices
from .pricing import PriceTable
from .providers import Provider

# For a model without a known price: cache reads cost a tenth of input for Claude and GPT-5 models,
# and writes 1.25 on Claude (the side that makes a fold look dearer, so it folds less, not more).
UNKNOWN_READ_RATIO = 0.1
UNKNOWN_WRITE_RATIO = 1.25


def prompt_cache(
    provider: Provider,
    body: dict[str, Any],
    previous_request_at: float | None,
    now: float,
    table: PriceTable,
) -> tuple[CachePrices, float | None]:
    """What the provider's prompt cache charges for this request, as multiples of its input price
    (UNCACHED when it is not cached at all: Claude without a cache_control marker), and the
    cache-read ratio when the session's previous request is recent enough for the provider to hold
    its prefix still (None when the cache is cold). The body is walked for markers once."""
    lifetime = provider.prompt_cache_seconds(body)
    if lifetime is None:
        return UNCACHED, None
    model = body.get("model")
    price = table.price(model if isinstance(model, str) else None)
    from_breakpoint = provider.cache_reads_at_breakpoints
    if price is None or price.input <= 0:
        prices = CachePrices(UNKNOWN_READ_RATIO, UNKNOWN_WRITE_RATIO, from_breakpoint)
    else:
        read, write = min(1.0, price.cache_read / price.input), max(1.0, price.cache_write / price.input)
        prices = CachePrices(read, write, from_breakpoint)
    warm = previous_request_at is not None and now - previous_request_at <= lifetime
    return prices, prices.read if warm else None
