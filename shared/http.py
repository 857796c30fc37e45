"""What every FastAPI service shares: health and readiness routes, and one error shape.

Errors are JSON `{"detail": ...}`; an unexpected failure is logged with its traceback and answered
500 without internals, while bad input is always a 4xx with a message.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse

from shared.runtime import Runtime
from shared.settings import CommonSettings

log = structlog.get_logger(__name__)

ReadinessCheck = Callable[[], Awaitable[str | None]]


def health_router(runtime: Callable[[], Runtime | None], *checks: ReadinessCheck) -> APIRouter:
    """/healthz: the process answers. /readyz: store reachable, relay running, service checks pass.

    Each extra check returns None when ready, or a short reason when not.
    """
    router = APIRouter(tags=["health"])

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz")
    async def readyz() -> JSONResponse:
        rt = runtime()
        problems: list[str] = []
        if rt is None:
            problems.append("starting")
        else:
            try:
                await rt.store.head()
            except Exception as exc:  # noqa: BLE001 - any failure means not ready
                problems.append(f"event store unreachable: {exc.__class__.__name__}")
            if not rt.relay_alive:
                problems.append("relay not running")
            for check in checks:
                if reason := await check():
                    problems.append(reason)
        status = 503 if problems else 200
        return JSONResponse({"ready": not problems, "problems": problems}, status_code=status)

    return router


def install_error_handlers(app: FastAPI) -> None:
    """Log unexpected errors with context; never leak internals in a response."""

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("http.unexpected_error", path=request.url.path, method=request.method)
        return JSONResponse({"detail": "internal error; see the service log"}, status_code=500)


def serve(app: FastAPI, settings: CommonSettings) -> None:
    """Run a service's app with uvicorn on its host and port; uvicorn logs through ours."""
    import uvicorn

    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=None,  # keep our handlers: JSON lines in production like every other line
        access_log=False,
    )
