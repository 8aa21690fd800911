"""The reference web client: the shop page at `/`, the admin page at `/admin`, the API docs page at `/docs`,
their assets under `/static/`.

Plain HTML, CSS and ES modules, served as files: no build step, no framework, nothing here but the
routes. The pages talk to the public and admin APIs exactly as any other front end would, so they
double as a working example for front-end teams. Only the exact paths `/` and `/admin` are claimed;
the admin API under `/admin/...` is untouched.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

CLIENT_DIR = Path(__file__).parent
# The pages are tiny; "no-cache" makes a browser revalidate them, so a deploy is seen at once.
PAGE_HEADERS = {"Cache-Control": "no-cache"}


def mount_client(app: FastAPI) -> None:
    """Serve the shop and admin pages and their static assets from `app`."""

    @app.get("/", include_in_schema=False)
    def shop_page() -> FileResponse:
        return FileResponse(CLIENT_DIR / "index.html", media_type="text/html", headers=PAGE_HEADERS)

    @app.get("/admin", include_in_schema=False)
    def admin_page() -> FileResponse:
        return FileResponse(CLIENT_DIR / "admin.html", media_type="text/html", headers=PAGE_HEADERS)

    @app.get("/docs", include_in_schema=False)
    def api_docs() -> FileResponse:
        """Swagger UI, started by /static/docs.js rather than FastAPI's inline script (see security_headers)."""
        return FileResponse(CLIENT_DIR / "docs.html", media_type="text/html", headers=PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=CLIENT_DIR / "static"), name="client-static")
