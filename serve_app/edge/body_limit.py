"""A cap on request bodies (`SASTRE_BODY_MAX_BYTES`, 64 KiB), enforced before any route parses a body
or counts it against a rate limit: 413 with a JSON `detail`.

No route but the uploads takes more than a few hundred bytes of JSON or form, and a body is read
whole before a route's validation sees it, so without a cap a client could make a replica buffer
and parse megabytes per request. A declared `Content-Length` over the cap is refused before the
route runs; a body without one (chunked) is counted as it streams and refused on the chunk that
passes the cap. A body that declares its length needs no counting: the HTTP server in front of the
app (uvicorn, in Serve's proxy too) never delivers more than was declared.

The uploads are not capped here: they read their multipart body under the upload's own, larger cap
(`serve_app/uploads/service.py`, `read_file_field`).
"""

from __future__ import annotations

from collections.abc import Iterable

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send



# An upload's body as OpenAPI describes it (its route reads it as a stream). A route declaring it is
# exempt from the cap here and reads the body under the upload's own, larger cap.
MULTIPART_BODY = {
    "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["file"],
        "properties": {"file": {"type": "string", "format": "binary",
                                "description": "JPEG, PNG or WebP, at most 5 MB"}}}}}},
}


def too_large(max_bytes: int) -> str:
    return f"request body too large: the limit is {max_bytes // 1024} KiB"


class BodyTooLarge(HTTPException):
    """Raised from the request's receive channel. FastAPI passes an HTTPException raised while it reads
    a body on to its handler (any other would become a 400), so the client gets the 413 as JSON."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, too_large(max_bytes))


class BodyLimit:
    """Pure ASGI middleware, so a body is counted as it arrives, not after a framework buffered it."""

    def __init__(self, app: ASGIApp, max_bytes: int, uncapped: list[APIRoute]) -> None:
        self.app, self.max_bytes, self.uncapped = app, max_bytes, uncapped

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or any(route.matches(scope)[0] == Match.FULL for route in self.uncapped):
            await self.app(scope, receive, send)
            return
        declared = next((value for name, value in scope["headers"] if name == b"content-length"), None)
        if declared is not None:
            if int(declared) > self.max_bytes:  # the server has already refused a malformed length
                await JSONResponse({"detail": too_large(self.max_bytes)}, status_code=413)(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, counted, send)


def upload_routes(routes: Iterable[object]) -> list[APIRoute]:
    """The routes that stream a multipart upload under the upload's own cap: those declaring its body."""
    return [route for route in routes if isinstance(route, APIRoute) and route.openapi_extra is MULTIPART_BODY]
