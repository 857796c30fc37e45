"""Decision endpoints: approve and reject (approver), promote and roll back (operator).

Each records who (the key's name), when (the event's time) and why (`reason`, required).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from services.governance.auth import Principal
from services.governance.routes.deps import Because, RollbackBody, approver, governance, operator
from services.governance.service import Governance

router = APIRouter(prefix="/v1/tasks/{task}", tags=["decisions"])
Gov = Annotated[Governance, Depends(governance)]


@router.post("/models/{version}/approve")
async def approve(
    task: str,
    version: int,
    body: Because,
    gov: Gov,
    who: Annotated[Principal, Depends(approver)],
) -> dict[str, Any]:
    """Approve a version; with enough approvals it is promoted if it passes the policy."""
    return await gov.approve(task, version, who, body.reason)


@router.post("/models/{version}/reject")
async def reject(
    task: str,
    version: int,
    body: Because,
    gov: Gov,
    who: Annotated[Principal, Depends(approver)],
) -> dict[str, Any]:
    return await gov.reject(task, version, who, body.reason)


@router.post("/models/{version}/promote")
async def promote(
    task: str,
    version: int,
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
