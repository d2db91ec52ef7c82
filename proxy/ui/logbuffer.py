"""A logging handler that keeps the latest warnings for the terminal dashboard to show."""

from __future__ import annotations

import collections
import logging
import threading

import attrs

# Keys every structlog event carries; the dashboard line already shows time and level.
_NOISE = frozenset({"event", "timestamp", "level", "logger", "exc_info", "stack_info"})


@attrs.frozen
class WarningLine:
    """One log record at warning level or above, formatted once when it was logged."""

    created: float  # unix seconds
    level: str
    text: str


def format_record(record: logging.LogRecord) -> str:
    """`event key=value ...` for a structlog record, `logger: message` for a stdlib one."""
    if isinstance(record.msg, dict):
        # structlog's wrap_for_formatter hands the processed event dict over as the message,
        # secrets already redacted by the shared processors. Our event names say where they
        # come from (storage.unwritable), so the logger name is left out to save width.
        event = record.msg
        parts = [str(event.get("event", ""))]
        parts += [f"{key}={value}" for key, value in event.items() if key not in _NOISE]
        text = " ".join(part for part in parts if part)
    else:
        text = record.getMessage()
        if record.name and record.name != "root":
            text = f"{record.name}: {text}"
    if record.exc_info and record.exc_info[1] is not None:
        exc = record.exc_info[1]
        text += f" ({type(exc).__name__}: {exc})"
    return text


class WarningBuffer(logging.Handler):
    """Keeps the last `capacity` records at `level` or above; install it on the root logger."""

    def __init__(self, capacity: int = 50, level: int = logging.WARNING) -> None:
        super().__init__(level)
        self._lines: collections.deque[WarningLine] = collections.deque(maxlen=capacity)
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = WarningLine(
                created=record.created, level=record.levelname, text=" ".join(format_record(record).split())
            )
        except Exception:  # a logging handler must never raise into the code that logged
            self.handleError(record)
            return
        with self._guard:
            self._lines.append(line)

    def lines(self) -> list[WarningLine]:
        """The kept lines, oldest first."""
        with self._guard:
            return list(self._lines)
