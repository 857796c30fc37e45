"""The dashboard: one page and its assets, served by governance itself (no CDN), and the two
reads it needs that no other route gives.

The page and its assets hold no data, so they need no key; everything the page shows comes from
the /v1 endpoints, which need one (the page asks for a key and sends it as `X-API-Key`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import FileResponse, HTMLResponse
from sqlalchemy.ext.asyncio import AsyncEngine

from services.governance import queries
from services.governance.routes.deps import Version, read_engine, viewer

ASSETS_DIR = Path(__file__).resolve().parent.parent / "dashboard"
# The files the page loads, by the name it asks for: nothing else under the folder is served.
ASSETS = {
    "dashboard.js": ("dashboard.js", "text/javascript"),
    "dashboard.css": ("dashboard.css", "text/css"),
    "uPlot.iife.min.js": ("vendor/uPlot.iife.min.js", "text/javascript"),
    "uPlot.min.css": ("vendor/uPlot.min.css", "text/css"),
    "uPlot.LICENSE": ("vendor/uPlot.LICENSE", "text/plain"),
}
# Only this origin's scripts, styles and API; no framing. (uPlot sizes its elements through
# the style property, which style-src does not govern.)
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

page = APIRouter(include_in_schema=False)


def _file(path: str) -> Path:
    found = ASSETS_DIR / path
    if not found.is_file():  # an installation without the package's data files
        raise HTTPException(404, f"the dashboard's {path} is not installed with this service")
    return found


@page.get("/dashboard")
async def dashboard() -> HTMLResponse:
    return HTMLResponse(_file("index.html").read_text(), headers=_HEADERS)


@page.get("/dashboard/{name}")
async def asset(name: str) -> FileResponse:
    if name not in ASSETS:
        raise HTTPException(404, f"no dashboard asset {name!r}")
    path, media_type = ASSETS[name]
    return FileResponse(_file(path), media_type=media_type, headers=_HEADERS)


router = APIRouter(prefix="/v1/tasks/{task}", tags=["dashboard"], dependencies=[Depends(viewer)])
Engine = Annotated[AsyncEngine, Depends(read_engine)]


@router.get("/audits/latest")
async def latest_audits(task: str, engine: Engine) -> dict[str, Any]:
    """The newest candidate audit (with outcomes) and the newest live audit, each with its
    per-group figures for every sensitive attribute; null where there is none yet."""
    async with engine.connect() as conn:
        return {"task": task, **await queries.latest_audits(conn, task)}


@router.get("/models/{version}/predictions")
async def newest_predictions(
    task: str,
    version: Version,
    engine: Engine,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> dict[str, Any]:
    """A model version's newest recorded answers (ids, newest first), to follow to a lineage."""
    async with engine.connect() as conn:
        found = await queries.newest_predictions(conn, task, version, limit)
    return {"task": task, "model_version": version, "predictions": found}
