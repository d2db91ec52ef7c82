"""Ranking of recalled turns: BM25 with query expansion, sentence vectors, neighbour smoothing; the block."""

from __future__ import annotations

from pathlib import Path

from structlog.testing import capture_logs

from proxy.compression.content import units
from proxy.compression.expand import EXPANSION_WEIGHT, expansion
from proxy.compression.recall import (
    GAP,
    NEXT_WEIGHTS,
    PREVIOUS_WEIGHTS,
    Candidate,
    RecallIndex,
    _smoothed,
    render,
    select,
)
from proxy.compression.semantic import TOKENIZER_FILE, WEIGHTS_FILE, load
from proxy.compression.text import terms
from proxy.providers import OpenAI

FILLER = [
    f"We spoke about the weather and the {word} in town today."
    for word in (
        "bakery",
        "library",
        "station",
        "market",
        "harbour",
        "museum",
        "stadium",
        "theatre",
        "garden",
        "bridge",
        "square",
        "tower",
    )
]
TOGETHER = [
    "The hiking trip was long, the glacier at the top was enormous.",
    "More hiking next month: the glacier trail again, with better boots.",
]
ANSWER = "That glacier photo is now my screen background."


def _index(texts: list[str]) -> tuple[RecallIndex, list[Candidate]]:
    index = RecallIndex()
    candidates = [Candidate(n, index.add(text), "user", None) for n, text in enumerate(texts)]
    return index, candidates


def test_a_word_that_keeps_company_with_the_query_joins_it_at_a_lower_weight() -> None:
    index, candidates = _index([*FILLER, *TOGETHER, ANSWER])
    docs = {c.doc for c in candidates}
    weights = expansion(set(terms("hiking")), index._postings, docs, lambda doc: terms(index.texts[doc]))
    assert weights[terms("hiking")[0]] == 1.0
    assert weights[terms("glacier")[0]] == EXPANSION_WEIGHT  # the strongest companion
    assert terms("weather")[0] not in weights  # in every turn: no company in particular
    # Only the candidates count: without the turns that pair them, the words are strangers.
    apart = docs - {candidates[len(FILLER)].doc, candidates[len(FILLER) + 1].doc}
    assert expansion(set(terms("hiking")), index._postings, apart, lambda doc: terms(index.texts[doc])) == {
        terms("hiking")[0]: 1.0
    }


def test_a_turn_sharing_no_word_with_the_question_ranks_above_unrelated_ones() -> None:
    texts = [*TOGETHER, *FILLER, ANSWER, *FILLER]
    index, candidates = _index(texts)
    question = "What about the hiking?"
    assert set(terms(ANSWER)).isdisjoint(terms(question))
    scores = index.scores(question, {c.doc for c in candidates})
    assert set(scores) == {c.doc for c in candidates[:2]} | {candidates[texts.index(ANSWER)].doc}
    ranked = sorted(scores, key=lambda doc: -scores[doc])
    assert index.texts[ranked[-1]] == ANSWER  # below the turns that say "hiking" themselves


def test_expansion_is_the_same_whatever_order_the_candidates_come_in() -> None:
    index, candidates = _index([*FILLER, *TOGETHER, ANSWER])
    forward = index.scores("hiking trip", {c.doc for c in candidates})
    backward = index.scores("hiking trip", set(reversed([c.doc for c in candidates])))
    assert forward == backward


def test_select_quotes_the_best_turns_and_their_neighbours_in_conversation_order() -> None:
    texts = [*FILLER[:6], "Where did you go hiking?", "Up to the glacier, it was enormous.", *FILLER[6:]]
    index, candidates = _index(texts)
    chosen = select(index, "Tell me about the hiking", candidates, budget=10_000)
    positions = [c.order for c in chosen]
    assert {6, 7} <= set(positions) and positions == sorted(positions)  # the answer comes with its question
    assert all(abs(p - 6) <= len(PREVIOUS_WEIGHTS) for p in positions)  # unrelated turns only as neighbours


def test_a_unit_gains_a_decaying_share_of_its_neighbours_scores() -> None:
    raw = [0.0, 0.0, 0.0, 10.0, 0.0, 0.0, 0.0]
    smoothed = _smoothed(raw)
    assert smoothed[3] == 10.0
    for distance, weight in enumerate(PREVIOUS_WEIGHTS, 1):  # the units after the match: its answers
        assert smoothed[3 + distance] == weight * 10.0
    for distance, weight in enumerate(NEXT_WEIGHTS, 1):
        assert smoothed[3 - distance] == weight * 10.0
    assert _smoothed([]) == []


VIOLIN = "I practise the violin every evening."


def test_a_turn_alike_in_meaning_but_sharing_no_word_is_recalled_by_its_vector() -> None:
    question = "Which musical instrument does she play?"
    assert set(terms(VIOLIN)).isdisjoint(terms(question))
    for semantic in (True, False):
        index = RecallIndex(semantic=semantic)
        candidates = [Candidate(n, index.add(text), "user", None) for n, text in enumerate([*FILLER, VIOLIN])]
        assert index.scores(question, {c.doc for c in candidates}) == {}  # BM25 sees nothing in common
        chosen = [index.texts[c.doc] for c in select(index, question, candidates, budget=10_000)]
        if semantic:  # WordLlama's vectors, read from the installed wheel
            similar = index.similarities(question, {c.doc for c in candidates})
            assert max(similar, key=lambda doc: similar[doc]) == candidates[-1].doc
            assert VIOLIN in chosen
        else:
            assert chosen == []


def test_without_readable_embedding_files_recall_is_bm25_alone(tmp_path: Path) -> None:
    with capture_logs() as logs:
        assert load(tmp_path) is None  # not a wordllama folder
        for name in (TOKENIZER_FILE, WEIGHTS_FILE):
            (tmp_path / name).parent.mkdir(parents=True)
            (tmp_path / name).write_text("damaged", encoding="utf-8")
        assert load(tmp_path) is None
    assert [entry["event"] for entry in logs] == ["semantic_recall_unavailable"] * 2
    assert logs[1]["error"] == "Exception"  # the tokenizer's parse error, by class only


def test_recall_block_lists_runs_under_their_date_and_marks_skipped_turns() -> None:
    index = RecallIndex(semantic=False)
    texts = ["first", "second", "third", "fourth"]
    dates = ["1 May, 2024", "1 May, 2024", "1 May, 2024", "9 May, 2024"]
    roles = ["user", "assistant", "user", "assistant"]
    every = [
        Candidate(n, index.add(t), r, d) for n, (t, r, d) in enumerate(zip(texts, roles, dates, strict=True))
    ]
    block = render(index, [every[0], every[2], every[3]])
    assert block.split("\n")[1:] == [
        "(1 May, 2024)",
        "user: first",
        GAP,
        "user: third",
        "(9 May, 2024)",
        "assistant: fourth",
    ]
    assert render(index, every[:2]).split("\n")[1:] == ["(1 May, 2024)", "user: first", "assistant: second"]


def test_a_message_is_recalled_by_paragraph() -> None:
    message = {
        "role": "user",
        "content": "Caroline: the parade was fun.\n\n  \nMelanie: I went camping.\nWith the kids.",
    }
    assert units(OpenAI.shape, message) == [
        ("text", "Caroline: the parade was fun."),
        ("text", "Melanie: I went camping.\nWith the kids."),
    ]
