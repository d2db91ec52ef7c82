"""Measures every data set shares: validity of a forwarded request, and the text a request holds."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from proxy.compression.shape import ConversationShape
from proxy.compression.structure import problems
from proxy.providers import Anthropic, OpenAI

SHAPES: dict[str, ConversationShape] = {"anthropic": Anthropic.shape, "openai": OpenAI.shape}


def valid(provider: str, original: dict[str, Any], forwarded: dict[str, Any]) -> bool:
    """Valid for the provider, and everything but the messages unchanged."""
    rest = {k: v for k, v in original.items() if k != "messages"}
    return rest == {k: v for k, v in forwarded.items() if k != "messages"} and not problems(
        SHAPES[provider], forwarded.get("messages")
    )


def strings(value: Any) -> Iterator[str]:
    """Every string in a JSON value (where an identifier or a turn's text can appear)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def text_of(value: Any) -> str:
    """All strings of a JSON value, one per line."""
    return "\n".join(strings(value))


def squeezed(text: str) -> str:
    """Lower case without whitespace: how verbatim presence is tested, ignoring case and spacing."""
    return "".join(text.lower().split())


def ratio(part: float, whole: float) -> float:
    return part / whole if whole else 0.0
