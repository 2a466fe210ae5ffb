"""Security headers on every answer of ``alqa serve``, and no caching of patient data.

The worklist is a clinical page: it shows patients' CTs. Every response
carries:

- ``Content-Security-Policy`` (:data:`CSP`): the page's own scripts, styles
  and API only. NiiVue needs WebGL2, which CSP does not govern; its bundle
  uses no ``eval``/``new Function`` (so no ``'unsafe-eval'``), starts no
  worker (``worker-src 'none'``), and draws its font atlas and matcap from
  ``data:`` images (``img-src 'self' data:``). No inline script or style is
  allowed; nothing may leave the origin (``connect-src 'self'``); no page may
  frame this one (``frame-ancestors 'none'``, and ``X-Frame-Options: DENY``
  for older browsers). ``tests/dagster/test_serve_viewer.py`` loads the viewer
  under this policy and fails on any violation report.
- ``Cache-Control: no-store`` on everything but the page's own static files
  (``/worklist/``, revalidated by ETag): no queue, verdict, CT or label is
  left in a browser's disk cache on a shared workstation. Volumes still go
  out under content-hash URLs with a strong ETag (a client that keeps its own
  copy revalidates with ``If-None-Match``), and the page keeps the cases it
  opened in memory until logout.
- ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer`` (ids
  in URLs never reach another site), ``Cross-Origin-Opener-Policy`` and
  ``-Resource-Policy: same-origin``, and a ``Permissions-Policy`` that turns
  off the device APIs the page never uses.

A route that sets its own ``Cache-Control`` keeps it.
"""

from __future__ import annotations

CSP = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "font-src 'self'",
        "worker-src 'none'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
STATIC_PREFIX = "/worklist/"

_ALWAYS = (
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), usb=(), payment=()"),
)


class SecurityHeaders:
    """Pure ASGI middleware: adds the headers above to every HTTP response start."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        static = scope["path"].startswith(STATIC_PREFIX)

        async def with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                present = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in _ALWAYS if k not in present]
                if b"cache-control" not in present:
                    headers.append((b"cache-control", b"no-cache" if static else b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


__all__ = ["CSP", "STATIC_PREFIX", "SecurityHeaders"]
