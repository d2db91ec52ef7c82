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

# The loop checks every CHECK whether the thread is late; while it is, the loop alternates SLICE
# stepped aside with SLICE of its own work, so the thread gets about half the time, and no pause
# exceeds the few milliseconds one request may delay others by. A late thread is caught up within
# a pass (the writer needs about 5% of a core at the proxy's peak rate), so the halving lasts that
# long. One slice in every 25 ms gave the writer 5,700 rows/s against a loop that never waits,
# 1.6x the proxy's peak (make bench); alternating gives it half its idle rate.
CHECK = 0.025
SLICE = 0.005
# Slices in a row the thread did not use before the loop rests: a PostgreSQL writer spends whole
# slices waiting on its server now and then (one idle slice at a time, then a rest, held it to
# 8,500 rows/s against a busy loop), while a lock it waits for goes on for many.
IDLE_SLICES = 3


class StepAside:
    """Gives `thread` slices of the loop while `late()` says it is behind and it uses them."""

    def __init__(self, thread: threading.Thread, late: Callable[[], bool], rest: float) -> None:
        self._late = late
        self._rest = rest
        self._cpu = _thread_cpu_clock(thread)
        # Set by the thread when it has caught up (its pass is over): the slice ends there.
        self.progress = threading.Event()
        self.yielded_s = 0.0

    async def run(self) -> None:
        """Until cancelled, on the event loop."""
        rest_until = 0.0
        stepping = False
        idle = 0
        while True:
            await asyncio.sleep(SLICE if stepping else CHECK)
            stepping = time.monotonic() >= rest_until and self._late()
            if not stepping:
                idle = 0
                continue
            cpu_before = self._cpu() if self._cpu is not None else 0.0
            started = time.perf_counter()
            self.progress.clear()
            self.progress.wait(SLICE)  # blocks the loop: that is the point
            self.yielded_s += time.perf_counter() - started
            used = self._cpu() - cpu_before if self._cpu is not None else SLICE
            idle = idle + 1 if used < SLICE / 10 else 0
            if idle >= IDLE_SLICES:
                # It does not run: it waits on something else (a lock, a slow server), not the GIL.
                # Serve on for a while before offering another slice.
                rest_until = time.monotonic() + self._rest
                stepping = False


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
