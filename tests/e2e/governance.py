"""Reading governance over HTTP as the e2e tests of the task kinds do."""

from __future__ import annotations

import httpx

from tests.support import eventually


async def champion_with_passed_audit(governance: httpx.AsyncClient, task: str) -> dict | None:
    """The task's audits and its champion, once the champion is a version whose audit passed
    (None until then: poll with tests.support.eventually)."""
    audits = (await governance.get(f"/v1/tasks/{task}/audits")).json()["audits"]
    routing = (await governance.get(f"/v1/tasks/{task}/routing")).json()
    champion = (routing.get("champion") or {}).get("model_version")
    passed = {a["model_version"] for a in audits if a["passed"]}
    return {"audits": audits, "champion": champion} if champion in passed else None


async def explained_answer(governance: httpx.AsyncClient, task: str, version: int) -> dict:
    """A version's newest recorded answer as governance keeps it (waiting for its projection),
    its explanation and the version's feature importance."""

    async def newest() -> str | None:
        response = await governance.get(
            f"/v1/tasks/{task}/models/{version}/predictions", params={"limit": 1}
        )
        found = response.json().get("predictions") if response.status_code == 200 else None
        return found[0]["prediction_id"] if found else None

    prediction_id = await eventually(newest, timeout=30)
    answer = (await governance.get(f"/v1/predictions/{prediction_id}")).json()["prediction"]
    explained = await governance.get(f"/v1/predictions/{prediction_id}/explanation")
    importance = await governance.get(f"/v1/tasks/{task}/models/{version}/explanation")
    assert explained.status_code == 200, explained.text
    assert importance.status_code == 200, importance.text
    return {"answer": answer, "explained": explained.json(), "importance": importance.json()}
