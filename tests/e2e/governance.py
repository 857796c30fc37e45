"""Reading governance over HTTP as the e2e tests of the task kinds do."""

from __future__ import annotations

import httpx


async def champion_with_passed_audit(governance: httpx.AsyncClient, task: str) -> dict | None:
    """The task's audits and its champion, once the champion is a version whose audit passed
    (None until then: poll with tests.support.eventually)."""
    audits = (await governance.get(f"/v1/tasks/{task}/audits")).json()["audits"]
    routing = (await governance.get(f"/v1/tasks/{task}/routing")).json()
    champion = (routing.get("champion") or {}).get("model_version")
    passed = {a["model_version"] for a in audits if a["passed"]}
    return {"audits": audits, "champion": champion} if champion in passed else None
