"""Query expansion learned from the request's own turns: words that keep company with the query's words."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Collection, Mapping

# Per query term, this many companions join the query, the strongest at EXPANSION_WEIGHT of a query term.
EXPANSION_TERMS = 10
EXPANSION_WEIGHT = 0.2
# A query term found in more than this share of the turns is a name or a topic word of the whole
# conversation: its companions are everything, so it is not expanded.
MAX_SHARE = 0.2
MIN_TOGETHER = 2  # a word met once beside a query term is chance, not company


def expansion(
    query: Collection[str],
    postings: Mapping[str, Mapping[int, int]],
    candidates: Collection[int],
    terms_of: Callable[[int], Collection[str]],
) -> dict[str, float]:
    """Weights of the query's terms (1.0) and of the words that co-occur with them in the candidates.

    Companions are scored by co-occurrence count times pointwise mutual information, over the
    candidate turns only, so what expands a query comes from this request's own messages. Every
    loop runs in a fixed order and ties break on the term, so the result is the same on every instance.
    """
    weights = {term: 1.0 for term in query}
    total = len(candidates)
    if not total or EXPANSION_WEIGHT <= 0:
        return weights
    frequency: dict[str, int] = {}

    def df(term: str) -> int:
        if term not in frequency:
            frequency[term] = sum(1 for doc in postings.get(term, {}) if doc in candidates)
        return frequency[term]

    for term in sorted(query):
        docs = sorted(doc for doc in postings.get(term, {}) if doc in candidates)
        if not docs or len(docs) > total * MAX_SHARE:
            continue
        together: Counter[str] = Counter()
        for doc in docs:
            together.update(other for other in set(terms_of(doc)) if other not in query)
        strength = {
            other: count * math.log(total * count / (len(docs) * df(other)))
            for other, count in together.items()
            if count >= MIN_TOGETHER
        }
        companions = sorted((o for o, s in strength.items() if s > 0), key=lambda o: (-strength[o], o))
        companions = companions[:EXPANSION_TERMS]
        if not companions:
            continue
        strongest = strength[companions[0]]
        for other in companions:
            weights[other] = max(weights.get(other, 0.0), EXPANSION_WEIGHT * strength[other] / strongest)
    return weights
