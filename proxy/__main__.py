"""`vidurai-proxy` (or `python -m proxy`): start the proxy in the foreground until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import attrs
import structlog
import uvloop

from . import heap
from .admin import exposure_warning
from .app import create_app, start_server
from .config import Config, ConfigError, LoggingConfig, load_config
from .keys import STORE
from .logs import configure_logging
from .storage import is_postgresql, open_store
from .ui.terminal import TerminalUI, WarningBuffer, should_show
from .workers import Supervisor, WorkerStartError, reserve_port

# Where logs go while the live dashboard owns the terminal and [logging] file is empty: beside
# the database, which is where the config put this instance's files.
UI_LOG_FILE = "vidurai.log"


def _files_folder(config: Config) -> Path:
    """Beside the SQLite database; the configuration file's folder when the database is a server."""
    if is_postgresql(config.storage.database):
        return Path(config.source).parent if config.source and Path(config.source).is_file() else Path.cwd()
    return Path(config.storage.database).parent


async def serve(config: Config, ui: TerminalUI | None, ready: Callable[[], None] | None = None) -> None:
    """One instance until SIGINT or SIGTERM. With `ready` it is one of `[server] workers`: it shares
    the port and calls `ready` once listening, and its parent logs `listening` for all of them."""
    log = structlog.get_logger("proxy")
    app = create_app(config)
    runner, port = await start_server(
        app, config.server.host, config.server.port, reuse_port=ready is not None
    )
    heap.settle()  # startup's objects are there for good: the collector stops walking them
    if ready is None:
        url = _announce(config, port, app[STORE].describe())
    else:
        log.info("worker listening", pid=os.getpid())
        ready()
        url = ""
    try:
        await _until_stopped(ui, url)
    finally:
        log.info("stopping: flushing metrics and snapshotting sessions")
        await runner.cleanup()
        log.info("stopped")


async def supervise(
    config: Config, ui: TerminalUI | None, logging_config: LoggingConfig, console: bool
) -> None:
    """`[server] workers` > 1: the workers' parent, serving nothing itself (proxy/workers.py)."""
    log = structlog.get_logger("proxy")
    reserved = reserve_port(config.server.host, config.server.port)
    port = reserved.getsockname()[1]
    config = attrs.evolve(config, server=attrs.evolve(config.server, port=port))
    supervisor = Supervisor(config, logging_config, console)
    try:
        await supervisor.start_all()
        url = _announce(config, port, open_store(config.storage).describe())
        await _until_stopped(ui, url, supervisor.watch)
    finally:
        log.info("stopping: each worker flushes its metrics and snapshots its sessions")
        await supervisor.stop_all()
        reserved.close()
        log.info("stopped")


def _announce(config: Config, port: int, database: str) -> str:
    """The `listening` line; `database` as the store describes it (a URL without its password)."""
    log = structlog.get_logger("proxy")
    url = f"http://{config.server.host}:{port}"
    if warning := exposure_warning(config.server):
        log.warning("admin_unlocked", message=warning)
    log.info(
        "listening",
        url=url,
        config=config.source,
        anthropic=config.upstream.anthropic_base_url,
        openai=config.upstream.openai_base_url,
        database=database,
        workers=config.server.workers,
    )
    return url


async def _until_stopped(
    ui: TerminalUI | None, url: str, watch: Callable[[asyncio.Event], Awaitable[None]] | None = None
) -> None:
    """Wait for SIGINT or SIGTERM, showing the terminal dashboard meanwhile when there is one."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    ui_task = None
    if ui is not None:
        ui.url = url
        ui_task = asyncio.create_task(ui.run(stop), name="terminal-ui")
    try:
        if watch is not None:
            await watch(stop)
        await stop.wait()
    finally:
        stop.set()
        if ui_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await ui_task


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["export"]:
        from .export import main as export_main

        return export_main(argv[1:])
    if argv[:1] == ["keys"]:
        from .limits.cli import main as keys_main

        return keys_main(argv[1:])
    if argv[:1] == ["health"]:
        from .healthcheck import main as health_main

        return health_main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="vidurai-proxy",
        description=__doc__,
        epilog="vidurai-proxy export --help: export requests for billing; "
        "vidurai-proxy keys --help: virtual keys with their own limits; "
        "vidurai-proxy health: exit 0 when the configured proxy answers /health",
    )
    parser.add_argument("--config", help="configuration file (default: $VIDURAI_CONFIG or vidurai.ini)")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"vidurai-proxy: configuration error: {exc}", file=sys.stderr)
        return 2

    ui = None
    if should_show(config.ui.terminal, sys.stdout.isatty()):
        # The dashboard owns the screen: log lines would tear it, so they go to a file.
        logging_config = (
            config.logging
            if config.logging.file
            else attrs.evolve(config.logging, file=str(_files_folder(config) / UI_LOG_FILE))
        )
        configure_logging(logging_config, console=False)
        warnings = WarningBuffer()
        logging.getLogger().addHandler(warnings)
        ui = TerminalUI(open_store(config.storage), warnings=warnings, log_file=logging_config.file)
    else:
        logging_config = config.logging
        configure_logging(logging_config)
    try:
        # uvloop: its transports cut the proxy's CPU per request by about 7% (README, Performance).
        if config.server.workers > 1:
            uvloop.run(supervise(config, ui, logging_config, console=ui is None))
        else:
            uvloop.run(serve(config, ui))
    except OSError as exc:  # port in use, permission denied: one line, not a traceback
        print(
            f"vidurai-proxy: cannot listen on {config.server.host}:{config.server.port}: {exc.strerror}",
            file=sys.stderr,
        )
        return 1
    except WorkerStartError as exc:  # the worker's own log lines above say why
        print(f"vidurai-proxy: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
