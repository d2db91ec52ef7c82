"""The proxy's own read-only endpoints for dashboards and scrapers."""

from __future__ import annotations

from aiohttp import web

from .keys import LIMITS, PROM, STORE
from .storage import Filter
from .tags import parse_filter


async def metrics_json(request: web.Request) -> web.Response:
    """Totals, breakdowns and recent activity, read from the database: they survive restarts and,
    with several instances on one database, count the whole fleet whichever instance answers.

    ?session=NAME (label or id) and ?tag=key=value narrow every figure to the matching requests.
    """
    tag = request.query.get("tag")
    try:
        where = Filter(session=request.query.get("session") or None, tag=parse_filter(tag) if tag else None)
    except ValueError as exc:
        return web.json_response({"error": f"?tag: {exc}"}, status=400)
    body = await request.app[STORE].metrics_json(where=where)
    body["limits"] = await request.app[LIMITS].report()
    return web.json_response(body)


async def metrics_text(request: web.Request) -> web.Response:
    """Prometheus exposition format."""
    body, content_type = request.app[PROM].render()
    response = web.Response(body=body)
    response.headers["Content-Type"] = content_type
    return response
