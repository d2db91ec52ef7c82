"""Ranking a session's old turns for the latest user message (BM25 and vectors), and the recall block."""

from __future__ import annotations

import math
from collections import Counter

import attrs
import numpy as np

from ..tokens import count_text
from .expand import expansion
from .semantic import HalfVectors, embedding
from .text import STOPWORDS, said, terms

K1 = 1.2
B = 0.75
# Neighbour smoothing: a unit gains these shares of the scores of the units 1, 2, 3 before it (the
# question it answers) and after it (the follow-up). Tuned on LoCoMo (see bench/compression.py):
# summing a decaying window found one evidence turn in a hundred more than the best neighbour alone.
PREVIOUS_WEIGHTS = (0.5, 0.3, 0.2)
NEXT_WEIGHTS = (0.3, 0.2, 0.1)
# A unit's relevance is its BM25 score over the best one's plus SEMANTIC_WEIGHT times how far its
# vector similarity to the query stands above the median candidate's, over the best one's margin.
# Tuned on LoCoMo (bench/compression.py, in-process): for 90% evidence recall BM25 alone forwarded
# 5,549 tokens per request, BM25 with vectors 4,486.
SEMANTIC_WEIGHT = 0.6
SEMANTIC_BASELINE = 0.5  # the candidates' median similarity counts as none
# Units scoring under this share of the best one are left out even when the budget allows: a
# precise question quotes a few turns, a vague one many. On LoCoMo this spends tokens where they
# find evidence better than a fixed budget: 0.285 with a 6,000 cap beat every fixed budget tried.
# With verbatim digests, which take more of the request, 0.27: in-process on the Anthropic questions
# 90.0% evidence recall at 75.6% reduction with 0.275, 89.7% at 76.2% with 0.285.
RELATIVE_CUTOFF = 0.27
# Texts embedded for one request at most (about 30 ms): the first request of a long conversation
# the proxy has not seen, or has just restored, ranks by BM25 alone, and the next few embed the rest.
EMBED_PER_REQUEST = 256
# What a quoted line costs besides its text: "assistant: ", its newline, at most a "…" line before it.
PREFIX_TOKENS = 4
GAP = "…"
RECALL_HEADER = (
    "[Vidurai proxy: earlier turns, folded above, that may matter here; quoted verbatim in order under "
    "their dates, … where turns are skipped]"
)


class RecallIndex:
    """BM25 and sentence vectors over a session's texts, each indexed once, scored among candidates."""

    def __init__(self, semantic: bool = True) -> None:
        """`semantic=False` ranks by BM25 alone, as when the embedding can't be loaded."""
        self._model = embedding() if semantic else None
        self.texts: list[str] = []
        self._ids: dict[str, int] = {}
        self._lengths: list[int] = []
        self._postings: dict[str, dict[int, int]] = {}
        self._total_length = 0
        self._vectors: HalfVectors | None = None  # rows for the first len(self._vectors) texts

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

    def similarities(self, query: str, candidates: set[int]) -> dict[int, float]:
        """Cosine similarity of each candidate to the query; empty when the embedding isn't available."""
        model = self._model
        if model is None or not candidates:
            return {}
        known = 0 if self._vectors is None else len(self._vectors)
        if known < len(self.texts):  # each text is embedded once, when first needed
            # Kept at half precision: 300 KB for a 600-turn session, ample for ranking.
            new = model.vectors(self.texts[known : known + EMBED_PER_REQUEST]).astype(np.float16)
            self._vectors = new if self._vectors is None else np.vstack([self._vectors, new])
        assert self._vectors is not None
        docs = sorted(candidates)
        if docs[-1] >= len(self._vectors):
            return {}  # a long history met for the first time: BM25 alone until it is embedded
        query_vector = model.vectors([_content_words(query)])[0]
        similarity = self._vectors[docs].astype(np.float32) @ query_vector
        return dict(zip(docs, similarity.tolist(), strict=True))

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


def _content_words(query: str) -> str:
    """The query without function words, which would pull its mean vector toward every sentence's."""
    kept = [word for word in query.split() if word.lower().strip("?.,!;:'\"") not in STOPWORDS]
    return " ".join(kept) or query


@attrs.frozen
class Candidate:
    """An old unit of this request that recall may quote: where it is, who said it, when."""

    order: int  # its place among the request's old units
    doc: int
    role: str
    date: str | None


def _fused(lexical: dict[int, float], semantic: dict[int, float]) -> dict[int, float]:
    """BM25 and vector similarity on one scale, each relative to the best candidate's."""
    top = max(lexical.values(), default=0.0) or 1.0
    fused = {doc: score / top for doc, score in lexical.items()}
    if semantic and SEMANTIC_WEIGHT > 0:
        ordered = sorted(semantic.values())
        baseline = ordered[int((len(ordered) - 1) * SEMANTIC_BASELINE)]
        margin = (ordered[-1] - baseline) or 1.0
        for doc, similarity in semantic.items():
            if similarity > baseline:
                fused[doc] = fused.get(doc, 0.0) + SEMANTIC_WEIGHT * (similarity - baseline) / margin
    return fused


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
    docs = {c.doc for c in candidates}
    scores = _fused(index.scores(query, docs), index.similarities(query, docs))
    if not scores:
        return []
    smoothed = _smoothed([scores.get(c.doc, 0.0) for c in candidates])
    best: dict[int, int] = {}  # doc -> its best-scoring occurrence
    for i, candidate in enumerate(candidates):
        if smoothed[i] > 0 and (candidate.doc not in best or smoothed[i] > smoothed[best[candidate.doc]]):
            best[candidate.doc] = i
    ranked = sorted(best.values(), key=lambda i: (-smoothed[i], -i))
    floor = smoothed[ranked[0]] * RELATIVE_CUTOFF
    chosen: list[int] = []
    spent = count_text(RECALL_HEADER)
    dates: set[str] = set()
    for i in ranked:
        if smoothed[i] < floor:
            break
        candidate = candidates[i]
        cost = PREFIX_TOKENS + count_text(index.texts[candidate.doc])
        if candidate.date and candidate.date not in dates:
            cost += count_text(candidate.date) + 3
        if spent + cost > budget:
            continue
        chosen.append(i)
        spent += cost
        if candidate.date:
            dates.add(candidate.date)
    return [candidates[i] for i in sorted(chosen)]


def render(index: RecallIndex, chosen: list[Candidate]) -> str:
    """The recall block: a header, then the quoted units under the date they were said on.

    Lines follow each other in the conversation unless a "…" line marks skipped turns between them.
    """
    lines = [RECALL_HEADER]
    current: str | None = None
    previous: Candidate | None = None
    for candidate in chosen:
        if candidate.date and candidate.date != current:
            lines.append(f"({candidate.date})")
            current = candidate.date
        elif previous is not None and previous.order + 1 != candidate.order:
            lines.append(GAP)
        lines.append(said(candidate.role, index.texts[candidate.doc]))
        previous = candidate
    return "\n".join(lines)
