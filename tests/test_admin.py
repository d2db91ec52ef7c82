"""The admin surface: token on every admin route, admin host names only, API routes untouched."""

from __future__ import annotations

import aiohttp
import pytest
import structlog
from aiohttp import web
from pytest_aiohttp import AiohttpClient

from proxy.admin import COOKIE, Access, AdminGuard, exposure_warning, guard_middleware, host_name
from proxy.config import ServerConfig, load_config
from tests.conftest import ANTHROPIC_KEY, ProxyFactory

TOKEN = "adm-test-4f1c9e2b7a"
ADMIN_ROUTES = ("/dashboard", "/metrics.json", "/metrics", "/dashboard/")
MESSAGE = {"model": "claude-sonnet-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
API_HEADERS = {"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01"}


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def locked(make_proxy: ProxyFactory) -> str:
    return await make_proxy(server_admin_token=TOKEN)


@pytest.mark.parametrize("path", ADMIN_ROUTES)
async def test_every_admin_route_needs_the_token(locked: str, http: aiohttp.ClientSession, path: str) -> None:
    for headers in ({}, bearer("wrong-token"), {"Authorization": TOKEN}, {"Cookie": f"{COOKIE}={TOKEN}"}):
        async with http.get(locked + path, headers=headers, allow_redirects=False) as response:
            assert response.status == 401, headers
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            assert "admin token required" in (await response.json())["error"]
    async with http.get(locked + path, headers=bearer(), allow_redirects=False) as response:
        assert response.status == (301 if path == "/dashboard/" else 200)


async def test_a_route_nobody_declared_is_an_admin_route(aiohttp_client: AiohttpClient) -> None:
    guard = AdminGuard(load_config(path="absent.ini", env={}, server_admin_token=TOKEN).server)
    app = web.Application(middlewares=[guard_middleware(guard)])
    guard.declare(Access.PUBLIC, app.router.add_get("/public", _ok))
    app.router.add_get("/added-later", _ok)
    client = await aiohttp_client(app)
    assert (await client.get("/public")).status == 200
    assert (await client.get("/added-later")).status == 401
    assert (await client.get("/added-later", headers=bearer())).status == 200


async def _ok(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def test_api_routes_need_no_admin_token_and_answer_any_host(
    locked: str, http: aiohttp.ClientSession
) -> None:
    for host in ("127.0.0.1", "api.example.test"):
        headers = {**API_HEADERS, "Host": host}
        async with http.post(locked + "/v1/messages", json=MESSAGE, headers=headers) as response:
            assert response.status == 200
            assert (await response.json())["type"] == "message"
    async with http.get(locked + "/health", headers={"Host": "api.example.test"}) as response:
        body = await response.json()
        assert response.status == 200 and body["status"] == "ok" and body["admin_locked"] is True
        assert "totals" not in body  # usage is admin data
    async with http.get(locked + "/health", headers=bearer()) as response:
        assert "totals" in await response.json()


async def test_browser_login_sets_a_strict_http_only_cookie_then_logout_clears_it(
    locked: str, http: aiohttp.ClientSession
) -> None:
    page = {"Accept": "text/html,application/xhtml+xml"}
    async with http.get(locked + "/dashboard", headers=page, allow_redirects=False) as response:
        assert response.status == 303 and response.headers["Location"] == "/dashboard/login"
    async with http.get(locked + "/dashboard/login") as response:
        assert response.status == 200 and 'name="token"' in await response.text()
    async with http.post(
        locked + "/dashboard/login", data={"token": "nope"}, allow_redirects=False
    ) as response:
        assert response.status == 401 and "not the admin token" in await response.text()
        assert COOKIE not in response.cookies
    async with http.post(
        locked + "/dashboard/login", data={"token": TOKEN}, allow_redirects=False
    ) as response:
        assert response.status == 303 and response.headers["Location"] == "/dashboard"
        set_cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie and "Path=/" in set_cookie
    cookie = response.cookies[COOKIE].value
    assert TOKEN not in cookie and cookie
    for path in ("/dashboard", "/metrics.json", "/metrics"):
        async with http.get(locked + path, headers={"Cookie": f"{COOKIE}={cookie}"}) as response:
            assert response.status == 200, path
    async with http.post(locked + "/dashboard/logout", allow_redirects=False) as response:
        assert response.status == 303 and response.headers["Location"] == "/dashboard/login"
        assert response.cookies[COOKIE].value == "" and response.cookies[COOKIE]["max-age"] == "0"


@pytest.mark.parametrize("token", ["", TOKEN])
async def test_admin_routes_refuse_a_foreign_host(
    make_proxy: ProxyFactory, http: aiohttp.ClientSession, token: str
) -> None:
    url = await make_proxy(server_admin_token=token)
    for path in (*ADMIN_ROUTES, "/dashboard/login", "/dashboard/static/dashboard.js"):
        for host in ("rebound.example.test", "rebound.example.test:8080", "127.0.0.1.example.test"):
            headers = {**bearer(), "Host": host}
            async with http.get(url + path, headers=headers, allow_redirects=False) as response:
                assert response.status == 403, (path, host)
                assert "[server] admin_hosts" in await response.text()
    for host in ("localhost:8080", "127.0.0.1", "[::1]:9", "LOCALHOST"):
        async with http.get(url + "/metrics.json", headers={**bearer(), "Host": host}) as response:
            assert response.status == 200, host


async def test_admin_hosts_setting_names_the_hosts(
    make_proxy: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    url = await make_proxy(server_admin_hosts="proxy.internal, [fd00::1]")
    async with http.get(url + "/metrics.json", headers={"Host": "proxy.internal:8080"}) as response:
        assert response.status == 200
    async with http.get(url + "/metrics.json", headers={"Host": "localhost"}) as response:
        assert response.status == 403


def test_host_names_and_the_exposure_warning() -> None:
    assert host_name("LocalHost:8080") == "localhost"
    assert host_name("[::1]:8080") == "[::1]" and host_name("[::1]") == "[::1]"
    assert host_name("example.test.") == "example.test"

    def server(**overrides: str) -> ServerConfig:
        return load_config(path="absent.ini", env={}, **overrides).server

    assert exposure_warning(server()) is None
    assert exposure_warning(server(server_host="::1")) is None
    assert exposure_warning(server(server_host="localhost")) is None
    for host in ("0.0.0.0", "::", "proxy.internal"):
        warning = exposure_warning(server(server_host=host))
        assert warning is not None and "admin_token" in warning
    assert exposure_warning(server(server_host="0.0.0.0", server_admin_token=TOKEN)) is None


def test_the_token_is_never_in_a_repr_or_a_log_line(capsys: pytest.CaptureFixture[str]) -> None:
    config = load_config(path="absent.ini", env={}, server_admin_token=TOKEN)
    assert TOKEN not in repr(config)
    structlog.get_logger("test").info("config", config=config)
    assert TOKEN not in capsys.readouterr().err
