"""`[server] workers = N`: N processes serve one port, the kernel spreading connections among them.

Each worker is a whole instance (its own sessions, writer, Redis client), bound with SO_REUSEPORT.
The parent serves nothing: it holds the port (bound, never listening, so the kernel gives it no
connections) so that port 0 names one port for all, starts the workers, logs `listening` once all
are, restarts one that dies, and on SIGTERM or Ctrl-C stops them all, each flushing its rows.
Workers are started with `spawn`, not `fork`, so none inherits the parent's threads or locks; each
asks the kernel for SIGTERM should the parent die without stopping them (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import multiprocessing
import queue
import signal
import socket
import sys
import time
from multiprocessing.process import BaseProcess
from typing import Any

import structlog

from .config import Config, LoggingConfig

log = structlog.get_logger("proxy")

STARTUP_TIMEOUT = 120.0  # a cold start loads the tokenizer and the sentence-vector table
RESTART_DELAY = 1.0
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

_SPAWN = multiprocessing.get_context("spawn")


def reserve_port(host: str, port: int) -> socket.socket:
    """Bind (never listen) the port the workers will share, so port 0 picks one for all of them and a
    port in use fails here, once, before any worker starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _die_with_parent() -> None:
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _name_worker_in_log_lines(index: int) -> None:
    """Every line says which worker wrote it (a bound context var would not do: each request's
    middleware clears those)."""
    from .logs import add_static_fields

    add_static_fields(worker=index)


def _worker_main(
    config: Config, logging_config: LoggingConfig, console: bool, index: int, ready: Any
) -> None:
    """A worker's process: the same serve() as a single instance, on the shared port."""
    _die_with_parent()
    import uvloop

    from .__main__ import serve
    from .logs import configure_logging

    configure_logging(logging_config, console=console)
    _name_worker_in_log_lines(index)
    uvloop.run(serve(config, None, ready=lambda: ready.put(index)))


class WorkerStartError(Exception):
    """A worker exited, or never said it was listening, while the proxy was starting."""


class Supervisor:
    """The parent of `workers` processes sharing one port."""

    def __init__(self, config: Config, logging_config: LoggingConfig, console: bool) -> None:
        self.config = config  # its port is the one reserved, never 0
        self.logging_config = logging_config
        self.console = console
        self._ready: Any = _SPAWN.Queue()  # each worker puts its index there once listening
        self._workers: dict[int, BaseProcess] = {}
        self._listening: set[int] = set()

    def _start(self, index: int) -> None:
        process = _SPAWN.Process(
            target=_worker_main,
            args=(self.config, self.logging_config, self.console, index, self._ready),
            name=f"vidurai-worker-{index}",
        )
        process.start()
        self._workers[index] = process
        self._listening.discard(index)

    def _drain_ready(self) -> None:
        with contextlib.suppress(queue.Empty):
            while True:
                self._listening.add(self._ready.get_nowait())

    async def start_all(self) -> None:
        """Start every worker and wait until each is listening."""
        for index in range(self.config.server.workers):
            self._start(index)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while waiting := set(self._workers) - self._listening:
            with contextlib.suppress(queue.Empty):
                self._listening.add(await asyncio.to_thread(self._ready.get, True, 0.2))
                continue
            for index in waiting:
                process = self._workers[index]
                if not process.is_alive():
                    raise WorkerStartError(
                        f"worker {index} exited with code {process.exitcode} while starting"
                    )
            if time.monotonic() > deadline:
                raise WorkerStartError(f"workers {sorted(waiting)} did not start in {STARTUP_TIMEOUT:.0f} s")

    async def watch(self, stop: asyncio.Event) -> None:
        """Until `stop`: restart a worker that died (killed, crashed) after it was listening; one
        that dies before is failing to start, and restarting it in a loop would only fill the log."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), RESTART_DELAY)
            if stop.is_set():
                return
            dead = [index for index, process in self._workers.items() if not process.is_alive()]
            self._drain_ready()
            for index in dead:
                process = self._workers[index]
                if index not in self._listening:
                    log.error("worker died starting; not restarted", worker=index, exitcode=process.exitcode)
                    del self._workers[index]
                    continue
                log.warning("worker exited; restarting it", worker=index, exitcode=process.exitcode)
                self._start(index)
            if not self._workers:
                log.error("no worker left: stopping")
                stop.set()

    async def stop_all(self) -> None:
        """SIGTERM to each worker (each flushes its rows and snapshots), then wait for them."""
        processes = [process for process in self._workers.values() if process.is_alive()]
        for process in processes:
            process.terminate()
        # A worker waits up to shutdown_timeout for an unwritable database, then gives up its rows.
        grace = self.config.storage.shutdown_timeout + 20
        for process in processes:
            await asyncio.to_thread(process.join, grace)
            if process.is_alive():
                log.error("worker did not stop; killing it", pid=process.pid)
                process.kill()
                await asyncio.to_thread(process.join, 5)
        self._ready.close()
