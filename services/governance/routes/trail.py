"""The audit trail: every event of a task in store order, as JSON pages or streamed JSON lines."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import StreamingResponse

from services.governance import queries
from services.governance.routes.deps import governance, viewer
from services.governance.service import Governance
from services.governance.trail import TrailQuery, trail_streams
from shared.events.envelope import Envelope
from shared.http import MAX_POSITION

router = APIRouter(prefix="/v1/tasks/{task}", tags=["trail"], dependencies=[Depends(viewer)])
Gov = Annotated[Governance, Depends(governance)]
NDJSON = "application/x-ndjson"


def _line(envelope: Envelope) -> dict[str, Any]:
    return envelope.model_dump(mode="json")


@router.get(
    "/trail",
    responses={
        200: {
            "content": {NDJSON: {"schema": {"type": "string", "description": "one event a line"}}}
        }
    },
)
async def trail(
    request: Request,
    task: str,
    gov: Gov,
    since: datetime | None = None,
    until: datetime | None = None,
    type: Annotated[list[str] | None, Query(description="event types (repeatable)")] = None,
    include: Annotated[
        list[Literal["data", "predictions"]] | None,
        Query(description="also the task's data and/or prediction streams"),
    ] = None,
    after: Annotated[
        int, Query(ge=0, le=MAX_POSITION, description="position to continue after")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
    as_of: Annotated[
        int | None, Query(ge=0, le=MAX_POSITION, description="only events up to this position")
    ] = None,
    format: Literal["json", "jsonl"] | None = None,
) -> Any:
    """Decisions, audits, models and specs of a task in store order; JSON lines when asked."""
    async with gov.engine.connect() as conn:
        try:
            await queries.task_row(conn, task)
        except queries.Missing:
            if not await gov.store.read_stream(f"task-{task}", limit=1):
                raise
    if since and until and until < since:
        raise HTTPException(422, "until is before since")
    query = TrailQuery(
        streams=trail_streams(task, include or (), type or ()),
        types=tuple(type) if type else None,
        since=since,
        until=until,
        until_position=as_of,
    )
    if format == "jsonl" or NDJSON in request.headers.get("accept", ""):
        return StreamingResponse(_stream(gov, query, after), media_type=NDJSON)
    events, next_after = await query.page(gov.store, after, limit)
    return {
        "task": task,
        "events": [_line(e) for e in events],
        "next_after": next_after,
    }


async def _stream(gov: Governance, query: TrailQuery, after: int) -> AsyncIterator[bytes]:
    while True:
        events, next_after = await query.page(gov.store, after, 1000)
        for envelope in events:
            yield orjson.dumps(_line(envelope)) + b"\n"
        if next_after is None:
            return
        after = next_after
