"""The floor: a bare aiohttp pass-through with no logic, what any Python proxy costs at least."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import ClientSession, TCPConnector, web

_SESSION = web.AppKey("session", ClientSession)
# Connection-level headers, plus the ones aiohttp recomputes for each side.
_DROP = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "proxy-connection",
        "host",
        "content-length",
        "date",
        "server",
    }
)


def _kept(headers: object) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() not in _DROP}  # type: ignore[attr-defined]


def create_app(upstream: str) -> web.Application:
    """Forward every request to `upstream` + path, streaming the answer chunk by chunk."""

    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        async with ClientSession(connector=TCPConnector(limit=0), auto_decompress=False) as session:
            app[_SESSION] = session
            yield

    async def forward(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        async with request.app[_SESSION].request(
            request.method, upstream + request.path_qs, data=body, headers=_kept(request.headers)
        ) as up:
            response = web.StreamResponse(status=up.status, headers=_kept(up.headers))
            if up.content_length is not None:
                response.content_length = up.content_length
            await response.prepare(request)
            async for chunk in up.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.cleanup_ctx.append(session_ctx)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app
