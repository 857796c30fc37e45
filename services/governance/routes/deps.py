"""What routes share: the governance core, the caller's key and role, the engine to read."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Path, Query, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncEngine

from services.governance.auth import Principal, Role, Unauthenticated, allows, authenticate
from services.governance.service import Governance
from shared.http import MAX_POSITION, MAX_VERSION
from shared.tasks import StorableStr

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="continuo-governance"'}


def governance(request: Request) -> Governance:
    gov: Governance | None = getattr(request.app.state, "governance", None)
    if gov is None:
        raise HTTPException(503, "governance is starting")
    return gov


def _presented_key(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise HTTPException(
                401, "use 'Authorization: Bearer <key>' (or X-API-Key)", headers=_CHALLENGE
            )
        return value.strip()
    return request.headers.get("x-api-key")


# The two ways to present a key, declared in the OpenAPI document (security schemes); the key is
# read and checked by `require`, which answers 401 in one way for both.
_BEARER = HTTPBearer(auto_error=False, description="an API key: `Authorization: Bearer <key>`")
_API_KEY = APIKeyHeader(name="X-API-Key", auto_error=False, description="an API key")
Bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]
ApiKey = Annotated[str | None, Depends(_API_KEY)]


def require(role: Role) -> Callable[..., Awaitable[Principal]]:
    """A dependency: the caller's principal, if its key is valid and its role includes `role`."""

    async def check(request: Request, _bearer: Bearer = None, _key: ApiKey = None) -> Principal:
        gov = governance(request)
        try:
            who = await authenticate(gov.engine, _presented_key(request))
        except Unauthenticated as exc:
            raise HTTPException(401, str(exc), headers=_CHALLENGE) from None
        if not allows(who.role, role):
            raise HTTPException(
                403,
                f"this needs the {role.value} role (or admin); "
                f"key {who.key_id} ({who.name}) has the {who.role.value} role",
            )
        request.state.principal = who
        return who

    return check


viewer = require(Role.VIEWER)
operator = require(Role.OPERATOR)
approver = require(Role.APPROVER)
admin = require(Role.ADMIN)


async def read_engine(
    request: Request,
    as_of: int | None = Query(
        None,
        ge=0,
        le=MAX_POSITION,
        description="answer from the projections as of this store position",
    ),
) -> AsyncEngine:
    """The live projections, or a copy built up to `as_of` (same projection code)."""
    gov = governance(request)
    if as_of is None:
        return gov.engine
    head = await gov.store.head()
    if as_of > head:
        raise HTTPException(422, f"as_of {as_of} is beyond the event store's head ({head})")
    return await gov.as_of(as_of)


# A model version in a path.
Version = Annotated[int, Path(ge=1, le=MAX_VERSION, description="the model version")]


class Because(BaseModel):
    """Every decision says why. Bodies are strict: `true` is not version 1, nor "50" a weight."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [{"reason": "passes review, ticket 42"}]},
    )

    reason: StorableStr = Field(
        min_length=1, max_length=2000, description="why (recorded in the event)"
    )


class RollbackBody(Because):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"model_version": 11, "reason": "v12 misroutes refunds"}]}
    )

    model_version: int = Field(ge=1, le=MAX_VERSION)


class CanaryBody(Because):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"model_version": 42, "weight": 20, "reason": "try it on a fifth"}]
        }
    )

    model_version: int = Field(ge=1, le=MAX_VERSION)
    weight: float = Field(ge=0, le=100, description="percent of entities it answers (sticky)")


class WeightBody(Because):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"weight": 50, "reason": "no errors after an hour"}]}
    )

    weight: float = Field(ge=0, le=100, description="percent of entities it answers (sticky)")


class ShadowBody(Because):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"model_version": 41, "sample_rate": 0.5, "reason": "watch it"}]
        }
    )

    model_version: int = Field(ge=1, le=MAX_VERSION)
    sample_rate: float = Field(1.0, ge=0, le=1, description="share of requests it scores")


class PipelineBody(Because):
    """A new version of the task's spec (the task spec's YAML, as JSON)."""

    model_config = ConfigDict(
        strict=False,  # a spec is validated as the task spec it is (shared.tasks)
        json_schema_extra={
            "examples": [{"spec": {"name": "elec", "...": "..."}, "reason": "fewer features"}]
        },
    )

    spec: dict[str, Any] = Field(description="the whole spec, as in the task's YAML file")


class StartBody(Because):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"from_version": 0, "reason": "try the new features"}]}
    )

    from_version: int = Field(
        0,
        ge=0,
        le=MAX_VERSION,
        description="the data stream version the new pipeline replays from (0: all of it)",
    )


PipelineVersion = Annotated[
    str, Path(pattern=r"^[0-9a-f]{64}$", description="a pipeline (spec) version: its sha256")
]


class FlagBody(Because):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"flag": {"type": "boolean", "value": True}, "reason": "incident 7"},
                {
                    "flag": {
                        "type": "string",
                        "value": "old",
                        "variants": {"old": "old", "new": "new"},
                        "weights": {"old": 90, "new": 10},
                    },
                    "reason": "new checkout for a tenth of customers",
                },
                {"flag": None, "reason": "incident closed"},
            ]
        }
    )

    flag: dict[str, Any] | None = Field(
        description="{type: boolean|number|string, value, variants?, weights?}, or null to "
        "remove the flag"
    )
