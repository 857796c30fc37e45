"""The predict route's direct lane: `POST /v1/tasks/{task}/predict` answered on ASGI, without
FastAPI's request machinery.

A single-record predict is serving's hot path, and FastAPI's layers (its middleware stack, routing,
dependency solving, body validation and the response's trip back through every layer) cost more
than the prediction itself: a third of serving's CPU per request, measured. `ServingApp` answers
the requests it can answer exactly as the route would, and hands every other request to FastAPI:

- the same work: `routes.predict_answer`, the route's own body (refusals are its HTTPExceptions,
  rendered as FastAPI renders them: `{"detail": ...}` with their status and headers);
- the same contract: the body must be JSON (`Content-Type: application/json`), within the
  service's size limit, and valid as `PredictRequest` (pydantic parses and validates the bytes in
  one step). Anything else, from a missing content type to a field of the wrong type, goes to
  FastAPI with the bytes already read, so every error keeps FastAPI's exact answer; so does every
  request while serving is starting.

OpenAPI still documents the route from `routes.py`, which serves what this lane passes on.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

import orjson
import structlog
from fastapi import FastAPI, HTTPException
from pydantic import ValidationError

from services.serving.routes import predict_answer
from services.serving.schemas import PredictRequest
from services.serving.state import ServingState

log = structlog.get_logger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# FastAPI's `{task}` path parameter: one path segment.
_PREDICT = re.compile(r"/v1/tasks/([^/]+)/predict")
_JSON = b"application/json"


class ServingApp(FastAPI):
    """FastAPI, with single-record and batch predicts answered directly (see the module doc)."""

    def __init__(self, *, max_body_size: int, **kwargs: Any) -> None:
        super().__init__(max_body_size=max_body_size, **kwargs)
        self._max_body_size = max_body_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            match = _PREDICT.fullmatch(_route_path(scope))
            state: ServingState | None = self.state.serving
            if match is not None and state is not None:
                await self._predict(state, match.group(1), scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    async def _predict(
        self, state: ServingState, task: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower() != _JSON or (
            declared is not None and (not declared.isdigit() or int(declared) > self._max_body_size)
        ):
            await super().__call__(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                await super().__call__(scope, _replay(chunks, receive, message), send)
                return
            chunk = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            if size > self._max_body_size:  # FastAPI answers 413, reading the rest itself
                await super().__call__(scope, _replay(chunks, receive, None, more=True), send)
                return
            if not message.get("more_body", False):
                break
        raw = b"".join(chunks)
        try:
            body = PredictRequest.model_validate_json(raw)
        except ValidationError:  # FastAPI's 422, in its shape
            await super().__call__(scope, _replay([raw], receive, None), send)
            return
        try:
            answer = await predict_answer(state, task, body)
        except HTTPException as exc:
            await _send_json(send, exc.status_code, {"detail": exc.detail}, exc.headers)
            return
        except Exception:
            log.exception("http.unexpected_error", path=scope["path"], method="POST")
            await _send_json(send, 500, {"detail": "internal error; see the service log"})
            return
        await _send(send, 200, answer)


def _route_path(scope: Scope) -> str:
    """The path the app routes on (Starlette's: the path without the app's root path)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def _replay(
    chunks: list[bytes], receive: Receive, last: Message | None, *, more: bool = False
) -> Receive:
    """A `receive` that gives the bytes already read again (as one message), then `last` (if
    any), then whatever the client still sends."""
    pending: list[Message] = [{"type": "http.request", "body": b"".join(chunks), "more_body": more}]
    if last is not None:
        pending.append(last)

    async def replayed() -> Message:
        return pending.pop(0) if pending else await receive()

    return replayed


async def _send_json(
    send: Send, status: int, content: Any, headers: Mapping[str, str] | None = None
) -> None:
    await _send(send, status, orjson.dumps(content), headers)


async def _send(
    send: Send, status: int, body: bytes, headers: Mapping[str, str] | None = None
) -> None:
    raw = [(b"content-type", _JSON), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
