"""Vidurai Proxy: a transparent proxy for the Anthropic and OpenAI APIs that compresses long conversations."""

__version__ = "0.1.0"
