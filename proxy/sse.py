"""Incremental Server-Sent Events reading, for observing a stream that is forwarded untouched."""

from __future__ import annotations

from collections.abc import Iterator

import attrs


@attrs.define
class SSEEvent:
    event: str = "message"
    data: str = ""
    raw: bytes = b""  # the event's bytes as received, terminator included


def whole_events(chunk: bytes) -> bool:
    """Whether a chunk is made of complete \\n-terminated events (the usual shape upstream sends)."""
    return chunk.endswith(b"\n\n") and b"\r" not in chunk


class SSEDecoder:
    """Splits a byte stream into events; chunks may cut lines and UTF-8 characters anywhere.

    Works on bytes and decodes only complete lines, so a character split across two chunks is
    never seen half. Line endings may be \\n, \\r\\n or \\r (the SSE spec allows all three).
    """

    def __init__(self) -> None:
        self._pending = b""
        self._raw = bytearray()
        self._event = ""
        self._data: list[str] = []

    @property
    def idle(self) -> bool:
        """No partial line or event held: the next chunk starts a new event."""
        return not self._pending and not self._raw

    def feed(self, chunk: bytes) -> Iterator[SSEEvent]:
        """Events completed by this chunk, in order."""
        buffer = self._pending + chunk
        start = 0
        length = len(buffer)
        while start < length:
            newline = buffer.find(b"\n", start)
            carriage = buffer.find(b"\r", start, newline if newline >= 0 else length)
            if carriage >= 0:
                end = carriage
                if carriage + 1 == length:
                    break  # a \r at the end may be the first half of \r\n: wait for more
                after = carriage + 2 if buffer[carriage + 1 : carriage + 2] == b"\n" else carriage + 1
            elif newline >= 0:
                end, after = newline, newline + 1
            else:
                break
            line = buffer[start:end]
            self._raw += buffer[start:after]
            start = after
            event = self._line(line)
            if event is not None:
                yield event
        self._pending = buffer[start:]

    def _line(self, line: bytes) -> SSEEvent | None:
        if not line:  # a blank line ends an event; comment-only blocks come out with empty data
            event = SSEEvent(self._event or "message", "\n".join(self._data), bytes(self._raw))
            self._event, self._data = "", []
            self._raw.clear()
            return event
        if line.startswith(b":"):
            return None
        name, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            self._data.append(value.decode("utf-8", errors="replace"))
        elif name == b"event":
            self._event = value.decode("utf-8", errors="replace")
        return None

    def flush(self) -> bytes:
        """Bytes of an unfinished event at end of stream (a stream cut mid-event)."""
        rest = bytes(self._raw) + self._pending
        self._raw.clear()
        self._pending = b""
        return rest


def event_data(raw: bytes) -> str:
    """The data of one complete event whose lines end in \\n alone (see whole_events), as SSEDecoder
    gives it, without building a decoder and an event for it (half the CPU a stream's usage costs)."""
    data = []
    for line in raw.split(b"\n"):
        if line.startswith(b"data"):
            name, _, value = line.partition(b":")
            if name == b"data":
                data.append(value[1:] if value.startswith(b" ") else value)
    return b"\n".join(data).decode("utf-8", errors="replace")


def decode_event(raw: bytes) -> SSEEvent:
    """One complete event's bytes, parsed."""
    return next(iter(SSEDecoder().feed(raw)), SSEEvent(raw=raw))
