"""When folding pays: a fold rewrites the provider's cached prefix once and saves reads from then on.

With a prompt cache, history the provider already holds costs `read` (a tenth of the input price on
Claude) and a fold makes it write everything after the fold point again at `write` (1.25 on Claude,
1.0 on OpenAI, which bills no cache writes). Folding `folded` tokens into a `digest` of fewer, with
`rewritten` tokens the provider held after them, costs this request

    write * (digest + rewritten) - read * (folded + rewritten)

more than not folding, and saves `read * (folded - digest)` on every later request. Nobody knows
how many later requests a conversation has: one that has run for n requests is as likely to stop
before as after 2n, and the rule wants a fold repaid within half of that, n / 2 requests. So it
folds rarely and in big steps, as Anthropic's `clear_at_least` does. Without a cache (read = write = 1)
the same rule folds whenever the digest is smaller.

The decision is replayed over the request's own history, request end by request end, so it is a
pure function of the messages: every instance, and the same instance after a restart, folds at the
same points and forwards the same prefix.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence

import attrs


@attrs.frozen
class CachePrices:
    """What the provider charges for this request's prompt cache, as multiples of the input price."""

    read: float
    write: float
    # Claude reads a cached prefix only up to a breakpoint an earlier request wrote, so a fold
    # rewrites everything after the client's breakpoint before it (the system prompt's): the task and
    # the digests folded before too. OpenAI reads any prefix that matches, up to the changed part.
    from_breakpoint: bool = False


# No cache: every token is paid in full on every request.
UNCACHED = CachePrices(1.0, 1.0)
# A fold must pay for itself within this share of the requests the conversation has had so far: a
# margin for not knowing when it ends. On the swe-agent dev sessions with the cache warm (an early
# in-process replay, before the final digests): input cost 0.961x uncompressed at 0.5, 0.973x at 1
# (folds a session ended too soon to repay), 0.982x at 0.25 (folds not taken). The final
# `make bench-compression` measures 0.94x at 0.5.
PAYBACK_SHARE = 0.5


def fold_pays(prices: CachePrices, folded: int, digest: int, rewritten: int, requests: float) -> bool:
    """Whether folding now costs less, over `requests` more requests, than leaving the history be."""
    extra = prices.write * (digest + rewritten) - prices.read * (folded + rewritten)
    return prices.read * (folded - digest) * requests >= extra


@attrs.frozen
class History:
    """What the replay needs to know of a request's messages, all indexed by message."""

    tokens: Sequence[int]  # estimated tokens of each message
    ends: Sequence[int]  # indexes of the messages a request of this conversation ended on
    fixed_tokens: int  # system prompt and tools: never folded
    threshold_messages: int  # a request with fewer messages is not compressed
    min_tokens: int  # nor one of this many tokens or fewer


def frontier(
    prices: CachePrices,
    history: History,
    boundaries: Sequence[int],
    digest_tokens: Callable[[int], int],
    limit_at: Callable[[int], int],
) -> int:
    """How many of the chunks (boundaries[k]..boundaries[k+1]) this request folds.

    `digest_tokens(k)` is the size of chunk k's digest and `limit_at(end)` the first message a request
    ending at `end` must keep unfolded.
    """
    prefix = [0]
    for count in history.tokens:
        prefix.append(prefix[-1] + count)
    folded = 0  # chunks folded so far
    digests = [0]  # cumulative digest tokens of chunks
    cached = 0  # messages the previous request sent, which the provider now holds
    for requests, end in enumerate(history.ends, 1):
        previous, cached = cached, end + 1
        small = prefix[end + 1] + history.fixed_tokens <= history.min_tokens
        if small or end + 1 < history.threshold_messages:
            continue  # a request this small was forwarded as it came
        reach = bisect.bisect_right(boundaries, limit_at(end)) - 1  # chunks ending before the limit
        if reach <= folded:
            continue
        while len(digests) <= reach:
            digests.append(digests[-1] + digest_tokens(len(digests) - 1))
        span = prefix[boundaries[reach]] - prefix[boundaries[folded]]
        digest = digests[reach] - digests[folded]
        # The new messages of this request are written either way; what a fold adds is writing
        # again what the provider already held after the fold point.
        rewritten = max(prefix[previous] - prefix[boundaries[reach]], 0)
        if prices.from_breakpoint:
            rewritten += prefix[boundaries[0]] + digests[folded]
        if fold_pays(prices, span, digest, rewritten, requests * PAYBACK_SHARE):
            folded = reach
    return folded
