"""The security headers every answer carries: pages, their assets, media and the API.

- `Content-Security-Policy`: scripts and styles only from this origin, no inline script anywhere (the
  pages are ES modules under /static), images from here and from where media lives (the storage's own
  URLs: /media, a public bucket or presigned S3 URLs), no plugins, no `<base>`, and `frame-ancestors
  'none'` so no other site can frame the admin page.
- `X-Frame-Options: DENY` for browsers that predate `frame-ancestors`; `X-Content-Type-Options: nosniff`
  so an upload is never read as script or HTML; `Referrer-Policy: no-referrer`, since nothing here needs
  a page's address sent on to a bucket's host or a linked site.

The API docs (/docs, /redoc) load Swagger UI and ReDoc from their CDN, so they get a policy of their
own that also allows that CDN (and ReDoc's web fonts and worker); inline script stays forbidden there
too: /docs starts Swagger UI from our `/static/docs.js` instead of FastAPI's inline snippet.

A plain ASGI middleware rather than a library: the `secure` package only builds these header values
(with Starlette it goes through `BaseHTTPMiddleware`, which adds a task and a stream wrapper to
every request, the hot routes and event streams included), and the values here depend on where
media lives, which is ours to work out. The headers are computed once and appended to each
response's start message.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

DOCS_PATHS = frozenset({"/docs", "/redoc"})
DOCS_CDN = "https://cdn.jsdelivr.net"


def origin_of(url: str) -> str:
    """`https://host:port` of a URL, the unit a CSP source names."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def site_policy(media_origins: list[str]) -> str:
    media = " ".join(dict.fromkeys(media_origins))
    return ("default-src 'self'; script-src 'self'; style-src 'self'; "
            f"img-src 'self' data: blob: {media}; connect-src 'self'; font-src 'self'; object-src 'none'; "
            "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


def docs_policy() -> str:
    """Swagger UI and ReDoc from the CDN FastAPI names; both set element styles, ReDoc also web fonts and
    a blob worker. Still no inline script."""
    return (f"default-src 'self'; script-src 'self' {DOCS_CDN}; style-src 'self' 'unsafe-inline' {DOCS_CDN} "
            "https://fonts.googleapis.com; font-src 'self' https://fonts.gstatic.com; "
            "img-src 'self' data: https://fastapi.tiangolo.com; connect-src 'self'; "
            "worker-src 'self' blob:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


def _headers(policy: str) -> list[tuple[bytes, bytes]]:
    return [(b"content-security-policy", policy.encode()), (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", b"DENY"), (b"referrer-policy", b"no-referrer")]


class SecurityHeaders:
    """Appends the headers to every HTTP response of `app` (streams and files included)."""

    def __init__(self, app: ASGIApp, media_origins: list[str]) -> None:
        self.app = app
        self.site = _headers(site_policy(media_origins))
        self.docs = _headers(docs_policy())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = self.docs if scope["path"] in DOCS_PATHS else self.site

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *headers]
            await send(message)

        await self.app(scope, receive, send_with_headers)
