"""`python -m proxy`: start the proxy in the foreground until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import structlog

from .app import create_app, start_server
from .config import Config, ConfigError, load_config
from .logs import configure_logging


async def serve(config: Config) -> None:
    log = structlog.get_logger("proxy")
    app = create_app(config)
    runner, port = await start_server(app, config.server.host, config.server.port)
    log.info("listening", url=f"http://{config.server.host}:{port}", config=config.source,
             anthropic=config.upstream.anthropic_base_url, openai=config.upstream.openai_base_url,
             database=config.storage.database)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("stopping: flushing metrics and snapshotting sessions")
        await runner.cleanup()
        log.info("stopped")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["export"]:
        from .export import main as export_main

        return export_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m proxy", description=__doc__,
                                     epilog="python -m proxy export --help: export requests for billing")
    parser.add_argument("--config", help="configuration file (default: $VIDURAI_CONFIG or vidurai.ini)")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"vidurai-proxy: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.logging)
    try:
        asyncio.run(serve(config))
    except OSError as exc:  # port in use, permission denied: one line, not a traceback
        print(f"vidurai-proxy: cannot listen on {config.server.host}:{config.server.port}: {exc.strerror}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
