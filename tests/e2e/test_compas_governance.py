"""COMPAS through the whole system: the trainer's models are audited as they appear, on
defendants whose outcomes they never learned, and the policy refuses the versions that exceed the
equalized-odds limit (or are no better than a constant), with the figures.

Outcomes arrive as they would: a defendant's two-year outcome is posted only once the stream has
reached the date two years after that defendant's screening, never at screening time.

The shipped limit (0.30) refuses none of the real trainer's versions on this file (their race
equalized-odds differences were 0.17-0.26 when this was written), so the test runs the same
stream under a stricter copy of the policy (LIMIT), where some versions pass and some do not.
"""

from __future__ import annotations

import asyncio
import time
from datetime import date, timedelta
from pathlib import Path

import httpx

from continuo.stack import Stack
from services.governance.compas import load_compas
from shared.settings import REPO_ROOT
from shared.tasks import load_spec

SPEC = load_spec(REPO_ROOT / "tasks" / "compas.yaml")
LIMIT = 0.22
DATA = REPO_ROOT / "data" / "compas-scores-two-years.csv.gz"


def compas_stream() -> list[tuple[date, str, list[dict]]]:
    """The file as a timeline: ("observations", records) at each screening date and
    ("labels", records) two years later, in date order (outcomes after screenings on a tie)."""
    frame = load_compas(DATA).sort_values(["compas_screening_date", "id"], kind="stable")
    names = [f.name for f in SPEC.input_features]
    timeline: list[tuple[date, int, dict]] = []
    for row in frame.to_dict("records"):
        screened = date.fromisoformat(str(row["compas_screening_date"])[:10])
        key = f"compas-{row['id']}"
        timeline.append(
            (
                screened,
                0,
                {
                    "entity_id": str(row["id"]),
                    "event_id": key,
                    "event_time": f"{screened.isoformat()}T00:00:00+00:00",
                    "features": {n: row[n] for n in names},
                },
            )
        )
        known = screened + timedelta(days=730)
        label = {
            "observation_id": key,
            "label": int(row["two_year_recid"]),
            "event_time": f"{known.isoformat()}T00:00:00+00:00",
        }
        timeline.append((known, 1, label))
    timeline.sort(key=lambda item: (item[0], item[1]))
    batches: list[tuple[date, str, list[dict]]] = []
    for day, kind, record in timeline:
        name = "labels" if kind else "observations"
        if batches and batches[-1][1] == name and len(batches[-1][2]) < 500:
            batches[-1][2].append(record)
        else:
            batches.append((day, name, [record]))
    return batches


async def _decided(client: httpx.AsyncClient, versions: int, timeout: float) -> list[dict]:
    """Every model version's record once each has a decision (promoted or refused)."""
    deadline = time.monotonic() + timeout
    while True:
        models = (await client.get("/v1/tasks/compas/models")).json().get("models", [])
        if len(models) >= versions and all(m["status"] != "candidate" for m in models):
            return models
        if time.monotonic() > deadline:
            states = [(m["model_version"], m["status"]) for m in models]
            raise AssertionError(f"not every model was decided in {timeout}s: {states}")
        await asyncio.sleep(0.3)


def stricter_tasks(directory: Path) -> Path:
    """A tasks folder whose COMPAS policy has the equalized-odds limit LIMIT."""
    directory.mkdir()
    text = (REPO_ROOT / "tasks" / "compas.yaml").read_text()
    assert "equalized_odds_difference_max: 0.30" in text
    (directory / "compas.yaml").write_text(
        text.replace(
            "equalized_odds_difference_max: 0.30", f"equalized_odds_difference_max: {LIMIT}"
        )
    )
    return directory


def test_no_outcome_is_posted_before_two_years_after_its_screening():
    screened: dict[str, date] = {}
    for day, kind, records in compas_stream():
        for record in records:
            if kind == "observations":
                screened[record["event_id"]] = day
            else:
                assert record["observation_id"] in screened
                assert day >= screened[record["observation_id"]] + timedelta(days=730)


async def _versions(client: httpx.AsyncClient, timeout: float) -> int:
    """How many model versions the trainer published, once it has learned every label."""
    deadline = time.monotonic() + timeout
    seen, stable_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        count = len((await client.get("/v1/tasks/compas/models")).json().get("models", []))
        if count != seen:
            seen, stable_since = count, time.monotonic()
        elif count and time.monotonic() - stable_since > 5:
            return count
        await asyncio.sleep(0.3)
    raise AssertionError(f"the trainer kept publishing for {timeout}s")


async def test_streamed_compas_models_are_audited_and_unfair_ones_refused(tmp_path: Path):
    stream = compas_stream()
    stack = Stack(
        tmp_path,
        store_url=f"sqlite+aiosqlite:///{tmp_path / 'events.db'}",
        env_overrides={"CONTINUO_TASKS_DIR": str(stricter_tasks(tmp_path / "tasks"))},
    )
    await stack.start()
    try:
        async with httpx.AsyncClient(base_url=stack.url("ingest"), timeout=60) as ingest:
            for _, kind, records in stream:
                response = await ingest.post(f"/v1/tasks/compas/{kind}", json=records)
                assert response.status_code == 202, response.text
        async with httpx.AsyncClient(
            base_url=stack.url("governance"), headers=stack.governance_headers(), timeout=30
        ) as governance:
            versions = await _versions(governance, timeout=120)
            models = await _decided(governance, versions, timeout=120)
            audits = (await governance.get("/v1/tasks/compas/audits")).json()["audits"]
            trail = (
                await governance.get("/v1/tasks/compas/trail", params={"type": "PromotionRefused"})
            ).json()["events"]
    finally:
        stack.stop()

    candidates = [a for a in audits if a["scope"] == "candidate"]
    audited = {a["model_version"] for a in candidates}
    superseded = {
        e["payload"]["model_version"]
        for e in trail
        if any("superseded" in r for r in e["payload"]["reasons"])
    }
    # Every candidate audited as it appeared (or superseded while its audit waited for
    # outcomes); a challenger (published after a drift to run as a shadow, which answers nobody)
    # is audited as it appears when the outcomes are there, else before it may become a canary.
    challengers = {m["model_version"] for m in models if m["role"] == "challenger"}
    assert audited | superseded | challengers == set(range(1, versions + 1))
    assert all(
        m["status"] in ("shadow", "stopped", "refused") for m in models if m["role"] == "challenger"
    )
    for a in candidates:  # audited on defendants whose outcomes it had never learned
        assert a["window"]["rows_learned_by_model"] == 0
        assert a["window"]["first_position"] > a["window"]["labels_after_position"]
        assert a["window"]["rows"] >= 200
    failed = {
        a["model_version"]: a for a in audits if a["scope"] == "candidate" and not a["passed"]
    }
    refused = {m["model_version"] for m in models if m["status"] == "refused"}
    figures = {
        a["model_version"]: a["report"]["attributes"]["race"]["equalized_odds_difference"]
        for a in audits
        if a["scope"] == "candidate"
    }
    assert failed, f"no version exceeded {LIMIT}: the check would prove nothing {figures}"
    assert len(failed) < versions, f"every version exceeded {LIMIT}: {figures}"
    assert set(failed) <= refused  # a failed audit always means a refusal
    assert any(m["status"] in ("champion", "retired") for m in models)
    over = {v for v, a in failed.items() if figures[v] is not None and figures[v] > LIMIT}
    assert over, f"no version exceeded {LIMIT}: {figures}"
    for event in trail:
        version = event["payload"]["model_version"]
        if version in failed:  # the refusal quotes the audit's reasons, figures included
            reasons = event["payload"]["reasons"]
            assert [f"bias audit failed: {r}" for r in failed[version]["reasons"]] == [
                r for r in reasons if r.startswith("bias audit failed")
            ]
            if version in over:
                joined = " ".join(reasons)
                assert f"race: equalized-odds difference {figures[version]:.2f}" in joined
                assert f"> {LIMIT}" in joined
    assert {e["payload"]["model_version"] for e in trail} >= set(failed)
