"""The demo page at `/`: try the service on a photo or a webcam frame, in a browser.

Plain HTML, CSS and JavaScript shipped in `service/static/` (no CDN, no build step); the page
calls the same `/predict` that every client calls.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

router = APIRouter()

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
STATIC_PATH = "/static"


@router.get("/", include_in_schema=False)
def demo_page() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8")
