"""BM25 over a session's remembered turns, and the recall block added for the latest user message."""

from __future__ import annotations

import math
from collections import Counter

import attrs

from ..tokens import count_text
from .expand import expansion
from .text import terms

K1 = 1.2
B = 0.75
# Neighbour smoothing: a unit gains these shares of the scores of the units 1, 2, 3 before it (the
# question it answers) and after it (the follow-up). Tuned on LoCoMo (see bench/compression.py):
# summing a decaying window found one evidence turn in a hundred more than the best neighbour alone.
PREVIOUS_WEIGHTS = (0.5, 0.3, 0.2)
NEXT_WEIGHTS = (0.3, 0.2, 0.1)
RELATIVE_CUTOFF = 0.15
RECALL_HEADER = (
    "[Vidurai proxy: earlier parts of this conversation, folded above, that may matter "
    "for this message; quoted verbatim with their position and date]"
)


class RecallIndex:
    """An incremental BM25 index: each distinct text once, scored only among the caller's candidates."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self._ids: dict[str, int] = {}
        self._lengths: list[int] = []
        self._postings: dict[str, dict[int, int]] = {}
        self._total_length = 0

    def __len__(self) -> int:
        return len(self.texts)

    def add(self, text: str) -> int:
        """The id of a text, indexing it on first sight."""
        known = self._ids.get(text)
        if known is not None:
            return known
        doc = len(self.texts)
        self.texts.append(text)
        self._ids[text] = doc
        counts = Counter(terms(text))
        length = sum(counts.values())
        self._lengths.append(length)
        self._total_length += length
        for term, tf in counts.items():
            self._postings.setdefault(term, {})[doc] = tf
        return doc

    def scores(self, query: str, candidates: set[int]) -> dict[int, float]:
        """BM25 score of each candidate that shares a term with the query or its session-learned companions.

        Collection statistics come from the candidates alone, so the ranking is a function of this
        request's own messages: the same on every proxy instance, whatever else the session saw.
        """
        if not candidates:
            return {}
        weights = expansion(set(terms(query)), self._postings, candidates, lambda doc: terms(self.texts[doc]))
        return self.weighted(weights, candidates)

    def weighted(self, weights: dict[str, float], candidates: set[int]) -> dict[int, float]:
        """BM25 of each candidate for a query given as weighted terms."""
        total = len(candidates)
        if not total:
            return {}
        average = sum(self._lengths[doc] for doc in candidates) / total or 1.0
        found: dict[int, float] = {}
        for term in sorted(weights):  # a fixed order: float sums equal on every instance
            posting = self._postings.get(term)
            if not posting:
                continue
            matching = [(doc, tf) for doc, tf in posting.items() if doc in candidates]
            if not matching:
                continue
            idf = weights[term] * math.log(1 + (total - len(matching) + 0.5) / (len(matching) + 0.5))
            for doc, tf in matching:
                norm = tf + K1 * (1 - B + B * self._lengths[doc] / average)
                found[doc] = found.get(doc, 0.0) + idf * tf * (K1 + 1) / norm
        return found


@attrs.frozen
class Candidate:
    """An old unit of this request that recall may quote: where it is, who said it, when."""

    doc: int
    position: int
    role: str
    date: str | None


def _line(candidate: Candidate, text: str) -> str:
    return f"#{candidate.position + 1} {candidate.role}: {text}"


def _smoothed(raw: list[float]) -> list[float]:
    """Each unit's score plus some of its neighbours': an answer rarely repeats the words of its question."""
    n = len(raw)
    out = list(raw)
    for i in range(n):
        if not raw[i]:
            continue
        for distance, weight in enumerate(PREVIOUS_WEIGHTS, 1):  # i is a previous unit of those after it
            if i + distance < n:
                out[i + distance] += weight * raw[i]
        for distance, weight in enumerate(NEXT_WEIGHTS, 1):
            if i - distance >= 0:
                out[i - distance] += weight * raw[i]
    return out


def select(index: RecallIndex, query: str, candidates: list[Candidate], budget: int) -> list[Candidate]:
    """The most relevant candidates that fit the token budget, in conversation order.

    Candidates come in conversation order. Units scoring under RELATIVE_CUTOFF of the best one are
    left out even when the budget allows: a precise question needs few turns, a vague one many.
    """
    if budget <= 0 or not candidates or not query.strip():
        return []
    scores = index.scores(query, {c.doc for c in candidates})
    if not scores:
        return []
    smoothed = _smoothed([scores.get(c.doc, 0.0) for c in candidates])
    best: dict[int, int] = {}  # doc -> its best-scoring occurrence
    for i, candidate in enumerate(candidates):
        if smoothed[i] > 0 and (candidate.doc not in best or smoothed[i] > smoothed[best[candidate.doc]]):
            best[candidate.doc] = i
    ranked = sorted(best.values(), key=lambda i: (-smoothed[i], -i))
    floor = smoothed[ranked[0]] * RELATIVE_CUTOFF
    chosen: list[Candidate] = []
    spent = count_text(RECALL_HEADER)
    dates: set[str] = set()
    for i in ranked:
        if smoothed[i] < floor:
            break
        candidate = candidates[i]
        cost = count_text(_line(candidate, index.texts[candidate.doc])) + 1
        if candidate.date and candidate.date not in dates:
            cost += count_text(candidate.date) + 3
        if spent + cost > budget:
            continue
        chosen.append(candidate)
        spent += cost
        if candidate.date:
            dates.add(candidate.date)
    return sorted(chosen, key=lambda c: c.position)


def render(index: RecallIndex, chosen: list[Candidate]) -> str:
    """The recall block: a header, then each quoted unit under the date it was said on."""
    lines = [RECALL_HEADER]
    current: str | None = None
    for candidate in chosen:
        if candidate.date and candidate.date != current:
            lines.append(f"({candidate.date})")
            current = candidate.date
        lines.append(_line(candidate, index.texts[candidate.doc]))
    return "\n".join(lines)
