"""The proxy's own read-only endpoints for dashboards and scrapers."""

from __future__ import annotations

from aiohttp import web

from .keys import CONFIG, PROM
from .storage.reader import metrics_json as read_metrics


async def metrics_json(request: web.Request) -> web.Response:
    """Totals, breakdowns and recent activity, read from SQLite so they survive restarts."""
    return web.json_response(await read_metrics(request.app[CONFIG].storage.database))


async def metrics_text(request: web.Request) -> web.Response:
    """Prometheus exposition format."""
    body, content_type = request.app[PROM].render()
    response = web.Response(body=body)
    response.headers["Content-Type"] = content_type
    return response
