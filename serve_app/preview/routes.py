"""GET /preview: the cut in the chosen cloth at once, while the render is still queued."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response

from serve_app.deps import ServicesDep
from serve_app.errors import error_responses
from serve_app.preview.service import render_preview
from serve_app.edge.routing import StorableTextRoute

router = APIRouter(tags=["catalog"], route_class=StorableTextRoute)


@router.get("/preview", response_class=Response, responses={
    200: {"content": {"image/jpeg": {}}, "description": "the preview, a JPEG"},
    304: {"description": "unchanged since the entity tag sent in If-None-Match"},
    **error_responses(404, 422, 503)})
def get_preview(
    services: ServicesDep,
    cut: Annotated[str, Query(min_length=1, max_length=100)],
    color_id: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
    swatch_url: Annotated[str | None, Query(min_length=1, max_length=2048,
                                            description="an upload of ours, instead of color_id")] = None,
    job_id: Annotated[str | None, Query(min_length=1, max_length=100,
                                        description="a job's own swatch (its `preview_url`s name it)")] = None,
    size: Annotated[int, Query(description="pixels per side: 256 or 512")] = 512,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """An instant preview of `cut` in a catalog color's cloth (`color_id`), an uploaded swatch (`swatch_url`)
    or a job's own swatch (`job_id`): the swatch's texture on the cut's shape and shading. No model runs;
    milliseconds."""
    jpeg, etag = render_preview(services, cut, size, color_id, swatch_url, job_id)
    headers = {"ETag": etag, "Cache-Control": "public, max-age=3600"}
    if if_none_match == etag:
        return Response(status_code=304, headers=headers)
    return Response(jpeg, media_type="image/jpeg", headers=headers)
