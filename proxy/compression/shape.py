"""What compression needs to know of a provider's message shape; each provider adapter supplies one.

Compression reads and rewrites a history without knowing whose it is: where tool calls and their
results sit, what the provider rejects and how a text is added to a message are asked of the
conversation shape (proxy/providers/anthropic_shape.py, proxy/providers/openai_shape.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:  # content.py reads messages through a shape: this module imports none of compression
    from .content import Piece

ProviderName = Literal["anthropic", "openai"]


class ConversationShape(Protocol):
    """How one provider's messages are read, paired, checked and written."""

    @property
    def name(self) -> ProviderName:
        """The provider's name: part of every chunk's key, and whose model a summary job asks."""

    def pieces(self, message: Any) -> list[Piece]:
        """The readable parts of a message, in order; thinking blocks are left out (never reused)."""

    def opened_ids(self, message: Any) -> list[str]:
        """Tool call ids this message opens (they must be answered by the next message or messages)."""

    def answered_ids(self, message: Any) -> list[str]:
        """Tool call ids this message answers."""

    def is_dependent(self, message: Any) -> bool:
        """A message that cannot start a window because it answers the one before it."""

    def is_instruction(self, message: Any) -> bool:
        """A system or developer message among the turns: kept as it is, never folded."""

    def problems(self, messages: list[dict[str, Any]]) -> list[str]:
        """Why the provider would reject this list of message objects (empty when it is valid)."""

    def rewrite_problem(self, original: list[Any], rewritten: list[Any]) -> str | None:
        """What a rewrite broke that the original kept and problems() cannot see, or None."""

    def with_tool_results(self, message: Any, change: Callable[[Any], Any]) -> Any:
        """The message with each tool result's content passed through `change`; the very same object
        when `change` returned every content unchanged."""

    def with_digests(self, out: list[Any], texts: list[str], folded: list[Any], kept: list[Any]) -> list[Any]:
        """`out` (the history up to the fold) followed by the digest texts, intro first; `folded` are
        the messages they stand for and `kept` those after them."""

    def with_text(self, message: Any, text: str) -> Any:
        """The message with one more text after its own (the recall block)."""
