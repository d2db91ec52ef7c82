"""Provider adapters: everything that differs between Anthropic and OpenAI lives here."""

from .anthropic import Anthropic
from .base import Provider, UsageObserver
from .openai import OpenAI

__all__ = ["Anthropic", "OpenAI", "Provider", "UsageObserver"]
