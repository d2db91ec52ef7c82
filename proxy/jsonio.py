"""JSON on the request path: orjson for speed, the standard library for what orjson refuses.

JSON allows a lone surrogate (half an emoji, `"\\ud83d"`) and UTF-8 cannot encode one: orjson
rejects it both ways, so those rare bodies take the slower standard path and still pass through.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def loads(raw: bytes | bytearray | str) -> Any:
    """Parse JSON; raises ValueError (json's message) when it is not JSON."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON, escaped to ASCII only when it holds a lone surrogate (or an integer past
    64 bits), so a rewritten body reaches upstream as the client wrote it."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        return json.dumps(value, separators=(",", ":")).encode("ascii")
