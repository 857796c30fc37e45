"""Decision endpoints: approve and reject (approver); promote, roll back, canaries, shadows,
flags and pipeline versions (operator).

Each records who (the key's name), when (the event's time) and why (`reason`, required).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path

from services.governance.auth import Principal
from services.governance.routes.deps import (
    Because,
    CanaryBody,
    FlagBody,
    PipelineBody,
    PipelineVersion,
    RollbackBody,
    ShadowBody,
    StartBody,
    Version,
    WeightBody,
    approver,
    governance,
    operator,
)
from services.governance.service import Governance

router = APIRouter(prefix="/v1/tasks/{task}", tags=["decisions"])
Gov = Annotated[Governance, Depends(governance)]


@router.post("/models/{version}/approve")
async def approve(
    task: str,
    version: Version,
    body: Because,
    gov: Gov,
    who: Annotated[Principal, Depends(approver)],
) -> dict[str, Any]:
    """Approve a version; with enough approvals it is promoted if it passes the policy."""
    return await gov.approve(task, version, who, body.reason)


@router.post("/models/{version}/reject")
async def reject(
    task: str,
    version: Version,
    body: Because,
    gov: Gov,
    who: Annotated[Principal, Depends(approver)],
) -> dict[str, Any]:
    return await gov.reject(task, version, who, body.reason)


@router.post("/models/{version}/promote")
async def promote(
    task: str,
    version: Version,
    body: Because,
    gov: Gov,
    who: Annotated[Principal, Depends(operator)],
) -> dict[str, Any]:
    """Promote by hand through the policy gate; 409 with every reason when it refuses."""
    return await gov.promote(task, version, who, body.reason)


@router.post("/rollback")
async def rollback(
    task: str,
    body: RollbackBody,
    gov: Gov,
    who: Annotated[Principal, Depends(operator)],
) -> dict[str, Any]:
    """Set the champion back to an earlier version that was promoted or approved."""
    return await gov.rollback(task, body.model_version, who, body.reason)


Operator = Annotated[Principal, Depends(operator)]


@router.post("/canary")
async def start_canary(task: str, body: CanaryBody, gov: Gov, who: Operator) -> dict[str, Any]:
    """Start a canary: the version answers `weight` percent of the entities (sticky by entity).
    409 when the policy refuses it (refused or rejected, failed audit, a canary already
    running, the kill switch on)."""
    return await gov.routing.start_canary(task, body.model_version, body.weight, who, body.reason)


@router.patch("/canary")
async def set_canary_weight(task: str, body: WeightBody, gov: Gov, who: Operator) -> dict[str, Any]:
    return await gov.routing.set_canary_weight(task, body.weight, who, body.reason)


@router.post("/canary/stop")
async def stop_canary(task: str, body: Because, gov: Gov, who: Operator) -> dict[str, Any]:
    return await gov.routing.stop_canary(task, who, body.reason)


@router.post("/shadows")
async def start_shadow(task: str, body: ShadowBody, gov: Gov, who: Operator) -> dict[str, Any]:
    """Start a shadow: the version scores `sample_rate` of requests beside the champion, its
    answers recorded and never returned, judged on the same rows as the champion."""
    return await gov.routing.start_shadow(
        task, body.model_version, body.sample_rate, who, body.reason
    )


@router.post("/shadows/{version}/stop")
async def stop_shadow(
    task: str, version: Version, body: Because, gov: Gov, who: Operator
) -> dict[str, Any]:
    return await gov.routing.stop_shadow(task, version, who, body.reason)


FlagKey = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]


@router.put("/flags/{key}")
async def set_flag(
    task: str, key: FlagKey, body: FlagBody, gov: Gov, who: Operator
) -> dict[str, Any]:
    """Set a flag (null removes it). Serving reads `kill_switch` (boolean: back to the last
    approved champion, no canary or shadows), `log_and_wait` (boolean), `online_features`
    (boolean) and `shadow_sample` (number, 0-1); any other key is the client's, read through
    OpenFeature."""
    return await gov.routing.set_flag(task, key, body.flag, who, body.reason)


@router.post("/pipelines")
async def register_pipeline(
    task: str, body: PipelineBody, gov: Gov, who: Operator
) -> dict[str, Any]:
    """Register a new version of the task's spec (a pipeline version). Nothing runs it until it
    is started. 422 when the spec is invalid, changes the target, or reads a feature the task's
    observations do not carry."""
    return await gov.pipelines.register(task, body.spec, who, body.reason)


@router.post("/pipelines/{version}/start")
async def start_pipeline(
    task: str, version: PipelineVersion, body: StartBody, gov: Gov, who: Operator
) -> dict[str, Any]:
    """The trainer runs this pipeline version from now on, after replaying the data stream from
    `from_version` (it catches up); serving answers with the champion until one of its models
    is promoted. Roll back or forward by promoting or rolling back to a model of a pipeline."""
    return await gov.pipelines.start(task, version, body.from_version, who, body.reason)
