"""The digest of a folded chunk: a pure function of its messages, so every instance writes the same bytes."""

from __future__ import annotations

import re
from typing import Any

from ..tokens import count_text
from .content import pieces
from .structure import Provider, role
from .text import STOPWORDS, dates, sentences, telegraph

# A digest costs about this share of its chunk's tokens (plus a short header). Half of the 3% it once
# had: on LoCoMo the lost lines answered no question that the verbatim recall did not, and the
# tokens saved are better spent on recall (bench/compression.py).
DIGEST_RATIO = 0.015
DIGEST_MIN_TOKENS = 12
SENTENCE_MAX_WORDS = 14
TOOL_LINE_CHARS = 90

_NUMBER = re.compile(r"\d")
_SPEAKER = re.compile(r"^[A-Z][\w .'-]{0,30}:\s+")  # "Caroline: ..." in a pasted transcript
_DATE_ONLY = re.compile(r"\b(?:session\s+\d+|\d{1,2}:\d{2}\s*(?:am|pm)?)\b", re.IGNORECASE)
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
    if _FILLER.match(_SPEAKER.sub("", text.strip(), count=1)) and content < 8:
        score -= 0.25
    return round(min(max(score, 0.1), 1.0), 3)


def _short(text: str, limit: int) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _candidates(provider: Provider, messages: list[Any]) -> list[tuple[int, float, str]]:
    """(message index, score, digest line) for everything the digest could say, in order."""
    found: list[tuple[int, float, str]] = []
    seen: set[str] = set()
    for index, message in enumerate(messages):
        for piece in pieces(provider, message):
            if piece.kind == "tool_use":
                found.append((index, 2.0, "called " + _short(piece.text, TOOL_LINE_CHARS)))
            elif piece.kind == "tool_result":
                lines = piece.text.count("\n") + 1
                head = _short(piece.text, TOOL_LINE_CHARS // 2)
                found.append((index, 0.9, f"result ({lines} lines): {head}"))
            elif piece.kind == "attachment":
                found.append((index, 1.5, piece.text))
            else:
                for sentence in sentences(piece.text):
                    undated = _DATE_ONLY.sub(" ", sentence)
                    for date in dates(sentence):
                        undated = undated.replace(date, " ")
                    short = telegraph(undated, SENTENCE_MAX_WORDS)
                    # A bare date or name says nothing the header does not; a repeat says nothing new.
                    if len(short.split()) >= 2 and short.lower() not in seen:
                        seen.add(short.lower())
                        found.append((index, importance(sentence), short))
    return found


def digest(provider: Provider, messages: list[Any]) -> str:
    """A compact, deterministic summary of a chunk of messages: its dates, then its key sentences."""
    found = _candidates(provider, messages)
    original = sum(count_text(p.text) for m in messages for p in pieces(provider, m))
    budget = max(DIGEST_MIN_TOKENS, int(original * DIGEST_RATIO))
    chosen: set[int] = set()
    spent = 0
    # Highest importance first; ties go to the earlier line so the choice is fully deterministic.
    for position in sorted(range(len(found)), key=lambda k: (-found[k][1], k)):
        cost = count_text(found[position][2]) + 1
        if spent + cost > budget:
            continue
        chosen.add(position)
        spent += cost
    seen_dates: list[str] = []
    for message in messages:
        for piece in pieces(provider, message):
            for date in dates(piece.text):
                if date not in seen_dates:
                    seen_dates.append(date)
    # The header is the chunk's dates only: in a 20-message chunk a "#1-20" range costs as much as
    # its digest lines, and neither the model nor the recall block needs message numbers.
    lines = [f"[{'; '.join(seen_dates[:3])}]"] if seen_dates else []
    current = -1
    for position in sorted(chosen):
        index, _, line = found[position]
        if index != current:
            lines.append(f"{role(messages[index]) or 'message'}: {line}")
            current = index
        else:
            lines[-1] += "; " + line
    return "\n".join(lines) or "[…]"  # a text block can't be empty
