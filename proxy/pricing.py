"""Model prices (US dollars per million tokens) and the cost of a request's usage."""

from __future__ import annotations

import structlog

from proxy.config import Price
from proxy.records import Usage

log = structlog.get_logger(__name__)

# Prefix -> Price(input, output, cache_write, cache_read). List prices as of November 2026:
# Claude from platform.claude.com/docs/en/about-claude/pricing and the model overview pages;
# OpenAI from published tables quoting developers.openai.com/api/docs/pricing. Anthropic cache
# writes are the 5-minute tier (1.25x input); writes to the 1-hour cache, which the API reports
# apart (usage.cache_creation.ephemeral_1h_input_tokens), cost ONE_HOUR_WRITE x input. OpenAI
# bills no cache writes, so that column repeats the input price, and its
# "cached input" is the cache_read column. Long-context and batch rates are not modelled.
BUILTIN_PRICES: dict[str, Price] = {
    # Anthropic: Claude 5
    "claude-opus-5-5": Price(4.00, 20.00, 5.00, 0.20),
    "claude-opus-5": Price(5.00, 25.00, 6.25, 0.50),
    "claude-sonnet-5-5": Price(2.00, 10.00, 2.50, 0.10),
    "claude-sonnet-5": Price(2.00, 10.00, 2.50, 0.20),
    # Anthropic: Claude 4.x (Opus dropped to $5/$25 from 4.5 on; 4 and 4.1 keep $15/$75)
    "claude-opus-4-8": Price(5.00, 25.00, 6.25, 0.50),
    "claude-opus-4-7": Price(5.00, 25.00, 6.25, 0.50),
    "claude-opus-4-6": Price(5.00, 25.00, 6.25, 0.50),
    "claude-opus-4-5": Price(5.00, 25.00, 6.25, 0.50),
    "claude-opus-4-1": Price(15.00, 75.00, 18.75, 1.50),
    "claude-opus-4": Price(15.00, 75.00, 18.75, 1.50),
    "claude-sonnet-4-6": Price(3.00, 15.00, 3.75, 0.30),
    "claude-sonnet-4-5": Price(3.00, 15.00, 3.75, 0.30),
    "claude-sonnet-4": Price(3.00, 15.00, 3.75, 0.30),
    "claude-haiku-4-5": Price(1.00, 5.00, 1.25, 0.10),
    # Anthropic: Claude 3.x
    "claude-3-7-sonnet": Price(3.00, 15.00, 3.75, 0.30),
    "claude-3-5-sonnet": Price(3.00, 15.00, 3.75, 0.30),
    "claude-3-5-haiku": Price(0.80, 4.00, 1.00, 0.08),
    "claude-3-opus": Price(15.00, 75.00, 18.75, 1.50),
    "claude-3-sonnet": Price(3.00, 15.00, 3.75, 0.30),
    "claude-3-haiku": Price(0.25, 1.25, 0.30, 0.03),
    # OpenAI: GPT-5 family
    "gpt-5.4-mini": Price(0.75, 4.50, 0.75, 0.075),
    "gpt-5.4": Price(2.50, 15.00, 2.50, 0.25),
    "gpt-5.2": Price(1.75, 14.00, 1.75, 0.175),
    "gpt-5.1-codex-mini": Price(0.25, 2.00, 0.25, 0.025),
    "gpt-5.1": Price(1.25, 10.00, 1.25, 0.125),
    "gpt-5-pro": Price(15.00, 120.00, 15.00, 15.00),  # no cached-input discount
    "gpt-5-nano": Price(0.05, 0.40, 0.05, 0.005),
    "gpt-5-mini": Price(0.25, 2.00, 0.25, 0.025),
    "gpt-5": Price(1.25, 10.00, 1.25, 0.125),  # also gpt-5-codex, gpt-5-chat-latest
    # OpenAI: GPT-4.1 and GPT-4o
    "gpt-4.1-nano": Price(0.10, 0.40, 0.10, 0.025),
    "gpt-4.1-mini": Price(0.40, 1.60, 0.40, 0.10),
    "gpt-4.1": Price(2.00, 8.00, 2.00, 0.50),
    "gpt-4o-mini": Price(0.15, 0.60, 0.15, 0.075),
    "gpt-4o-2024-05-13": Price(5.00, 15.00, 5.00, 5.00),  # the first snapshot, never cached
    "gpt-4o": Price(2.50, 10.00, 2.50, 1.25),
    # OpenAI: reasoning models (reasoning tokens are billed as output and reported in it)
    "o4-mini": Price(1.10, 4.40, 1.10, 0.275),
    "o3-pro": Price(20.00, 80.00, 20.00, 20.00),
    "o3-mini": Price(1.10, 4.40, 1.10, 0.55),
    "o3": Price(2.00, 8.00, 2.00, 0.50),
    "o1-mini": Price(1.10, 4.40, 1.10, 0.55),
    "o1-pro": Price(150.00, 600.00, 150.00, 150.00),
    "o1": Price(15.00, 60.00, 15.00, 7.50),
}

# Anthropic's price of a 1-hour cache write, as a multiple of the model's input price (the pricing
# page's table: 2x base input for every model); it follows [pricing] overrides of the input price.
ONE_HOUR_WRITE = 2.0

# Distinct model names remembered; clients choose the names, so the memory must stay bounded.
_MAX_REMEMBERED = 4096


def _matches(model: str, prefix: str) -> bool:
    """A built-in prefix covers the model itself and its dated or suffixed ids, not another version.

    "gpt-4o" covers "gpt-4o-2024-08-06" but not "gpt-4o1"; "gpt-5" does not cover "gpt-5.7",
    which stays unpriced (and warned about) rather than billed at another model's price.
    """
    if not model.startswith(prefix):
        return False
    if len(model) == len(prefix) or not prefix[-1].isalnum():
        return True
    following = model[len(prefix)]
    return not following.isalnum() and following != "."


class PriceTable:
    """Built-in prices extended or overridden by `[pricing]` entries, matched by longest prefix.

    Entries from `[pricing]` are plain prefixes, taken as the user typed them; built-in ones
    only match at a boundary (see `_matches`) so that a new model is never silently billed at
    an older model's price.
    """

    def __init__(self, overrides: tuple[tuple[str, Price], ...] = ()) -> None:
        table = {prefix.lower(): (price, True) for prefix, price in BUILTIN_PRICES.items()}
        table.update((prefix.strip().lower(), (price, False)) for prefix, price in overrides)
        self._prefixes = sorted(
            ((prefix, price, bounded) for prefix, (price, bounded) in table.items()),
            key=lambda item: len(item[0]),
            reverse=True,
        )
        self._resolved: dict[str, Price | None] = {}
        self._warned: set[str] = set()

    def price(self, model: str | None) -> Price | None:
        """The price of a model id (dated ids resolve to their family), or None if unknown."""
        if not model:
            return None
        key = model.strip().lower()
        if key in self._resolved:
            return self._resolved[key]
        price = next(
            (
                p
                for prefix, p, bounded in self._prefixes
                if (_matches(key, prefix) if bounded else key.startswith(prefix))
            ),
            None,
        )
        if len(self._resolved) < _MAX_REMEMBERED:
            self._resolved[key] = price
        if price is None and key not in self._warned and len(self._warned) < _MAX_REMEMBERED:
            self._warned.add(key)
            log.warning(
                "pricing.unknown_model",
                model=model,
                hint="add '<model prefix> = input, output, cache_write, cache_read' "
                "(USD per million tokens) to [pricing] in vidurai.ini",
            )
        return price

    def cost(self, model: str | None, usage: Usage) -> float | None:
        """US dollars for the usage upstream reported; None if the model or the usage is unknown.

        `usage.input_tokens` excludes both cache tiers (see Usage), so each tier is billed once
        at its own rate.
        """
        if not usage.reported:
            return None
        price = self.price(model)
        if price is None:
            return None
        one_hour = min(usage.cache_write_1h_tokens or 0, usage.cache_write_tokens or 0)
        return (
            (usage.input_tokens or 0) * price.input
            + (usage.output_tokens or 0) * price.output
            + ((usage.cache_write_tokens or 0) - one_hour) * price.cache_write
            + one_hour * price.input * ONE_HOUR_WRITE
            + (usage.cache_read_tokens or 0) * price.cache_read
        ) / 1_000_000

    def saved_cost(self, model: str | None, tokens_saved: int | None) -> float | None:
        """US dollars the compressed-away tokens would have cost, at the uncached input price.

        Cost is linear in tokens, so "uncompressed cost minus actual cost" is the saved tokens
        times one rate, and the uncached input rate is the list price of the history that was
        not sent. Had that history been a prompt-cache hit it would have cost less (a tenth on
        Anthropic), so the figure is what compression saves at list price, not a cache model.
        """
        if tokens_saved is None:
            return None
        price = self.price(model)
        if price is None:
            return None
        return tokens_saved * price.input / 1_000_000
