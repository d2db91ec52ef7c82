"""Input cost of a session's requests under Claude's prompt cache, played request by request.

The model of ../shared/datasets/README.md: a request is a sequence of blocks (the tools, the system
blocks, then each message's content blocks in order). An entry is written at each `cache_control`
breakpoint; a request reads the longest prefix an earlier request of the session wrote at a
breakpoint, writes from there to its last breakpoint, and pays the full input price after it.
Blocks are compared by their canonical JSON without `cache_control`, so one changed block breaks
the prefix from there on. Tokens are proxy.tokens estimates, and a request's blocks sum to
`estimate_request` of it, so a request with no breakpoint costs exactly its token count.

Left out on purpose: Claude's minimum cacheable prefix (1024 tokens on Sonnet), its 20-block
look-back and the cache lifetime (the steps of a session are seconds apart).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import attrs

from proxy.tokens import MESSAGE_OVERHEAD_TOKENS, count_block, count_content, count_text

# Anthropic's prices relative to the base input price (docs: "Prompt caching", pricing table):
# cache hits cost 0.1x, 5-minute cache writes 1.25x.
READ_PRICE = 0.1
WRITE_PRICE = 1.25
# The breakpoint Claude Code sets (on its system prompt and on the last block of the last message).
EPHEMERAL = {"type": "ephemeral"}


@attrs.frozen
class Block:
    """One cacheable unit of a request: its identity, its tokens, whether a breakpoint ends on it."""

    key: str
    tokens: int
    breakpoint: bool


def _canonical(value: Any) -> str:
    """A block's identity: its JSON with sorted keys and without `cache_control`."""
    if isinstance(value, dict):
        value = {k: v for k, v in value.items() if k != "cache_control"}
        if all(isinstance(v, str) for v in value.values()):  # text, tool results: no JSON needed
            return "\x00".join(f"{k}={value[k]}" for k in sorted(value))
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _marked(value: Any) -> bool:
    return isinstance(value, dict) and "cache_control" in value


def blocks(body: dict[str, Any]) -> Iterator[Block]:
    """The blocks of an Anthropic Messages request in cache order: tools, system, messages."""
    tools = body.get("tools")
    if tools:
        yield Block(
            "tools:" + _canonical([_canonical(t) for t in tools]),
            count_text(json.dumps(tools, ensure_ascii=False, sort_keys=True)),
            any(_marked(t) for t in tools),
        )
    system = body.get("system")
    if isinstance(system, str):
        yield Block("system:" + system, count_content(system), False)
    elif isinstance(system, list):
        for item in system:
            yield Block("system:" + _canonical(item), count_block(item), _marked(item))
    for message in body.get("messages") or ():
        content = message.get("content")
        items = [content] if isinstance(content, str) else list(content or ())
        overhead = MESSAGE_OVERHEAD_TOKENS  # the message's framing rides on its first block
        for index, item in enumerate(items):
            key = f"{message.get('role')}:{index}:{_canonical(item)}"
            yield Block(key, overhead + count_block(item), _marked(item))
            overhead = 0
        if not items:
            yield Block(f"{message.get('role')}:empty", overhead, False)


@attrs.frozen
class Cost:
    """One request: its tokens, and its input cost in full-price tokens with the cache warm."""

    tokens: int
    warm: float


@attrs.define
class PromptCache:
    """The cache entries one session has written so far: a hash of each prefix ending at a breakpoint."""

    entries: set[bytes] = attrs.Factory(set)

    def play(self, body: dict[str, Any]) -> Cost:
        """Price one request against the entries of the earlier ones, then write its own."""
        sizes: list[int] = []
        read_blocks = last_breakpoint = 0
        written: list[bytes] = []
        digest = hashlib.blake2b(digest_size=16)
        for index, block in enumerate(blocks(body), start=1):
            digest.update(block.key.encode("utf-8", "surrogatepass") + b"\x00")
            prefix = digest.copy().digest()
            sizes.append(block.tokens)
            if prefix in self.entries:
                read_blocks = index
            if block.breakpoint:
                last_breakpoint = index
                written.append(prefix)
        self.entries.update(written)
        write_end = max(read_blocks, last_breakpoint)
        read = sum(sizes[:read_blocks])
        write = sum(sizes[read_blocks:write_end])
        rest = sum(sizes[write_end:])
        return Cost(read + write + rest, READ_PRICE * read + WRITE_PRICE * write + rest)
