"""Swatch uploads in, stored objects out (the local storage backend's files under /media/)."""

from __future__ import annotations

import asyncio
import mimetypes

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import FileResponse

from deployments.storage import LocalStorage, StorageError
from serve_app.deps import ServicesDep
from serve_app.errors import RATE_LIMITED, error_responses
from serve_app.edge.ratelimit import rate_limited
from serve_app.edge.routing import StorableTextRoute
from serve_app.edge.body_limit import MULTIPART_BODY
from serve_app.uploads.schemas import UploadOut
from serve_app.uploads.service import clean_upload, read_file_field, store_upload

router = APIRouter(route_class=StorableTextRoute)

@router.post("/upload-swatch", status_code=status.HTTP_201_CREATED, response_model=UploadOut, tags=["jobs"],
             responses={**error_responses(400, 413, 415, 422, 503), **RATE_LIMITED}, openapi_extra=MULTIPART_BODY,
             dependencies=[rate_limited("upload")])
async def upload_swatch(request: Request, services: ServicesDep) -> UploadOut:
    """Store a customer's swatch photo for use as `swatch_url`; it expires after 24 hours.

    The type is decided by decoding the bytes (JPEG, PNG, WebP); the stored copy is re-encoded without
    metadata (EXIF, GPS, ICC, text chunks). Bodies over the size limit are refused as they stream in.
    """
    settings = services.settings
    data = await read_file_field(request, "file", settings.upload_max_bytes)
    clean = await clean_upload(services, data)
    return await asyncio.to_thread(store_upload, services.storage, settings, clean)


@router.get("/media/{key:path}", tags=["media"], responses=error_responses(404))
def get_media(key: str, services: ServicesDep) -> FileResponse:
    """Objects of the local storage backend (generated renders, swatches)."""
    storage = services.storage
    if not isinstance(storage, LocalStorage):
        raise HTTPException(404, "media is served by the object store")
    try:
        path = storage.path_for(key)
    except StorageError:
        raise HTTPException(404, "not found") from None
    if not path.is_file():
        raise HTTPException(404, "not found")
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": "public, max-age=300"})
