"""GET /dashboard: one page and its static files, shipped inside the package (no CDN, no internet)."""

from __future__ import annotations

import functools
import importlib.resources
import re

from aiohttp import web

PAGE = "dashboard.html"
_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml", ".png": "image/png"}
_NAME = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9]+)+$")
# The page talks to this proxy only: a script or style from anywhere else would be refused.
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@functools.lru_cache(maxsize=32)
def _read(name: str) -> bytes | None:
    """A file of proxy/static, read once; None if there is no such file."""
    resource = importlib.resources.files("proxy") / "static" / name
    return resource.read_bytes() if resource.is_file() else None


async def page(request: web.Request) -> web.Response:
    """The dashboard page; its script refreshes it from /metrics.json and /health."""
    body = _read(PAGE)
    if body is None:
        raise web.HTTPNotFound(text="dashboard files missing from the installed package")
    return web.Response(body=body, content_type="text/html", charset="utf-8", headers=_HEADERS)


async def static(request: web.Request) -> web.Response:
    """A script, stylesheet or image of the page, by file name (no directories)."""
    name = request.match_info["name"]
    suffix = name[name.rfind(".") :] if "." in name else ""
    body = _read(name) if _NAME.match(name) and suffix in _TYPES else None
    if body is None:
        raise web.HTTPNotFound(text=f"no dashboard file {name!r}")
    return web.Response(
        body=body,
        content_type=_TYPES[suffix],
        charset="utf-8" if suffix in (".js", ".css", ".svg") else None,
        headers=_HEADERS,
    )


async def slash(request: web.Request) -> web.Response:
    # The page's links are relative to /dashboard, so /dashboard/ must not serve it.
    raise web.HTTPMovedPermanently("../dashboard")


def routes() -> list[web.RouteDef]:
    """The dashboard's pages; add them before any catch-all route."""
    return [web.get("/dashboard", page), web.get("/dashboard/", slash)]


def assets() -> list[web.RouteDef]:
    """The page's scripts and styles: public files of the package, shared with the login form."""
    return [web.get("/dashboard/static/{name}", static)]
