"""The closed loop with the four services as separate processes: on a stream with an abrupt
drift, the drift alarm starts a challenger, it runs as a live shadow (and goes on learning: its
newer versions take its arm), wins on the same rows, passes its audit, becomes a canary and is
promoted by the analysis, no person acting; a canary of
the pre-drift model (truly worse) is rolled back. Every step is an event in governance's trail."""

from __future__ import annotations

from pathlib import Path

import httpx

from continuo.loop import describe, loop_spec, run_loop
from continuo.stack import Stack, write_task_specs
from shared.deployments import POLICY


def _one(trail: list[dict], kind: str, **where: object) -> dict:
    found = [
        e
        for e in trail
        if e["type"] == kind and all(e["payload"].get(k) == v for k, v in where.items())
    ]
    assert len(found) == 1, (kind, where, [describe(e) for e in trail])
    return found[0]


async def test_drift_challenger_shadow_canary_promotion_and_a_rolled_back_canary(
    sqlite_url: str, tmp_path: Path
):
    spec = loop_spec()
    stack = Stack(
        tmp_path, store_url=sqlite_url, env_overrides=write_task_specs(tmp_path / "tasks", [spec])
    )
    await stack.start()
    try:
        run = await run_loop(stack, task=spec.name)
        async with httpx.AsyncClient(base_url=stack.url("serving")) as serving:
            routing = (await serving.get(f"/v1/tasks/{spec.name}/routing")).json()
    finally:
        stack.stop()
    trail = run.trail
    lines = [describe(e) for e in trail]

    shadow = next(e for e in trail if e["type"] == "ShadowStarted")
    assert shadow["payload"]["decided_by"] == POLICY
    assert shadow["payload"]["reason"].startswith("challenger restart-after-drift-at-"), lines
    config = shadow["payload"]["reason"].split()[1]
    drift_row = int(config.split("-at-")[1])
    assert 3200 <= drift_row <= 3800  # the drift is at row 3200
    # The challenger goes on learning: each newer version takes its parent's arm (shadow or
    # canary). The version promoted is one of that line, through the canary analysis.
    line = {
        e["payload"]["model_version"]
        for e in trail
        if e["type"] in ("ShadowStarted", "CanaryStarted") and config in e["payload"]["reason"]
    }
    ended = _one(trail, "CanaryEnded", outcome="promoted")
    version = ended["payload"]["model_version"]
    assert version in line, lines
    audit = _one(trail, "AuditCompleted", model_version=version, scope="candidate")
    canary = _one(trail, "CanaryStarted", model_version=version)
    promoted = _one(trail, "ModelPromoted", model_version=version)
    won = next(  # the line's first win as a shadow, on the same rows as the champion
        e
        for e in trail
        if e["type"] == "ShadowStopped"
        and e["payload"]["outcome"] == "canary"
        and e["payload"]["model_version"] in line
    )
    order = [shadow, won, canary, promoted, ended]
    assert [e["position"] for e in order] == sorted(e["position"] for e in order), lines
    assert audit["position"] < canary["position"], lines
    assert audit["payload"]["passed"] is True
    for decision in (won, canary, promoted, ended):
        assert decision["payload"]["decided_by"] == POLICY  # no person acted
    for decision in (won, ended):
        evidence = decision["payload"]["evidence"]
        assert evidence["p_value"] <= spec.promotion.canary.alpha and evidence["effect"] > 0.1
    assert ended["payload"]["evidence"]["n_canary"] >= spec.promotion.canary.min_labels
    replaced = [e for e in trail if e["payload"].get("outcome") == "replaced"]
    assert all(e["payload"]["model_version"] in line for e in replaced), lines

    # The operator's canary of the pre-drift champion: rolled back by the analysis.
    tried = next(
        e for e in trail if e["type"] == "CanaryStarted" and e["payload"]["decided_by"] == "stack"
    )
    stale = tried["payload"]["model_version"]
    assert stale < version
    back = _one(trail, "CanaryEnded", model_version=stale)
    assert back["payload"]["outcome"] == "rolled_back" and back["payload"]["decided_by"] == POLICY
    assert back["payload"]["evidence"]["effect"] < -0.1
    assert back["payload"]["evidence"]["p_value"] <= spec.promotion.canary.alpha

    # Serving applied it all: the promoted challenger (or a later champion) answers, no canary.
    assert routing["canary"] is None
    assert routing["champion"]["model_version"] >= version
    assert run.served_accuracy > 0.7


async def test_entrants_of_the_race_run_as_live_shadows_beside_the_closed_loop(
    sqlite_url: str, tmp_path: Path
):
    # The same loop with the race's runner-up published as an entrant every 500 rows: it runs
    # as a live shadow, and a newer entrant takes its arm (as a shadow, or as the canary it
    # won); the learner's own candidates are still decided on their merits (an entrant
    # published right after one does not supersede it), and the challenger still wins after
    # the drift.
    spec = loop_spec(entrants=True)
    stack = Stack(
        tmp_path, store_url=sqlite_url, env_overrides=write_task_specs(tmp_path / "tasks", [spec])
    )
    await stack.start()
    try:
        run = await run_loop(stack, task=spec.name)
    finally:
        stack.stop()
    trail = run.trail
    lines = [describe(e) for e in trail]
    entrants = {
        e["payload"]["model_version"]
        for e in trail
        if e["type"] == "ShadowStarted" and e["payload"]["reason"].startswith("entrant ")
    }
    assert len(entrants) >= 2, lines
    for e in trail:
        if e["type"] == "ShadowStarted" and e["payload"]["model_version"] in entrants:
            assert e["payload"]["decided_by"] == POLICY
    # A newer entrant takes an entrant's arm: `replaced` when it is the same configuration's
    # next version, `superseded` when the race's runner-up is another configuration now (the
    # race searches windows too, so it changes often). Which arm it takes (a shadow, or the
    # canary it won) depends on how many labels came in between.
    config_of = {
        e["payload"]["model_version"]: e["payload"]["reason"].split()[1].rstrip(",")
        for e in trail
        if e["type"] == "ShadowStarted" and e["payload"]["reason"].startswith("entrant ")
    }
    taken = [
        e
        for e in trail
        if e["type"] in ("ShadowStopped", "CanaryEnded")
        and e["payload"]["outcome"] in ("replaced", "superseded")
        and e["payload"]["model_version"] in entrants
    ]
    assert taken, lines
    for e in taken:
        reason, config = e["payload"]["reason"], config_of[e["payload"]["model_version"]]
        if e["payload"]["outcome"] == "replaced":
            assert f"the same entrant ({config})" in reason, lines
        else:  # "superseded by entrant v9 (blend-slow), the race's runner-up now"
            newer = reason.split("(", 1)[1].split(")", 1)[0]
            assert newer != config, lines
    for e in trail:
        if e["type"] == "PromotionRefused":
            for reason in e["payload"]["reasons"]:
                if reason.startswith("superseded by version "):
                    assert int(reason.split()[3]) not in entrants, lines
    # After the drift a shadow (the challenger, or an entrant) won and the analysis promoted it.
    assert any(
        e["type"] == "ModelPromoted" and e["payload"]["reason"].startswith("canary:") for e in trail
    ), lines
    assert run.served_accuracy > 0.7
