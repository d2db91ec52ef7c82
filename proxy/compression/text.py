"""Text helpers shared by the digest and the recall index: terms, sentences, dates, hashes."""

from __future__ import annotations

import functools
import hashlib
import json
import re
from typing import Any

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])|\n+")
_MONTHS = (
    "january|february|march|april|may|june|july|august|september|october|november|december|"
    "jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec"
)
# Day-month-year, month-day-year and ISO dates: what people and tools write in conversations.
_DATE = re.compile(
    rf"\b(?:\d{{1,2}}(?:st|nd|rd|th)?\s+(?:{_MONTHS})\.?,?\s+\d{{4}}"
    rf"|(?:{_MONTHS})\.?\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}}"
    rf"|\d{{4}}-\d{{2}}-\d{{2}})\b",
    re.IGNORECASE,
)

_YEAR = re.compile(r"\d{4}")
# "Caroline: ..." in a pasted transcript: the text names its own speaker.
SPEAKER = re.compile(r"^[A-Z][\w .'-]{0,30}:\s+")

STOPWORDS = frozenset(
    """
a about above after again against all am an and any are aren't as at be because been before being
below between both but by can can't cannot could couldn't did didn't do does doesn't doing don't down
during each few for from further had hadn't has hasn't have haven't having he he'd he'll he's her here
here's hers herself him himself his how how's i i'd i'll i'm i've if in into is isn't it it's its itself
let's me more most mustn't my myself nor of off on once only or other ought our ours ourselves out over
own same shan't she she'd she'll she's should shouldn't so some such than that that's the their theirs
them themselves then there there's these they they'd they'll they're they've this those through to too
under until up very was wasn't we we'd we'll we're we've were weren't what what's when when's where
where's which while who who's whom why why's with won't would wouldn't you you'd you'll you're you've
your yours yourself yourselves s t d ll m re ve just also really yeah yes oh ok okay hey hi hello wow
thanks thank lot much like got get gets will going go goes went gone been sure well lol haha
""".split()
)

# Truncating stems to five letters conflates more variants than the stemmer alone; measured on
# LoCoMo it found about one more evidence turn in a hundred at the same budget.
TERM_LETTERS = 5

# Words that carry meaning even though they are short and common: never dropped from a digest.
KEEP_WORDS = frozenset("no not never don't didn't won't can't isn't wasn't without".split())


def sha(text: str) -> str:
    """Hex sha256 of a text: stable across processes and proxy instances."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def canonical(value: Any) -> str:
    """A canonical JSON text of a value, so equal messages hash alike whatever their key order."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


@functools.lru_cache(maxsize=200_000)
def stem(word: str) -> str:
    """A light suffix stripper: enough for 'researching' to meet 'research' and 'kids' to meet 'kid'."""
    if word.isdigit() or len(word) <= 3:
        return word
    for suffix, keep in (
        ("ingly", 4),
        ("ing", 4),
        ("edly", 4),
        ("ied", 3),
        ("ies", 3),
        ("ed", 4),
        ("ly", 4),
        ("es", 4),
        ("s", 3),
    ):
        if word.endswith(suffix) and len(word) - len(suffix) >= keep:
            base = word[: -len(suffix)]
            if suffix in ("ies", "ied"):
                return base + "y"
            if suffix == "s" and word.endswith(("ss", "us", "is")):
                return word
            if suffix == "es" and not base.endswith(("ch", "sh", "x", "ss", "z")):
                return base + "e" if not base.endswith("e") else base
            if len(base) >= 3 and base[-1] == base[-2] and base[-1] not in "lsz":
                base = base[:-1]  # running -> run
            return base
    return word


def term(word: str) -> str:
    """The index term of a word: stemmed, then cut to five letters so 'paintings' meets 'painter'."""
    return word if word.isdigit() else stem(word.replace("'", ""))[:TERM_LETTERS]


@functools.lru_cache(maxsize=100_000)
def terms(text: str) -> tuple[str, ...]:
    """Index terms of a text: lowercase words without stopwords, stemmed and truncated."""
    return tuple(term(w) for w in _WORD.findall(text.lower()) if w not in STOPWORDS)


def said(role: str, text: str) -> str:
    """A quoted line with who said it: the text's own "Name: " when it has one, else its role."""
    return text if SPEAKER.match(text) else f"{role}: {text}"


def sentences(text: str) -> list[str]:
    """A text cut into sentences and lines, blanks dropped."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]


def dates(text: str) -> list[str]:
    """Calendar dates written in a text, in order of appearance."""
    if not _YEAR.search(text):  # the full pattern is slow on long tool output; every date has a year
        return []
    return [m.group(0) for m in _DATE.finditer(text)]


def telegraph(sentence: str, max_words: int) -> str:
    """A sentence without its filler words, for the digest: names, numbers and content words stay."""
    out: list[str] = []
    for raw in sentence.split():
        word = raw.strip(".,;:!?\"'()[]{}")
        if not word:
            continue
        lower = word.lower()
        if lower in KEEP_WORDS or lower not in STOPWORDS:
            out.append(word)
        if len(out) >= max_words:
            break
    return " ".join(out)
