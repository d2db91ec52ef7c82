"""Next-action support: the identifiers of the command an agent ran next that only older history held,
and how many of them a forwarded request still holds (../shared/datasets/README.md)."""

from __future__ import annotations

import keyword
import re
from typing import Any

import attrs

from .measures import text_of

# The README's definition: "the last six messages" hold what the agent just saw.
RECENT_MESSAGES = 6

# Commands and words of the shell and of the Python one-liners agents run; they name no project thing.
SHELL_WORDS = frozenset(
    """grep egrep sed awk cat echo head tail find xargs sort uniq less more python python3 pip bash
    true false then else elif done while until case esac function exit sudo chmod touch mkdir rmdir
    cp mv rm ls cd pwd wc diff patch git nl tee printf read test export source env time timeout
    perl print self none null test""".split()
) | frozenset(w.lower() for w in keyword.kwlist)
# In this order, each match masked before the next pattern looks: a path is one identifier, not
# its parts. Paths have a slash; dotted names a dot between names; plain identifiers 4+ characters
# (not an option like --include); numbers 2+ digits (line numbers like the 225 of sed -n '210,225p').
IDENTIFIER_PATTERNS = (
    re.compile(r"(?:[\w.-]*/)+[\w.-]*\w"),
    re.compile(r"\b[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+\b"),
    re.compile(r"(?<![\w-])[A-Za-z_]\w{3,}\b"),
    re.compile(r"(?<![\w.])\d{2,}(?!\d)"),
)


def identifiers(command: str) -> set[str]:
    """Paths, dotted names, identifiers of 4+ characters and numbers of 2+ digits in a command."""
    found: set[str] = set()
    for pattern in IDENTIFIER_PATTERNS:
        for match in pattern.finditer(command):
            found.add(match.group().strip("./-") or match.group())
        command = pattern.sub(lambda m: " " * len(m.group()), command)
    return {i for i in found if i.lower() not in SHELL_WORDS and len(i) >= 2}


def _word_character(text: str, index: int) -> bool:
    return 0 <= index < len(text) and (
        text[index] == "_" or (text[index].isascii() and text[index].isalnum())
    )


def occurs(identifier: str, text: str) -> bool:
    """The identifier appears in the text, not as part of a longer word or number."""
    start = text.find(identifier)
    while start != -1:
        if not _word_character(text, start - 1) and not _word_character(text, start + len(identifier)):
            return True
        start = text.find(identifier, start + 1)
    return False


def old_only(command: str, body: dict[str, Any]) -> set[str]:
    """The next command's identifiers that only older history holds: present in the request outside
    its last six messages and its system prompt, absent from both of those."""
    messages = body["messages"]
    old = text_of(messages[:-RECENT_MESSAGES])
    seen = text_of([body.get("system"), messages[-RECENT_MESSAGES:]])
    return {i for i in identifiers(command) if occurs(i, old) and not occurs(i, seen)}


@attrs.define
class Support:
    """Next-action support summed over steps: identifiers kept, and steps with every one kept."""

    identifiers: int = 0
    kept: int = 0
    steps: int = 0  # steps with at least one identifier only older history held
    full: int = 0

    def add(self, needed: frozenset[str], forwarded: dict[str, Any]) -> None:
        """One step: how many of the identifiers it needs the forwarded request still holds."""
        if not needed:
            return
        text = text_of(forwarded.get("messages"))
        kept = sum(occurs(i, text) for i in needed)
        self.identifiers += len(needed)
        self.kept += kept
        self.steps += 1
        self.full += kept == len(needed)
