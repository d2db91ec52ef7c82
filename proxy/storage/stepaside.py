"""The event loop stepping aside, in short slices, for a thread that needs the GIL to catch up.

The GIL goes back to a thread that releases it and takes it straight again, and an event loop that
is never idle does that between every two callbacks: a thread waiting for the GIL is woken each
time, finds it taken, and waits again, for seconds (it forces a switch only when the holder kept
the GIL for 5 ms without a release). The writer thread committed nothing in 30 s so
(bench/writer_rate.py's busy loop). While the thread is late, the loop blocks for a slice in a wait
that releases the GIL without racing for it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

# A slice of at most SLICE in every CHECK: the thread gets the GIL uncontended for up to a sixth
# of the time (30-38k rows/s into SQLite against a loop that never waits), and no pause exceeds
# the few milliseconds one request may delay others by.
CHECK = 0.025
SLICE = 0.005


class StepAside:
    """Gives `thread` slices of the loop while `late()` says it is behind and it uses them."""

    def __init__(self, thread: threading.Thread, late: Callable[[], bool], rest: float) -> None:
        self._late = late
        self._rest = rest
        self._cpu = _thread_cpu_clock(thread)
        # Set by the thread when it has got something done: the slice ends there.
        self.progress = threading.Event()
        self.yielded_s = 0.0

    async def run(self) -> None:
        """Until cancelled, on the event loop."""
        rest_until = 0.0
        while True:
            await asyncio.sleep(CHECK)
            if time.monotonic() < rest_until or not self._late():
                continue
            cpu_before = self._cpu() if self._cpu is not None else 0.0
            started = time.perf_counter()
            self.progress.clear()
            self.progress.wait(SLICE)  # blocks the loop: that is the point
            self.yielded_s += time.perf_counter() - started
            if self._cpu is not None and self._cpu() - cpu_before < SLICE / 10:
                # It did not run: it waits on something else (a lock, a slow server), not the GIL.
                # Serve on for a while before offering another slice.
                rest_until = time.monotonic() + self._rest


def _thread_cpu_clock(thread: threading.Thread) -> Callable[[], float] | None:
    """The CPU seconds `thread` has used so far; None where the platform cannot tell."""
    try:
        assert thread.ident is not None
        clock = time.pthread_getcpuclockid(thread.ident)
    except (AttributeError, OSError):
        return None

    def used() -> float:
        try:
            return time.clock_gettime(clock)
        except OSError:  # the thread has ended
            return 0.0

    return used
