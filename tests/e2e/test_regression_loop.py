"""A regression task through the running system (ingest, trainer, governance, serving, as
separate processes): serving answers values and records each row (log and wait), labels come to
ingest by prediction id one request late, the trainer learns them with an entity-scoped online
feature of the numeric labels, governance audits each candidate (per-group errors with
Fairlearn's MetricFrame) and promotes on mean absolute error, and serving answers with the
models that learned those labels."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
from sqlalchemy.ext.asyncio import create_async_engine

from continuo.caller import stream_through_serving, wait_until_learned
from continuo.simulate import Timing
from continuo.stack import Stack, write_task_specs
from services.governance.auth import Role, create_key
from services.governance.explain import CLIPPED, ONLINE_LEARNING
from tests.e2e.browser import served_and_audit_views
from tests.e2e.governance import champion_with_passed_audit, explained_answer
from tests.kinds import DEMAND, demand_stream
from tests.support import eventually

SPEC = DEMAND
TASK = SPEC.name
ROWS = 3000


async def test_a_regression_task_is_learned_audited_promoted_and_served_as_values(
    sqlite_url: str, tmp_path: Path
):
    features, units, stores = demand_stream(ROWS)
    stack = Stack(
        tmp_path, store_url=sqlite_url, env_overrides=write_task_specs(tmp_path / "tasks", [SPEC])
    )
    await stack.start()
    try:
        urls = {name: stack.url(name) for name in ("serving", "ingest")}
        # At a stated pace (as bench/served_kinds.py --rate): as fast as the client goes, how
        # many rows the first versions (no interval yet) answer depends on the machine.
        served = await stream_through_serving(
            urls, TASK, features, units, Timing(100, 1), entities=stores, progress=False, rate=300
        )
        status = await wait_until_learned(stack.url("trainer"), TASK, ROWS, timeout=120)
        async with httpx.AsyncClient(
            base_url=stack.url("governance"), headers=stack.governance_headers(), timeout=30
        ) as governance:

            def promoted_after_an_audit():  # the champion, once its audit has passed
                return champion_with_passed_audit(governance, TASK)

            decided = await eventually(promoted_after_an_audit, timeout=60)
            why = await explained_answer(governance, TASK, served.answered_by[-1][1])
            windows = (await governance.get(f"/v1/tasks/{TASK}/served-accuracy")).json()
            trail = (
                await governance.get(f"/v1/tasks/{TASK}/trail", params={"type": "ModelPromoted"})
            ).json()["events"]
            async with httpx.AsyncClient(base_url=stack.url("serving")) as serving:
                row = {"features": features[0], "entity_id": stores[0], "record": False}
                answer = (await serving.post(f"/v1/tasks/{TASK}/predict", json=row)).json()
            # A candidate may still be promoted after `decided` (its audit waits for labels).
            after = await eventually(promoted_after_an_audit, timeout=60)
        async with httpx.AsyncClient(base_url=stack.url("ingest")) as ingest:
            bad = await ingest.post(
                f"/v1/tasks/{TASK}/observations",
                json=[{"entity_id": "s", "features": features[0], "label": "lots"}],
            )
        engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'governance.db'}")
        _, key = await create_key(engine, "regression-test", Role.VIEWER)
        await engine.dispose()
        page = await served_and_audit_views(
            stack.url("governance"), key, TASK, why["answer"]["prediction_id"]
        )
    finally:
        stack.stop()

    # Serving answers a value (its label too), no probability.
    prediction = answer["predictions"][0]
    assert prediction["probability"] is None
    assert isinstance(prediction["value"], float) and prediction["label"] == prediction["value"]
    assert 1 < decided["champion"] <= answer["model_version"] <= after["champion"]
    assert answer["model_version"] in {a["model_version"] for a in after["audits"] if a["passed"]}

    # What callers got, asked before each label existed, labels one request late: once the
    # first models replaced the running mean, far better than any constant (the stores' levels
    # spread the labels over about 60 units), and the trainer's served MAE is that of the very
    # answers the client received.
    errors = served.abs_errors(units)
    answered = ~np.isnan(errors)
    constant = np.abs(np.array(units) - np.mean(units)).mean()
    late = errors[1500:]
    assert np.nanmean(late) < 0.25 * constant, (np.nanmean(late), constant)
    metrics = status["metrics"]
    assert metrics["served_n_labelled"] == answered.sum()
    assert abs(metrics["served_mae"] - np.nanmean(errors)) < 1e-6 * max(1.0, constant)
    # Each answer came with a 90% prediction interval (once the model had 20 errors to go by),
    # and about 90% of the labels fell inside: the callers' own coverage, labels one request late.
    assert prediction["interval"][0] < prediction["value"] < prediction["interval"][1]
    late_rows = {i: v for i, v in served.intervals.items() if i >= 1500}
    assert len(late_rows) == ROWS - 1500, (
        sorted(set(range(1500, ROWS)) - set(late_rows))[:5],
        served.answered_by[10:20],
    )
    inside = np.mean([lo <= units[i] <= hi for i, (lo, hi) in late_rows.items()])
    assert 0.8 <= inside <= 0.97, inside
    assert "served_accuracy" not in metrics

    # Every audited candidate is a regression audit with per-group errors.
    candidate = [a for a in decided["audits"] if a["scope"] == "candidate"]
    assert candidate
    for audit in candidate:
        report = audit["report"]
        assert report["kind"] == "regression"
        groups = report["attributes"]["region"]["groups"]
        assert set(groups) == {"north", "south"}
        assert all(g["mae"] is not None for g in groups.values())
    # Promotions were decided on mean absolute errors.
    assert any("MAE" in e["payload"]["reason"] for e in trail), [e["payload"] for e in trail]
    # Served windows hold errors, not counts of right answers.
    assert windows["windows"] and all(w["mae"] is not None for w in windows["windows"])
    assert all(w["accuracy"] is None for w in windows["windows"])
    # A label that is not a number is refused with the reason.
    assert bad.status_code == 422 and "label" in bad.text
    # The dashboard draws served MAE over time and the audit's per-group errors, without a
    # browser error.
    assert page["problems"] == []
    assert page["heading"] == f"Served MAE over time · {TASK}"
    assert page["pixels"] > 5000
    assert "R² over all rows" in page["audit"] and "MAE ratio" in page["audit"]
    # A recorded answer is explained in the target's units, a term per input the model was
    # given (and what serving's copy learned online since the version), nothing clipped.
    explained = why["explained"]
    assert explained["kind"] == "regression" and explained["unit"].startswith(SPEC.target.name)
    named = {c["feature"] for c in explained["contributions"]}
    assert named - {ONLINE_LEARNING} == set(SPEC.input_names) and CLIPPED not in named
    assert why["importance"]["features"]
    assert "the value answered" in page["lineage"] and page["bars"] >= 2
