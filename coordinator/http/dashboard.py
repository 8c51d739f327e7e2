"""The dashboard: static files shipped inside the package (``coordinator/http/static``), no build step.

Plain HTML, CSS and JavaScript with charts drawn as SVG by the page itself, so
the box that runs the coordinator needs nothing but Python: no Node.js, no
bundler, nothing fetched from the Internet at run time. ``/`` serves the page;
everything it needs is under ``/static``.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["STATIC_DIR", "mount_dashboard"]

STATIC_DIR = Path(__file__).resolve().parent / "static"


def mount_dashboard(app: FastAPI) -> None:
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})
