"""The proxy's own admin surface (dashboard, metrics): the host names it answers for, and its token.

Every route the proxy serves itself is an admin route unless create_app declares it otherwise
(the provider API routes, the pass-through and /health are public), so a route added later is
locked by default. Admin routes answer only for [server] admin_hosts: a page on another site
whose name was rebound to 127.0.0.1 (DNS rebinding) sends its own name as Host and is refused.
With [server] admin_token set they also need the token: `Authorization: Bearer TOKEN` from
programs, or the cookie the login form sets for browsers (HttpOnly, SameSite=Strict).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import html
import ipaddress

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from .config import ServerConfig

log = structlog.get_logger(__name__)

COOKIE = "vidurai_admin"
LOGIN_PATH = "/dashboard/login"
_CSP = "default-src 'none'; style-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"


class Access(enum.Enum):
    PUBLIC = "public"  # API routes, pass-through, /health: any host, no token
    HOST = "host"  # login, logout, the dashboard's static files: admin hosts, no token
    ADMIN = "admin"  # admin hosts and, when set, the token


def host_name(host: str) -> str:
    """The name in a Host header without its port: `localhost:8080` → `localhost`, `[::1]:80` → `[::1]`."""
    host = host.strip().lower().rstrip(".")
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rpartition(":")[0] if ":" in host else host


def is_loopback(address: str) -> bool:
    if address.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def exposure_warning(server: ServerConfig) -> str | None:
    """The startup warning for an admin surface reachable from other machines, or None."""
    if server.admin_token or is_loopback(server.host):
        return None
    return (
        f"listening on {server.host} without [server] admin_token: anyone who can reach this address "
        "and names an admin host can read every tenant's usage on /dashboard and /metrics.json; "
        "set VIDURAI_SERVER_ADMIN_TOKEN"
    )


class AdminGuard:
    """Decides, per request, whether an admin route may answer."""

    def __init__(self, server: ServerConfig) -> None:
        self._token = server.admin_token.encode()
        # The browser keeps an HMAC of the token, never the token: a new token signs every browser out.
        self._cookie = hmac.new(self._token, b"vidurai-proxy admin cookie", hashlib.sha256).hexdigest()
        self._hosts = frozenset(server.admin_hosts)
        self._access: dict[web.AbstractResource, Access] = {}

    @property
    def locked(self) -> bool:
        return bool(self._token)

    def declare(self, access: Access, *routes: web.AbstractRoute) -> None:
        """Mark routes PUBLIC or HOST; every other route is ADMIN."""
        for route in routes:
            if route.resource is not None:
                self._access[route.resource] = access

    def access(self, request: web.Request) -> Access:
        resource = request.match_info.route.resource
        if resource is None:  # no route matched: the router's own 404 or 405
            return Access.PUBLIC
        return self._access.get(resource, Access.ADMIN)

    def host_allowed(self, request: web.Request) -> bool:
        return "*" in self._hosts or host_name(request.host) in self._hosts

    def token_valid(self, token: str) -> bool:
        return bool(self._token) and hmac.compare_digest(token.encode(errors="replace"), self._token)

    def authorized(self, request: web.Request) -> bool:
        """The token is not set, or the request carries it (bearer) or the login cookie."""
        if not self._token:
            return True
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and presented.strip():
            return self.token_valid(presented.strip())
        cookie = request.cookies.get(COOKIE, "")
        return hmac.compare_digest(cookie.encode(errors="replace"), self._cookie.encode())

    def allows(self, request: web.Request) -> bool:
        """Whether this request could read an admin route."""
        return self.host_allowed(request) and self.authorized(request)

    def set_cookie(self, request: web.Request, response: web.StreamResponse) -> None:
        # Secure only over https: on plain http (loopback, or TLS ended by a reverse proxy in front)
        # a Secure cookie would be dropped by the browser.
        response.set_cookie(
            COOKIE, self._cookie, path="/", httponly=True, samesite="Strict", secure=request.secure
        )


def guard_middleware(guard: AdminGuard) -> Middleware:
    @web.middleware
    async def admin_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        access = guard.access(request)
        if access is Access.PUBLIC:
            return await handler(request)
        if not guard.host_allowed(request):
            log.warning("admin.host_refused", host=request.host)
            return web.Response(
                status=403,
                text=f"Host {host_name(request.host)!r} is not one of [server] admin_hosts; add it there "
                "to reach the admin routes under that name.\n",
            )
        if access is Access.ADMIN and not guard.authorized(request):
            if request.method == "GET" and "text/html" in request.headers.get("Accept", ""):
                raise web.HTTPSeeOther(LOGIN_PATH)  # a browser: to the login form
            return web.json_response(
                {"error": "admin token required: send Authorization: Bearer <[server] admin_token>"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="vidurai-proxy admin"'},
            )
        return await handler(request)

    return admin_guard


def _login_page(message: str = "", status: int = 200) -> web.Response:
    notice = f'<p class="problem">{html.escape(message)}</p>' if message else ""
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Vidurai Proxy · log in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,"><link rel="stylesheet" href="static/dashboard.css"></head>
<body><main class="login"><h1>Vidurai Proxy</h1>{notice}
<form method="post" action="login"><label>Admin token
<input type="password" name="token" autocomplete="current-password" required autofocus></label>
<button type="submit">Log in</button></form></main></body></html>
"""
    headers = {"Content-Security-Policy": _CSP, "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
    return web.Response(text=body, content_type="text/html", status=status, headers=headers)


def routes(guard: AdminGuard) -> list[web.RouteDef]:
    """GET/POST /dashboard/login and POST /dashboard/logout."""

    async def login_form(request: web.Request) -> web.StreamResponse:
        if not guard.locked:
            raise web.HTTPSeeOther("/dashboard")
        return _login_page()

    async def login(request: web.Request) -> web.StreamResponse:
        form = await request.post()
        token = form.get("token")
        if not guard.locked:
            raise web.HTTPSeeOther("/dashboard")
        if not isinstance(token, str) or not guard.token_valid(token):
            log.warning("admin.login_failed", remote=request.remote)
            return _login_page("That is not the admin token.", status=401)
        response = web.HTTPSeeOther("/dashboard")
        guard.set_cookie(request, response)
        raise response

    async def logout(request: web.Request) -> web.StreamResponse:
        response = web.HTTPSeeOther(LOGIN_PATH)
        response.del_cookie(COOKIE, path="/")
        raise response

    return [
        web.get(LOGIN_PATH, login_form),
        web.post(LOGIN_PATH, login),
        web.post("/dashboard/logout", logout),
    ]
