"""The digest of a folded chunk: verbatim lines of its messages, a pure function of them.

Every line of a digest was written by someone in the chunk: whole sentences of what people said,
tool calls exactly as made, and the telling lines of tool output. Nothing is paraphrased or
stripped of words, so the model reads only text that was really in its conversation, and every
proxy instance writes the same bytes for the same chunk.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from .keylines import key_lines
from .shape import ConversationShape
from .structure import role
from .text import SPEAKER, STOPWORDS, dates, said, sentences

# A sentence is quoted when its quote_score reaches this: it names, counts, dates or decides
# something. Greetings, reactions and small talk fall below it (see importance()).
KEEP_IMPORTANCE = 0.6
# A speaker telling about themselves ("I moved to...", "our team decided...") is what a reader
# should retain; a question tells nothing yet. On LoCoMo (bench/compression.py) these two moved the
# share of observation facts still quoted after folding from 27% to 30% at the same digest size.
FIRST_PERSON_BONUS = 0.05
QUESTION_PENALTY = 0.1
# Shorter sentences say too little to be worth a line ("Sounds great!", "Me too.").
MIN_WORDS = 5
# Sentences an assistant's reasoning keeps from its start when it made a tool call: what it set
# out to do, in its own words.
REASONING_SENTENCES = 1
# Besides those, the best sentences of a text quoted when worth it: one per text block says what a
# turn was about at about half the tokens of every sentence above the bar (LoCoMo: facts 30% vs 24%
# of observation facts at a 9% vs 8% digest).
SENTENCES_PER_TEXT = 1
# A tool call's input longer than this (a whole file written by a heredoc) is quoted head and tail.
CALL_MAX_CHARS = 6000
# A text block that is only a dated header ("[Session 3, 8 May 2023]") is quoted when this short.
HEADER_MAX_WORDS = 12

_NUMBER = re.compile(r"\d")
_FIRST_PERSON = re.compile(r"\b(?:i|i'm|i've|i'd|i'll|my|we|our|me)\b", re.IGNORECASE)
_PROPER = re.compile(r"(?<![.!?]\s)(?<!^)\b[A-Z][a-z]+")
_DECISION = re.compile(
    r"\b(decid|agree|plan|will|going to|must|need|should|promis|bought|moved|start|finish|chose|choose|"
    r"adopt|married|born|died|job|work|school|study|learn|fix|bug|error|fail|deploy|install|version|"
    r"deadline|meeting|birthday|trip|travel|visit)",
    re.IGNORECASE,
)
_FILLER = re.compile(
    r"^(hey|hi|hello|thanks|thank you|wow|cool|great|awesome|nice|sounds|that's|lol|haha|"
    r"bye|see you|take care|omg|aw+|yeah|yes|sure|ok|okay)\b",
    re.IGNORECASE,
)


def importance(text: str) -> float:
    """How much a text matters, from 0.1 to 1.0: numbers, dates, names and decisions up, filler down."""
    words = text.split()
    content = sum(1 for w in words if w.lower().strip(".,!?;:'\"") not in STOPWORDS)
    score = 0.3 + min(content, 12) * 0.02
    if _NUMBER.search(text):
        score += 0.15
    if dates(text):
        score += 0.1
    score += min(len(_PROPER.findall(text)), 3) * 0.05
    if _DECISION.search(text):
        score += 0.1
    if "?" in text:
        score += 0.05
    if _FILLER.match(SPEAKER.sub("", text.strip(), count=1)) and content < 8:
        score -= 0.25
    return round(min(max(score, 0.1), 1.0), 3)


def quote_score(sentence: str) -> float:
    """How much a sentence is worth quoting in a digest: its importance, first person up, questions down."""
    score = importance(sentence)
    if _FIRST_PERSON.search(sentence):
        score += FIRST_PERSON_BONUS
    if "?" in sentence:
        score -= QUESTION_PENALTY
    return score


@functools.lru_cache(maxsize=65536)  # asked of every old unit on every request of a session
def is_header(text: str) -> bool:
    """A short text that dates what follows it ("[Session 3, 8 May 2023]"): quoted whole, alone."""
    return bool(dates(text)) and len(text.split()) <= HEADER_MAX_WORDS


def _prose(text: str, reasoning: bool) -> str | None:
    """The sentences of a text worth quoting, verbatim, " … " where sentences were skipped."""
    found = sentences(text)
    scores = [quote_score(s) if len(s.split()) >= MIN_WORDS else 0.0 for s in found]
    # The best ones first; ties go to the earlier sentence, so the choice is fully deterministic.
    best = sorted(range(len(found)), key=lambda i: (-scores[i], i))[:SENTENCES_PER_TEXT]
    kept = [
        i
        for i in range(len(found))
        if (reasoning and i < REASONING_SENTENCES) or (i in best and scores[i] >= KEEP_IMPORTANCE)
    ]
    if not kept:
        return None
    parts: list[str] = ["…"] if kept[0] else []
    for position, i in enumerate(kept):
        if position and i != kept[position - 1] + 1:
            parts.append("…")
        parts.append(found[i])
    return " ".join(parts)


def _call(text: str) -> str:
    if len(text) <= CALL_MAX_CHARS:
        return text
    half = CALL_MAX_CHARS // 2
    return f"{text[:half]} [… {len(text) - 2 * half} chars …] {text[-half:]}"


def message_lines(shape: ConversationShape, message: Any) -> list[str]:
    """The digest lines of one message: quoted prose, calls as made, tool output's key lines."""
    speaker = role(message) or "message"
    found = shape.pieces(message)
    reasoning = any(p.kind == "tool_use" for p in found)
    lines: list[str] = []
    for piece in found:
        if piece.kind == "tool_use":
            lines.append(f"{speaker} called {_call(piece.text)}")
        elif piece.kind == "tool_result":
            kept = key_lines(piece.text)
            lines.append("tool result:" + ("\n" + "\n".join(kept) if kept else " (empty)"))
        elif piece.kind == "attachment":
            lines.append(f"{speaker}: {piece.text}")
        elif is_header(piece.text):
            lines.append(f"({dates(piece.text)[-1]})")  # the date it gives, as the recall block writes it
        else:
            quoted = _prose(piece.text, reasoning and not lines)
            if quoted:
                lines.append(said(speaker, quoted))
    return lines


def digest(shape: ConversationShape, messages: list[Any]) -> str:
    """The verbatim digest of a chunk of messages, in order (the intro says messages are left out)."""
    return "\n".join(line for message in messages for line in message_lines(shape, message)) or "…"
