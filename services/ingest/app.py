"""The ingest HTTP service: observations and late labels in, events appended to the store.

Routes only translate: read the body (within limits), call the pure rules in `records`, append the
envelopes in one atomic store append, answer. Errors map to one status each: unknown task 404,
malformed body 400, too large 413, wrong content type 415, invalid records 422 (nothing stored),
store unavailable 503 (nothing stored; retry the same request: records that carry an `event_id`
are stored once however often they are sent, records without one get fresh ids each time).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Annotated, Any

import orjson
import structlog
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import Response

from services.ingest import instruments, records
from services.ingest.schemas import (
    LABEL_EXAMPLES,
    LABEL_SCHEMA,
    OBSERVATION_EXAMPLES,
    OBSERVATION_SCHEMA,
    request_body,
)
from services.ingest.settings import IngestSettings
from shared import __version__
from shared.events.envelope import Envelope, utcnow
from shared.http import error_responses, health_router, install_error_handlers
from shared.metrics import metrics_router, relay_metrics
from shared.registry import register_tasks
from shared.runtime import Runtime
from shared.store.port import EventIdChanged, EventIdTaken, EventStore
from shared.store.sql import STORE_FAILURES
from shared.tasks import TaskSpec, load_specs

log = structlog.get_logger(__name__)

SERVICE = "ingest"
# At most this many per-record errors are listed in a 422 (the count covers all of them).
MAX_LISTED_ERRORS = 100


class UnknownTask(LookupError):
    """The path names a task this service has no spec for."""


class BodyTooLarge(ValueError):
    """The body is larger than max_body_bytes."""


class StoreUnavailable(RuntimeError):
    """The event store could not be reached or refused the append; nothing was stored."""


def json_response(content: Any, status_code: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status_code, media_type="application/json")


def create_app(settings: IngestSettings | None = None) -> FastAPI:
    """The ingest app; infrastructure is connected in its lifespan, not here."""
    settings = settings or IngestSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        specs = load_specs(settings.tasks_dir)
        if not specs:
            raise RuntimeError(f"no task specs (*.yaml) in {settings.tasks_dir}")
        runtime = Runtime.build(SERVICE, settings)
        try:
            # Touch the store alone first: fails fast when it is unreachable, and a fresh SQLite
            # file is switched to WAL by one connection, not raced by the relay's and the writer's
            # (that race answers "database is locked" without waiting).
            await runtime.store.head()
            await runtime.start()
            await register_tasks(runtime.store, list(specs.values()), runtime.producer)
            instruments.prepare(specs)
            app.state.tasks = specs
            app.state.runtime = runtime
            log.info("ingest.started", tasks=sorted(specs), port=settings.port)
            yield
        finally:
            app.state.runtime = None
            await runtime.stop()

    app = FastAPI(title="Continuo ingest", version=__version__, lifespan=lifespan)
    app.state.settings = settings
    app.state.runtime = None
    app.state.tasks = {}
    install_error_handlers(app)
    _install_error_responses(app)
    app.include_router(health_router(lambda: app.state.runtime))
    app.include_router(metrics_router(relay_metrics(lambda: app.state.runtime)))
    app.include_router(_routes())
    return app


# -- wiring ----------------------------------------------------------------------------------------


def _task_spec(task: str, request: Request) -> TaskSpec:
    tasks: dict[str, TaskSpec] = request.app.state.tasks
    try:
        return tasks[task]
    except KeyError:
        raise UnknownTask(f"unknown task {task!r}; known: {', '.join(sorted(tasks))}") from None


def _runtime(request: Request) -> Runtime:
    runtime: Runtime | None = request.app.state.runtime
    if runtime is None:
        raise StoreUnavailable("ingest is starting or stopping; retry shortly")
    return runtime


Spec = Annotated[TaskSpec, Depends(_task_spec)]
RuntimeDep = Annotated[Runtime, Depends(_runtime)]


def _routes() -> APIRouter:
    router = APIRouter(
        prefix="/v1/tasks",
        tags=["ingest"],
        responses=error_responses(400, 404, 409, 413, 415, 422, 503),
    )

    @router.get("")
    async def list_tasks(request: Request) -> Response:
        tasks: dict[str, TaskSpec] = request.app.state.tasks
        listed = [
            {"name": s.name, "version": s.version, "description": s.description}
            for s in sorted(tasks.values(), key=lambda s: s.name)
        ]
        return json_response({"tasks": listed})

    @router.get("/{task}")
    async def get_task(spec: Spec) -> Response:
        return json_response(
            {"name": spec.name, "version": spec.version, "spec": spec.model_dump(mode="json")}
        )

    @router.post(
        "/{task}/observations",
        status_code=202,
        openapi_extra=request_body(OBSERVATION_SCHEMA, "observations", OBSERVATION_EXAMPLES),
    )
    async def post_observations(
        request: Request,
        spec: Spec,
        runtime: RuntimeDep,
    ) -> Response:
        body = await _read_records(request)
        correlation_id = uuid.uuid4()
        events = records.observation_events(
            spec, body, producer=runtime.producer, now=utcnow(), correlation_id=correlation_id
        )
        return await _append(runtime.store, spec.name, events, correlation_id)

    @router.post(
        "/{task}/labels",
        status_code=202,
        openapi_extra=request_body(LABEL_SCHEMA, "labels", LABEL_EXAMPLES),
    )
    async def post_labels(
        request: Request,
        spec: Spec,
        runtime: RuntimeDep,
    ) -> Response:
        body = await _read_records(request)
        correlation_id = uuid.uuid4()
        wanted = records.labelled_observations(spec.name, body)
        found = await _store_call(lambda: runtime.store.get(wanted))
        events = records.label_events(
            spec,
            body,
            found,
            producer=runtime.producer,
            now=utcnow(),
            correlation_id=correlation_id,
        )
        return await _append(runtime.store, spec.name, events, correlation_id)

    return router


async def _read_records(request: Request) -> list[dict[str, Any]]:
    settings: IngestSettings = request.app.state.settings
    content_type = request.headers.get("content-type")
    records.body_format(content_type)  # refuse a wrong content type before reading the body
    body = await _read_body(request, settings.max_body_bytes)
    return records.parse_records(body, content_type, max_records=settings.max_records)


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused as soon as it is known to exceed `limit` (declared or while streaming)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise records.BodyError(f"invalid Content-Length {declared!r}")
        if int(declared) > limit:
            raise BodyTooLarge(_too_large(limit))
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge(_too_large(limit))
    return bytes(body)


def _too_large(limit: int) -> str:
    return f"the body is larger than {limit} bytes: send smaller batches"


async def _store_call(call: Callable[[], Any]) -> Any:
    try:
        return await call()
    except STORE_FAILURES as exc:
        log.warning("ingest.store_unavailable", error=f"{exc.__class__.__name__}: {exc}")
        raise StoreUnavailable(
            "the event store is unavailable; nothing was stored: retry the same request"
        ) from exc


async def _append(
    store: EventStore, task: str, events: Sequence[Envelope], correlation_id: uuid.UUID
) -> Response:
    try:
        appended = await _store_call(lambda: store.append(events, refuse_changed=True))
    except EventIdTaken as exc:
        # An id already naming an event of another stream (a client UUID reused for another
        # task) is refused by index; the store appended nothing.
        taken = set(exc.event_ids)
        clashes = [
            records.RecordIssue(
                i, f"event_id {e.event_id} already names an event of another stream"
            )
            for i, e in enumerate(events)
            if e.event_id in taken
        ]
        raise records.RecordsInvalid(clashes, len(events)) from None
    except EventIdChanged as exc:
        # A retry must repeat what it sent: the same id with other content is not a retry.
        changed = set(exc.event_ids)
        conflicts = [
            records.RecordIssue(
                i,
                f"this row was labelled before with another label (event {e.event_id}); "
                "a row is labelled once"
                if e.type == "LabelRecorded"
                else f"event_id {e.event_id} was recorded before with other content: an id "
                "names one event; send a new id for a new event",
            )
            for i, e in enumerate(events)
            if e.event_id in changed
        ]
        raise records.RecordsConflict(
            conflicts, len(events), "name events recorded before with other content"
        ) from None
    duplicates = sum(a.duplicate for a in appended)
    instruments.appended(task, events[0].type, len(appended) - duplicates, duplicates)
    log.info(
        "ingest.appended",
        task=task,
        type=events[0].type,
        accepted=len(appended) - duplicates,
        duplicates=duplicates,
        correlation_id=str(correlation_id),
    )
    return json_response(
        {
            "accepted": len(appended) - duplicates,
            "duplicates": duplicates,
            "ids": [a.event_id for a in appended],
            "positions": [a.position for a in appended],
        },
        status_code=202,
    )


# -- errors ----------------------------------------------------------------------------------------


def _install_error_responses(app: FastAPI) -> None:
    """Every refusal of bad input is a 4xx with a message; a store outage is a 503."""
    statuses: dict[type[Exception], tuple[int, str]] = {
        UnknownTask: (404, instruments.UNKNOWN_TASK),
        records.BodyError: (400, instruments.MALFORMED),
        BodyTooLarge: (413, instruments.TOO_LARGE),
        records.TooManyRecords: (413, instruments.TOO_LARGE),
        records.UnsupportedMediaType: (415, instruments.UNSUPPORTED_MEDIA_TYPE),
        StoreUnavailable: (503, instruments.STORE_UNAVAILABLE),
    }
    for exc_type, (status, reason) in statuses.items():
        app.add_exception_handler(exc_type, _detail_handler(status, reason))
    app.add_exception_handler(records.RecordsInvalid, _invalid_records)


def _task_label(request: Request) -> str:
    """The path's task when it is a known one, else "": a metric label never takes a name
    a client made up."""
    task = request.path_params.get("task", "")
    return task if task in request.app.state.tasks else ""


def _detail_handler(status: int, reason: str) -> Callable[[Request, Exception], Any]:
    async def handle(request: Request, exc: Exception) -> Response:
        instruments.refused(_task_label(request), reason)
        if status < 500:  # a store outage is logged where it happened
            log.info("ingest.refused", path=request.url.path, status=status, reason=str(exc))
        return json_response({"detail": str(exc)}, status_code=status)

    return handle


async def _invalid_records(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, records.RecordsInvalid)
    reason = instruments.CONFLICT if exc.status == 409 else instruments.INVALID
    instruments.refused(_task_label(request), reason, exc.total)
    log.info("ingest.refused", path=request.url.path, status=exc.status, invalid=len(exc.issues))
    listed = exc.issues[:MAX_LISTED_ERRORS]
    return json_response(
        {
            "detail": str(exc),
            "invalid": len(exc.issues),
            "total": exc.total,
            "errors": [{"index": i.index, "error": i.error} for i in listed],
            "errors_omitted": len(exc.issues) - len(listed),
        },
        status_code=exc.status,
    )
