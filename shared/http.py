"""What every FastAPI service shares: health and readiness routes, and one error shape.

Errors are JSON `{"detail": ...}`; an unexpected failure is logged with its traceback and answered
500 without internals, while bad input is always a 4xx with a message.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from shared.runtime import Runtime
from shared.settings import CommonSettings

log = structlog.get_logger(__name__)

ReadinessCheck = Callable[[], Awaitable[str | None]]

# The largest numbers an API takes where the store keeps them: a position (BIGINT) and a model
# version (a stream version: BIGINT, but no task will see 2**31 models). Past them a request is a
# 422, not a database overflow.
MAX_POSITION = 2**63 - 1
MAX_VERSION = 2**31 - 1


class Problem(BaseModel):
    """Every error answer of every service: `detail` says what went wrong, as a message or as a
    list of errors (FastAPI's `{loc, msg, type}` shape, with the record's `index` where records
    are refused one by one). Some answers add fields: ingest's per-record `errors`, governance's
    policy `reasons`."""

    model_config = ConfigDict(extra="allow")

    detail: str | list[dict[str, Any]]


_MEANINGS = {
    400: "the body is not well-formed (not JSON, or not the records' format)",
    401: "no API key, or one that is unknown, revoked or expired",
    403: "the key's role does not allow this",
    404: "no such task, model, prediction or flag",
    409: "refused by the policy or the current state (the reasons are given), or an id that "
    "names something else",
    413: "the body (or the batch) is too large",
    415: "the content type is not one the operation reads",
    422: "the request is well-formed but invalid: each field or record in error is named",
    503: "a dependency (the event store) is unavailable or the service is starting: retry",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` of error statuses, all with the one error body (`Problem`)."""
    return {s: {"model": Problem, "description": _MEANINGS[s]} for s in statuses}


class Readiness(BaseModel):
    ready: bool
    problems: list[str]


def health_router(runtime: Callable[[], Runtime | None], *checks: ReadinessCheck) -> APIRouter:
    """/healthz: the process answers. /readyz: store reachable, relay running, service checks pass.

    Each extra check returns None when ready, or a short reason when not.
    """
    router = APIRouter(tags=["health"])

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get(
        "/readyz",
        response_model=Readiness,
        responses={503: {"model": Readiness, "description": "not ready: the problems named"}},
    )
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

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return refusal(request, exc)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("http.unexpected_error", path=request.url.path, method=request.method)
        return JSONResponse({"detail": "internal error; see the service log"}, status_code=500)


def refusal(request: Request, exc: RequestValidationError) -> JSONResponse:
    """The answer to a request FastAPI could not validate: 415 for a body in another content type
    (or none), 400 for a body that is not JSON, else 422; `detail` in FastAPI's shape (loc, msg,
    type) without the offending input: it can be megabytes, or text that cannot even be encoded
    (a lone surrogate), and the caller has it."""
    errors = [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type")}
        for e in exc.errors()
    ]
    # As ingest answers: a body that is not JSON at all is malformed (400), and one sent as
    # another content type is not read (415), not "invalid" (422).
    about_body = [e for e in errors if e["loc"][:1] == ["body"]]
    content_type = request.headers.get("content-type")
    if about_body and content_type is not None and not _is_json(content_type):
        detail = f"send the body as application/json, not {content_type[:100]}"
        return JSONResponse({"detail": detail}, status_code=415)
    unread = {"model_attributes_type", "dict_type"}  # FastAPI left the body as bytes
    if content_type is None and any(e["type"] in unread for e in about_body):
        detail = "send the body as application/json (the request had no content type)"
        return JSONResponse({"detail": detail}, status_code=415)
    if any(e["type"] == "json_invalid" for e in about_body):
        return JSONResponse({"detail": errors}, status_code=400)
    return JSONResponse({"detail": errors}, status_code=422)


def _is_json(content_type: str) -> bool:
    """application/json or application/<something>+json, as FastAPI reads a JSON body."""
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind == "application/json" or (
        kind.startswith("application/") and kind.endswith("+json")
    )


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
