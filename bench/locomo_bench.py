"""The LoCoMo table: evidence recall of questions, fact coverage after a neutral last message, and
input cost played turn by turn with the prompt cache warm and cold, per conversation and provider."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import attrs

from proxy.tokens import estimate_request

from .cache_cost import Cost, PromptCache
from .locomo import CATEGORIES, NEUTRAL_MESSAGE, Conversation, Question, covered, question_body, turn_bodies
from .measures import ratio, squeezed, strings, valid
from .replay import Forwarded, Request


@attrs.define
class Row:
    """The figures of one conversation on one provider (or a total of several)."""

    turns: int = 0
    requests: int = 0
    valid: int = 0
    original: int = 0
    forwarded: int = 0
    evidence: int = 0
    kept: int = 0
    questions: int = 0
    all_kept: int = 0
    per_question: float = 0.0  # sum over questions of the share of their evidence kept
    by_category: dict[int, list[int]] = attrs.Factory(dict)  # category: [kept, evidence turns]
    facts: int = 0  # facts with an evidence sentence long enough to count
    facts_covered: int = 0
    turn_requests: int = 0
    turn_tokens: list[int] = attrs.Factory(lambda: [0, 0])  # original, forwarded
    turn_warm: list[float] = attrs.Factory(lambda: [0.0, 0.0])
    times_ms: list[float] = attrs.Factory(list)

    def judge(self, provider: str, original: dict[str, Any], forwarded: dict[str, Any]) -> None:
        """Count a request and whether what upstream got is valid."""
        self.requests += 1
        self.valid += valid(provider, original, forwarded)

    def add_request(self, provider: str, original: dict[str, Any], forwarded: dict[str, Any]) -> None:
        """A question or neutral request: judged, and its tokens counted for the reduction."""
        self.judge(provider, original, forwarded)
        self.original += estimate_request(original)
        self.forwarded += estimate_request(forwarded)

    def add_question(self, question: Question, forwarded: dict[str, Any]) -> None:
        text = _squeezed_messages(forwarded)
        kept = sum(squeezed(e) in text for e in question.evidence)
        self.evidence += len(question.evidence)
        self.kept += kept
        self.questions += 1
        self.all_kept += kept == len(question.evidence)
        self.per_question += kept / len(question.evidence)
        category = self.by_category.setdefault(question.category, [0, 0])
        category[0] += kept
        category[1] += len(question.evidence)

    def add_coverage(self, conversation: Conversation, forwarded: dict[str, Any]) -> None:
        text = _squeezed_messages(forwarded)
        for fact in conversation.facts:
            hit = covered(fact, text)
            if hit is not None:
                self.facts += 1
                self.facts_covered += hit

    def add_turns(self, turns: list[tuple[dict[str, Any], Cost, dict[str, Any]]]) -> None:
        """One conversation's turn-by-turn requests (original, its cost, forwarded), what upstream got
        priced through one prompt cache as the original requests were when the plan was made."""
        sent = PromptCache()
        for body, before, out in turns:
            self.judge("anthropic", body, out)
            after = sent.play(out)
            self.turn_requests += 1
            self.turn_tokens[0] += before.tokens
            self.turn_tokens[1] += after.tokens
            self.turn_warm[0] += before.warm
            self.turn_warm[1] += after.warm

    def merge(self, other: Row) -> None:
        """Add another row's figures (turns excepted: a total spans providers)."""
        for name in ("requests", "valid", "original", "forwarded", "evidence", "kept"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ("questions", "all_kept", "per_question", "facts", "facts_covered", "turn_requests"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for category, (kept, evidence) in other.by_category.items():
            mine = self.by_category.setdefault(category, [0, 0])
            mine[0] += kept
            mine[1] += evidence
        for i in range(2):
            self.turn_tokens[i] += other.turn_tokens[i]
            self.turn_warm[i] += other.turn_warm[i]
        self.times_ms.extend(other.times_ms)

    def figures(self) -> dict[str, Any]:
        """Everything the table prints, machine-readable."""
        return {
            "turns": self.turns,
            "requests": self.requests,
            "valid": ratio(self.valid, self.requests),
            "question_tokens_original": self.original,
            "question_tokens_forwarded": self.forwarded,
            "reduction": 1 - ratio(self.forwarded, self.original),
            "evidence_recall": ratio(self.kept, self.evidence),
            "evidence_turns": self.evidence,
            "per_question_recall": ratio(self.per_question, self.questions),
            "questions_all_kept": ratio(self.all_kept, self.questions),
            "recall_by_category": {
                CATEGORIES.get(c, str(c)): ratio(k, n) for c, (k, n) in sorted(self.by_category.items())
            },
            "facts": self.facts,
            "fact_coverage": ratio(self.facts_covered, self.facts),
            "turn_requests": self.turn_requests,
            "turn_warm_cost_ratio": ratio(self.turn_warm[1], self.turn_warm[0]),
            "turn_cold_cost_ratio": ratio(self.turn_tokens[1], self.turn_tokens[0]),
            "compress_ms_p50": percentile(self.times_ms, 0.5),
            "compress_ms_p95": percentile(self.times_ms, 0.95),
        }


def _squeezed_messages(body: dict[str, Any]) -> str:
    return "\x00".join(squeezed(s) for s in strings(body.get("messages")))


def percentile(times: list[float], share: float) -> float | None:
    if not times:
        return None
    ordered = sorted(times)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * share))], 2)


@attrs.frozen
class Purpose:
    """What one request of a plan is for: a question, a turn (its original request's cost through the
    prompt cache), or, with neither, the neutral last message."""

    row: str
    conversation: Conversation
    question: Question | None = None
    cost: Cost | None = None


@attrs.frozen
class Plan:
    """Every LoCoMo request of a run, in sending order, and what each one is for."""

    requests: list[Request]
    purposes: list[Purpose]


def plan(conversations: list[Conversation], providers: list[str], turns: list[Conversation]) -> Plan:
    """Per provider and conversation: its questions in one proxy session, then the neutral message in
    a session of its own (no cache markers, as a client asking about a chat sends them); then, on
    Anthropic, every user turn of the `turns` conversations with Claude Code's markers."""
    requests: list[Request] = []
    purposes: list[Purpose] = []
    for provider in providers:
        for c in conversations:
            row, session = f"{c.name} {provider}", f"{c.name}-{provider}"
            for q in c.questions:
                requests.append(Request(session, provider, question_body(provider, c, q.text)))
                purposes.append(Purpose(row, c, question=q))
            neutral = question_body(provider, c, NEUTRAL_MESSAGE)
            requests.append(Request(f"{session}-neutral", provider, neutral))
            purposes.append(Purpose(row, c))
    if "anthropic" in providers:
        for c in turns:
            cache = PromptCache()
            for body in turn_bodies(c):
                requests.append(Request(f"{c.name}-turns", "anthropic", body))
                purposes.append(Purpose(f"{c.name} anthropic", c, cost=cache.play(body)))
    return Plan(requests, purposes)


def tally(run: Plan, forwarded: Forwarded) -> dict[str, Row]:
    """The rows of the table from what upstream got, in the order of the plan."""
    rows: dict[str, Row] = {}
    turns: dict[str, list[tuple[dict[str, Any], Cost, dict[str, Any]]]] = defaultdict(list)
    for request, purpose, out in zip(run.requests, run.purposes, forwarded.bodies, strict=True):
        row = rows.setdefault(purpose.row, Row(turns=purpose.conversation.turns))
        if purpose.cost is not None:
            turns[purpose.row].append((request.body, purpose.cost, out))
            continue
        row.add_request(request.provider, request.body, out)
        if purpose.question is not None:
            row.add_question(purpose.question, out)
        else:
            row.add_coverage(purpose.conversation, out)
    for name, played in turns.items():
        rows[name].add_turns(played)
    return rows


def add_times(rows: dict[str, Row], run: Plan, timed: Forwarded) -> None:
    """compress() times of an in-process run of the plan's questions, into their rows."""
    for purpose, ms in zip(run.purposes, timed.times_ms, strict=True):
        if purpose.question is not None and ms is not None and purpose.row in rows:
            rows[purpose.row].times_ms.append(ms)


def total(rows: dict[str, Row]) -> Row:
    out = Row()
    for row in rows.values():
        out.merge(row)
    return out


HEADER = (
    f"{'conversation':<18} {'turns':>5} {'reqs':>5} {'valid':>6} {'orig tok':>8} {'fwd tok':>7} "
    f"{'reduction':>9} {'recall':>7} {'per-q':>6} {'all-kept':>8} {'facts':>5} {'coverage':>8} "
    f"{'t-reqs':>6} {'warm':>6} {'cold':>6} {'p50 ms':>6} {'p95 ms':>6}"
)


def _cell(value: float | None, spec: str, width: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}{spec}}"


def _times(value: float | None) -> str:
    return f"{'-' if value is None else f'{value:.2f}x':>6}"


def row_text(name: str, row: Row) -> str:
    f = row.figures()
    n, turned = max(f["requests"] - f["turn_requests"], 1), f["turn_requests"] > 0
    return (
        f"{name:<18} {f['turns'] or '':>5} {f['requests']:>5} {f['valid']:>6.1%} "
        f"{f['question_tokens_original'] // n:>8} {f['question_tokens_forwarded'] // n:>7} "
        f"{f['reduction']:>9.1%} {f['evidence_recall']:>7.1%} {f['per_question_recall']:>6.1%} "
        f"{f['questions_all_kept']:>8.1%} {f['facts']:>5} {f['fact_coverage']:>8.1%} "
        f"{f['turn_requests'] or '-':>6} {_times(f['turn_warm_cost_ratio'] if turned else None)} "
        f"{_times(f['turn_cold_cost_ratio'] if turned else None)} "
        f"{_cell(f['compress_ms_p50'], '.1f', 6)} {_cell(f['compress_ms_p95'], '.1f', 6)}"
    )


def print_table(rows: dict[str, Row], mode: str) -> Row:
    """The LoCoMo table, one row per conversation and provider, then the total; returns the total."""
    print(f"\nLoCoMo, through {mode}. Tokens: proxy.tokens estimates per question or neutral request.")
    print("recall: evidence turns kept / evidence turns; per-q: mean share kept per question; all-kept:")
    print("questions with all their evidence kept. facts: observation facts with an evidence sentence of")
    print(f"5+ words; coverage: of those, kept verbatim after a neutral last message ({NEUTRAL_MESSAGE!r}).")
    print("t-reqs: every user turn sent in order with Claude Code's cache markers; warm: its input cost")
    print("with the prompt cache warm (read 0.1, write 1.25), cold: its tokens, both forwarded over")
    print("original. ms: compress() alone, in-process, warm session, on every fifth Anthropic question,")
    print("timed on its own after the table's requests.\n")
    print(HEADER + "\n" + "-" * len(HEADER))
    for name, row in rows.items():
        print(row_text(name, row))
    print("-" * len(HEADER))
    summed = total(rows)
    print(row_text("LoCoMo total", summed))
    print(
        "\nEvidence recall by question category: "
        + ", ".join(
            f"{CATEGORIES.get(c, c)} {k / n:.1%} ({k}/{n})"
            for c, (k, n) in sorted(summed.by_category.items())
        )
    )
    return summed
