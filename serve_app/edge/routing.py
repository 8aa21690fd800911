"""The route class of every router: text PostgreSQL cannot store is refused before any route code runs.

PostgreSQL refuses NUL in text, and UTF-8 cannot encode a lone surrogate (JSON can spell both:
`"\\u0000"`, `"\\ud800"`). Any string a client sends may end up in a query (usernames, ids, names,
idempotency keys, filters), so rather than guard each field, every route checks what it was sent —
path, query string, headers, and JSON or form bodies as they are parsed — and answers 422 if any of
it holds such text. FastAPI's documented way to customise request handling: a custom `APIRoute`.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import HTTPException, Request, Response
from fastapi.routing import APIRoute
from starlette.datastructures import FormData, UploadFile


def storable(text: str) -> bool:
    """Whether PostgreSQL can store `text` in a text column."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _refuse_unstorable(value: Any, where: str) -> None:
    if isinstance(value, str):
        if not storable(value):
            raise HTTPException(422, f"{where} holds text that cannot be stored (a NUL character or a lone "
                                     f"surrogate)")
    elif isinstance(value, dict):
        for key, item in value.items():
            _refuse_unstorable(key, where)
            _refuse_unstorable(item, where)
    elif isinstance(value, list):
        for item in value:
            _refuse_unstorable(item, where)


class StorableTextRequest(Request):
    """A request whose parsed JSON and form bodies hold only storable text (file contents aside)."""

    async def json(self) -> Any:
        body = await super().json()
        _refuse_unstorable(body, "the JSON body")
        return body

    async def form(self, **limits: Any) -> FormData:
        form = await super().form(**limits)
        for name, value in form.multi_items():
            _refuse_unstorable(name, "the form")
            if not isinstance(value, UploadFile):
                _refuse_unstorable(value, f"form field {name!r}")
        return form


class StorableTextRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def checked(request: Request) -> Response:
            _refuse_unstorable(request.path_params, "the path")
            _refuse_unstorable([value for pair in request.query_params.multi_items() for value in pair], "the query")
            _refuse_unstorable([value for pair in request.headers.items() for value in pair], "a header")
            return await handler(StorableTextRequest(request.scope, request.receive))

        return checked
