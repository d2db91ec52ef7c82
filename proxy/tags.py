"""X-Vidurai-Tags: `team=payments, user=alice` on a request, kept with its metrics row (never forwarded)."""

from __future__ import annotations

import re
from collections.abc import Iterable

TAGS_HEADER = "X-Vidurai-Tags"
MAX_HEADER_CHARS = 1024
MAX_TAGS = 16
# Keys are identifiers; values also allow what user names and e-mail addresses contain.
_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_VALUE = re.compile(r"^[A-Za-z0-9_.@:/+-]{1,128}$")
GRAMMAR = "comma-separated key=value pairs (key: letters, digits, _ . -; value also @ : / +)"


def parse_tags(headers: Iterable[str]) -> dict[str, str] | None:
    """The tags of every X-Vidurai-Tags header of a request, or None without one.

    Strict: a malformed pair, a repeated key, or more than MAX_TAGS tags raises ValueError with a
    message for the client, so that a typo never splits one team's costs in two.
    """
    raw = ", ".join(headers)
    if not raw.strip():
        return None
    if len(raw) > MAX_HEADER_CHARS:
        raise ValueError(f"longer than {MAX_HEADER_CHARS} characters")
    tags: dict[str, str] = {}
    for pair in raw.split(","):
        key, equals, value = (part.strip() for part in pair.partition("="))
        if not equals or not _KEY.match(key) or not _VALUE.match(value):
            raise ValueError(f"{pair.strip()!r} is not a valid tag; expected {GRAMMAR}")
        if key in tags:
            raise ValueError(f"tag {key!r} is given twice")
        tags[key] = value
    if len(tags) > MAX_TAGS:
        raise ValueError(f"more than {MAX_TAGS} tags")
    return tags


def parse_filter(raw: str) -> tuple[str, str]:
    """A `key=value` filter (export --tag, /metrics.json?tag=), checked like a header's tag."""
    key, equals, value = (part.strip() for part in raw.partition("="))
    if not equals or not _KEY.match(key) or not _VALUE.match(value):
        raise ValueError(f"{raw!r} is not a tag; expected key=value ({GRAMMAR})")
    return key, value
