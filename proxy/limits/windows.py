"""The fixed windows limits count in: the minute, the UTC day and the UTC calendar month."""

from __future__ import annotations

import calendar
import time
from typing import Literal

Window = Literal["minute", "day", "month"]

DAY = 86400.0


def bounds(window: Window, now: float) -> tuple[float, float]:
    """Start and end (unix seconds) of the window that holds `now`.

    Fixed windows, not sliding ones: every instance agrees on a window from the clock alone, a
    counter is one integer per window, and "resets at" is a time a person can be told.
    """
    if window == "minute":
        start = now - now % 60
        return start, start + 60
    if window == "day":
        start = now - now % DAY
        return start, start + DAY
    moment = time.gmtime(now)
    start = calendar.timegm((moment.tm_year, moment.tm_mon, 1, 0, 0, 0))
    year, month = (moment.tm_year + 1, 1) if moment.tm_mon == 12 else (moment.tm_year, moment.tm_mon + 1)
    return float(start), float(calendar.timegm((year, month, 1, 0, 0, 0)))


def describe_reset(end: float, now: float) -> str:
    """When a window frees, for a person: "in 42 s" for the minute, a UTC time for days and months."""
    left = end - now
    if left < 120:
        return f"in {max(left, 0):.0f} s"
    return "at " + time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(end))
