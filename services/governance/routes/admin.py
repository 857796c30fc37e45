"""Admin and utility endpoints: rebuild the projections; the COMPAS score audit; who am I."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import PlainTextResponse

from services.governance.audit import render_audit
from services.governance.auth import Principal
from services.governance.routes.deps import admin, governance, viewer
from services.governance.service import Governance

router = APIRouter(prefix="/v1", tags=["admin"])
Gov = Annotated[Governance, Depends(governance)]


@router.post("/admin/rebuild", dependencies=[Depends(admin)])
async def rebuild(gov: Gov) -> dict[str, Any]:
    """Drop the projections and rebuild them from position 0 of the event store."""
    return await gov.rebuild()


@router.get("/auth/whoami")
async def whoami(who: Annotated[Principal, Depends(viewer)]) -> dict[str, str]:
    return {"key_id": who.key_id, "name": who.name, "role": who.role.value}


@router.get(
    "/compas/audit",
    dependencies=[Depends(viewer)],
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def compas_audit(gov: Gov, format: Literal["json", "text"] = "json") -> Any:
    """The COMPAS score itself audited as ProPublica did, with the compas task's limits."""
    from services.governance.compas import compas_report

    path = gov.settings.compas_path
    if not path.exists():
        raise HTTPException(404, f"the COMPAS file is not at {path}")
    report = await asyncio.to_thread(compas_report, path, gov.settings.tasks_dir / "compas.yaml")
    if format == "text":
        return PlainTextResponse(render_audit(report) + "\n")
    return report.model_dump(mode="json")
