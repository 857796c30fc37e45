"""The closed loop, end to end, on a stream whose truth is known.

A synthetic task of many entities whose concept changes abruptly: before the drift the class is
x1 > 0.5 XOR x2 > 0.5, after it x3 > 0.5 XOR x4 > 0.5 (5% of labels flipped). No linear model can
learn either concept, trees can; the champion's trees are published every `publish_every` rows, so
after the drift it answers with stale trees until its next version. What follows, with no person
acting: the trainer's drift detector fires and a fresh learner (the challenger) learns the rows
after it; it is published with role `challenger` (and again as it goes on learning, each newer
version taking its arm); governance runs it as a live shadow, scored beside the champion on the
same rows; the shadow analysis (always-valid) finds it better and,
after the audit gate, starts it as a canary on a share of the entities; the canary analysis, on
the canary's own traffic, promotes it. Then an operator starts a canary of the pre-drift champion
(truly worse now) and the analysis rolls it back. Every step is an event in the trail.

The caller plays log and wait, as `continuo demo` does: it asks serving, records the rows, and
posts the labels by prediction id right after each request.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

from continuo.caller import stream_through_serving, wait_until_learned
from continuo.simulate import Timing
from continuo.stack import Stack
from shared.events.types import drift_summary
from shared.tasks import (
    CanaryPolicy,
    Feature,
    LearnerSpec,
    PromotionPolicy,
    Target,
    TaskSpec,
)

TASK = "drift-loop"
FEATURES = ("x1", "x2", "x3", "x4")
# Decisions shown in the loop's trail, in the order they happen.
ROUTING = (
    "DriftDetected",
    "AuditCompleted",
    "ShadowStarted",
    "ShadowStopped",
    "CanaryStarted",
    "CanaryWeightChanged",
    "CanaryEnded",
    "ModelPromoted",
    "ModelRolledBack",
)


def loop_spec(name: str = TASK, publish_every: int = 3000, entrants: bool = False) -> TaskSpec:
    """The drifting task; `entrants`: the trainer's race runner-up runs as a live shadow too."""
    return TaskSpec(
        name=name,
        description="synthetic: an abrupt concept change, many entities (continuo/loop.py)",
        features=tuple(Feature(name=f) for f in FEATURES),
        target=Target(name="y"),
        # Audited at every step (the group is drawn at random: the audits pass), never learned.
        sensitive=(Feature(name="group", type="category", categories=("a", "b")),),
        learner=LearnerSpec(publish_every=publish_every),
        promotion=PromotionPolicy(
            require_audit=True,
            canary=CanaryPolicy(
                weight=50.0, min_labels=150, shadow_entrants=entrants, entrant_every=500
            ),
        ),
    )


def drift_stream(
    rows: int,
    drift_at: int,
    *,
    entities: int = 200,
    noise: float = 0.05,
    seed: int = 11,
    groups: bool = True,
) -> tuple[list[dict[str, Any]], list[int], list[str]]:
    """Features, labels and entity ids of a stream whose concept changes at row `drift_at`
    (with `groups`, each row has a random sensitive `group`)."""
    rng = np.random.default_rng(seed)
    X = rng.random((rows, len(FEATURES)))
    before = (X[:, 0] > 0.5) ^ (X[:, 1] > 0.5)
    after = (X[:, 2] > 0.5) ^ (X[:, 3] > 0.5)
    y = np.where(np.arange(rows) < drift_at, before, after)
    y = np.where(rng.random(rows) < noise, ~y, y).astype(int)
    features: list[dict[str, Any]] = [dict(zip(FEATURES, map(float, x), strict=True)) for x in X]
    if groups:
        for row, group in zip(features, rng.choice(["a", "b"], size=rows), strict=True):
            row["group"] = str(group)
    return features, y.tolist(), [f"entity-{i % entities}" for i in range(rows)]


@dataclass
class LoopRun:
    trail: list[dict[str, Any]]  # the task's deployment decisions and drift alarms, in order
    served_accuracy: float
    rows: int


async def _trail(client: httpx.AsyncClient, task: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    after: int | None = 0
    while after is not None:
        page = (
            await client.get(
                f"/v1/tasks/{task}/trail",
                params={"after": after, "limit": 500, "type": list(ROUTING)},
            )
        ).json()
        events += page["events"]
        after = page["next_after"]
    return events


async def run_loop(
    stack: Stack,
    *,
    task: str = TASK,
    rows: int = 9000,
    drift_at: int = 3200,
    rollback_at: int = 6500,
    rate: float = 300.0,
) -> LoopRun:
    """Stream the drifting task through serving; at `rollback_at` an operator starts a canary of
    the pre-drift champion. Returns the trail as governance gives it."""
    features, labels, entities = drift_stream(rows, drift_at)
    urls = {name: stack.url(name) for name in ("serving", "ingest")}
    async with httpx.AsyncClient(
        base_url=stack.url("governance"), headers=stack.governance_headers(), timeout=30
    ) as gov:
        first = await stream_through_serving(
            urls,
            task,
            features[:rollback_at],
            labels[:rollback_at],
            Timing(20, 0),
            entities=entities[:rollback_at],
            progress=False,
            rate=rate,
        )
        so_far = await _trail(gov, task)
        shadowed = next(  # the challenger after the drift (not an entrant of the race)
            (
                e["position"]
                for e in so_far
                if e["type"] == "ShadowStarted" and e["payload"]["reason"].startswith("challenger ")
            ),
            1 << 62,
        )
        promoted = [e for e in so_far if e["type"] == "ModelPromoted" and e["position"] < shadowed]
        stale = promoted[-1]["payload"]["model_version"] if promoted else None
        if stale is not None:
            await gov.post(
                f"/v1/tasks/{task}/canary",
                json={
                    "model_version": stale,
                    "weight": 50,
                    "reason": "operator: try the pre-drift model again",
                },
            )
        second = await stream_through_serving(
            urls,
            task,
            features[rollback_at:],
            labels[rollback_at:],
            Timing(20, 0),
            entities=entities[rollback_at:],
            progress=False,
            rate=rate,
        )
        trail = await _trail(gov, task)
    right = np.concatenate([first.right(labels[:rollback_at]), second.right(labels[rollback_at:])])
    return LoopRun(trail, float(right.mean()), rows)


def describe(event: dict[str, Any]) -> str:
    """One line of the trail: what, which version, who decided, why, and the evidence."""
    p = event["payload"]
    what = event["type"]
    if what == "DriftDetected":
        seen = drift_summary(p.get("detector", ""), p.get("evidence") or {})
        return f"{what:<16} at row {p.get('at_labelled')} ({seen})"
    if what == "AuditCompleted":
        verdict = "passed" if p.get("passed") else f"failed: {'; '.join(p.get('reasons', []))}"
        return f"{what:<16} v{p.get('model_version')} ({p.get('scope')}) {verdict}"
    outcome = f" -> {p['outcome']}" if "outcome" in p else ""
    weight = f" weight {p['weight']:g}%" if "weight" in p else ""
    evidence = p.get("evidence") or {}
    counts = ("n", "n_champion", "n_canary", "accuracy_champion", "accuracy_canary")
    shown = {k: evidence[k] for k in counts if k in evidence}
    return (
        f"{what:<16} v{p.get('model_version')}{outcome}{weight} by {p.get('decided_by')}: "
        f"{p.get('reason', '')}" + (f" {shown}" if shown else "")
    )


async def with_every_arm(
    stack: Stack, task: str, *, rows: int = 3000, groups: bool = True
) -> dict[str, Any]:
    """Stream `rows` rows of the stream (before its drift) through serving, then have an operator
    start a canary (50% of entities) and a shadow (every request) of earlier versions and set
    flags: the task runs a champion, a canary, a shadow and flags. Returns governance's routing."""
    features, labels, entities = drift_stream(rows, drift_at=rows, groups=groups)
    urls = {name: stack.url(name) for name in ("serving", "ingest")}
    await stream_through_serving(
        urls, task, features, labels, Timing(50, 0), entities=entities, progress=False
    )
    await wait_until_learned(stack.url("trainer"), task, rows, timeout=120)
    async with httpx.AsyncClient(
        base_url=stack.url("governance"), headers=stack.governance_headers(), timeout=30
    ) as gov:
        base = f"/v1/tasks/{task}"
        for _ in range(100):  # governance decides on the last versions in the background
            models = (await gov.get(f"{base}/models")).json()["models"]
            if all(m["status"] != "candidate" for m in models):
                break
            await asyncio.sleep(0.2)
        spare = [m["model_version"] for m in models if m["status"] == "retired"]
        if len(spare) < 2:
            raise RuntimeError(f"need two earlier versions to route, have {models}")
        why = {"reason": "benchmark: every arm on"}
        for path, body in (
            (f"{base}/canary", {**why, "model_version": spare[-1], "weight": 50}),
            (f"{base}/shadows", {**why, "model_version": spare[-2], "sample_rate": 1.0}),
            (f"{base}/flags/shadow_sample", {**why, "flag": {"type": "number", "value": 1.0}}),
            (
                f"{base}/flags/checkout",
                {
                    **why,
                    "flag": {
                        "type": "string",
                        "value": "old",
                        "variants": {"old": "old", "new": "new"},
                        "weights": {"old": 80, "new": 20},
                    },
                },
            ),
        ):
            response = await (gov.put if "/flags/" in path else gov.post)(path, json=body)
            if response.status_code != 200:
                raise RuntimeError(f"{path}: {response.status_code} {response.text}")
        routing: dict[str, Any] = (await gov.get(f"{base}/routing")).json()
        return routing
