"""Vidurai logs through loguru; the proxy logs through structlog. One sink joins them."""

from __future__ import annotations

from typing import Any

import structlog
from loguru import logger

log = structlog.get_logger("vidurai")


def _sink(message: Any) -> None:
    record = message.record
    log.debug(record["message"], source=record["name"], vidurai_level=record["level"].name)


def route_vidurai_logs() -> None:
    """Send vidurai's loguru output into structlog at debug level (and nowhere else)."""
    logger.remove()
    logger.add(_sink, level="DEBUG", format="{message}", catch=True)
