"""The ``alqa serve`` ASGI app: MONAI Label's endpoints, the login, the web worklist, and the guards around them.

Built by :func:`create_app` from :class:`~alqa_dagster.serve.state.ServeSettings`
and run by :func:`run` with uvicorn, one process (the key that signs tokens
and image capabilities lives in it). It loads no dagster, torch or MONAI
(``tests/dagster/test_serve.py`` checks the running server's modules), so it
starts in about a second beside a running Dagster deployment.
"""

from __future__ import annotations

import json

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from starlette.middleware.gzip import GZipMiddleware
from starlette.staticfiles import StaticFiles

from alqa_core.annotation.intake.annotators import list_annotators
from alqa_dagster.serve import auth, monai, viewer, worklist
from alqa_dagster.serve.headers import SecurityHeaders
from alqa_dagster.serve.state import ServeSettings, ServeState, is_loopback

#: routes that read their own (large) bodies, each with its own limit
_OWN_LIMIT = (("PUT", "/datastore/label"), ("POST", "/infer/"))


class BodyLimit:
    """Pure ASGI guard: any other request body over ``limit`` bytes is refused (413) before or while it is read.

    The refusal closes the connection: the rest of the body is never read, so a client still sending it may
    see the connection closed rather than the 413 (HTTP servers' usual answer to an oversized body).
    """

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or any(scope["method"] == m and scope["path"].startswith(p) for m, p in _OWN_LIMIT):
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None and (not declared.strip().isdigit() or int(declared) > self.limit):
            return await _refuse(send, 413 if declared.strip().isdigit() else 400, f"request body refused (limit {self.limit} bytes)")
        seen, started = 0, False

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _Oversized
            return message

        async def tracked(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited, tracked)
        except _Oversized:
            if not started:
                await _refuse(send, 413, f"request body refused (limit {self.limit} bytes)")


class _Oversized(Exception):
    pass


async def _refuse(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def create_app(settings: ServeSettings) -> FastAPI:
    if not settings.auth and not settings.local_annotator:
        raise ValueError("alqa serve --no-auth needs the name every write is attributed to (--annotator)")
    app = FastAPI(title="alqa serve", description="MONAI Label-compatible API and web worklist of an alqa campaign", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.alqa = ServeState(settings)
    app.include_router(auth.router)
    app.include_router(monai.router)
    app.include_router(worklist.router)
    app.include_router(viewer.router)
    # the page's own files (NiiVue's bundle is 2.3 MB) compressed for clients that accept it; API answers are not
    # (MONAI Label's client parses its multipart answers from the raw socket)
    app.mount("/worklist", GZipMiddleware(StaticFiles(directory=worklist.STATIC, html=True), minimum_size=1024, compresslevel=6), name="worklist")

    @app.get("/", include_in_schema=False)
    def root():
        return RedirectResponse("/worklist/")

    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(SecurityHeaders)  # outermost: refusals by the guards above carry the headers too
    return app


def check_bind(host: str, auth_enabled: bool) -> None:
    """``--no-auth`` is refused unless the server binds a loopback address only."""
    if not auth_enabled and not is_loopback(host):
        raise ValueError(f"--no-auth is allowed on a loopback address only (127.0.0.1, ::1, localhost), not {host!r}")


def run(settings: ServeSettings, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info", ssl_certfile: str | None = None,
        ssl_keyfile: str | None = None) -> None:
    import uvicorn

    check_bind(host, settings.auth)
    scheme = "https" if ssl_certfile else "http"
    active = [a for a in list_annotators(settings.layout.annotators) if a.active]
    mode = "auth off (loopback): every write is attributed to " + settings.local_annotator if not settings.auth else f"{len(active)} annotator(s) with an active token"
    print(f"alqa serve: campaign {settings.campaign.name!r}, workspace {settings.layout.root}; {mode}", flush=True)
    if settings.auth and not active:
        print("alqa serve: no annotator can log in yet: alqa annotators add NAME", flush=True)
    if settings.auth and not ssl_certfile and not is_loopback(host):
        print("alqa serve: plain HTTP on the network: tokens cross it in clear; give --ssl-certfile/--ssl-keyfile or put a TLS proxy in front", flush=True)
    print(f"alqa serve: 3D Slicer's MONAI Label module -> {scheme}://{host}:{port} ; web worklist -> {scheme}://{host}:{port}/worklist/", flush=True)
    uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level, workers=1, proxy_headers=False,
                ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile)
