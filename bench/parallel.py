"""Independent parts of a run in forked processes: compress() is CPU-bound Python, so processes, not
threads. The jobs are inherited through the fork, not pickled; only their results come back."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

# The jobs of the pool being run: set before it forks, so each child finds them by index.
_JOBS: list[Callable[[], Any]] = []


def _run(index: int) -> Any:
    return _JOBS[index]()


def run_all(jobs: list[Callable[[], Any]], workers: int) -> list[Any]:
    """Each job's result, in order: in this process when `workers` is 1 (or one job), else in up to
    `workers` forked processes."""
    if workers <= 1 or len(jobs) <= 1:
        return [job() for job in jobs]
    global _JOBS
    _JOBS = jobs
    # Recall's Hugging Face tokenizer warns, and turns its own threads off, in a forked child.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=context) as pool:
            return list(pool.map(_run, range(len(jobs))))
    finally:
        _JOBS = []
