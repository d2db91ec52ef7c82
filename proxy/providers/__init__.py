"""Provider adapters: everything that differs between Anthropic and OpenAI lives here (the message
shapes compression reads and writes too: *_shape.py)."""

from .anthropic import Anthropic
from .base import Provider, UsageObserver
from .openai import OpenAI

__all__ = ["Anthropic", "OpenAI", "Provider", "UsageObserver"]
