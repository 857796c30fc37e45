"""Governance in process, on a real event store, the embedded broker and artifacts on disk.

Other services are played by the test: it appends their events to the store and relays them to
Kafka (producer "tests"), exactly as the trainer and serving would.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import lightgbm as lgb
import numpy as np
import orjson
import pandas as pd

from services.governance.app import create_app
from services.governance.auth import revoke_key
from services.governance.service import Governance
from services.governance.settings import GovernanceSettings
from shared import model_codec
from shared.arm_health import ArmHealth
from shared.artifacts import FileArtifactStore
from shared.bus import KafkaPublisher, ensure_topics
from shared.deployments import POLICY
from shared.events.envelope import Envelope, Payload, new_event
from shared.events.types import (
    ArmsScored,
    ArmsServed,
    ConfigDropped,
    DriftDetected,
    ModelTrained,
    ObservationRecorded,
    PredictionServed,
    ServedScored,
    data_stream,
    deployment_stream,
    governance_stream,
    model_stream,
    prediction_stream,
)
from shared.registry import register_tasks
from shared.relay import Relay
from shared.settings import REPO_ROOT
from shared.store.sql import SqlEventStore, open_event_store
from shared.tasks import (
    CanaryPolicy,
    Feature,
    PromotionPolicy,
    Target,
    TaskSpec,
    feature_vector,
    load_spec,
    validate_features,
)
from tests.support import TEST_PRODUCER, eventually

ROLES = ("viewer", "operator", "approver", "admin")


def _key() -> str:
    return f"cnt_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"


@dataclass
class World:
    store: SqlEventStore
    artifacts: FileArtifactStore
    relay: Relay
    client: httpx.AsyncClient
    gov: Governance
    keys: dict[str, str]
    models: dict[int, bytes] = field(default_factory=dict)

    def as_(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}"}

    async def append(self, events: list[Envelope], expected: int | None = None) -> list[int]:
        """Append one stream's events as another service would, and relay them to Kafka."""
        appended = await self.store.append(events, expected_version=expected)
        while await self.relay.publish_once():
            pass
        return [a.position for a in appended]

    async def record(self, payload: Payload, stream: str, **kw: object) -> int:
        [position] = await self.append(
            [new_event(payload, stream_id=stream, producer=TEST_PRODUCER, **kw)]  # type: ignore[arg-type]
        )
        return position

    async def decisions(self, task: str) -> list[Envelope]:
        return await self.store.read_stream(deployment_stream(task))

    async def decided(self, task: str, count: int) -> list[Envelope]:
        async def probe() -> list[Envelope] | None:
            found = await self.decisions(task)
            return found if len(found) >= count else None

        return await eventually(probe, timeout=30)

    async def get(self, path: str, role: str = "viewer", **kw: object) -> httpx.Response:
        return await self.client.get(path, headers=self.as_(role), **kw)  # type: ignore[arg-type]

    async def post(self, path: str, role: str, body: object) -> httpx.Response:
        return await self.client.post(path, headers=self.as_(role), json=body)


@asynccontextmanager
async def world(
    store_url: str, kafka: str, tmp_path: Path, *specs: TaskSpec
) -> AsyncIterator[World]:
    await ensure_topics(kafka)
    store = open_event_store(store_url)
    publisher = KafkaPublisher(kafka)
    await publisher.start()
    await register_tasks(store, list(specs), TEST_PRODUCER)
    keys = {role: _key() for role in ROLES}
    bootstrap = ",".join(
        f"{name}:{role}:{keys[role]}"
        for role, name in zip(ROLES, ("vic", "otto", "ann", "root"), strict=True)
    )
    settings = GovernanceSettings(
        environment="test",
        store_url=store_url,
        kafka_bootstrap_servers=kafka,
        artifacts_dir=tmp_path / "artifacts",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'governance.db'}",
        consumer_group=f"gov-{uuid.uuid4().hex[:8]}",
        bootstrap_keys=bootstrap,
        live_audit_interval=0,
        relay_interval=0.02,
    )
    relay = Relay(store, publisher, producer="tests")
    app = create_app(settings)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gov") as client:
                yield World(
                    store,
                    FileArtifactStore(settings.artifacts_dir),
                    relay,
                    client,
                    app.state.governance,
                    keys,
                )
    finally:
        await publisher.stop()
        await store.close()


# ---------------------------------------------------------------------------------------------
# COMPAS: models trained on slices of the file, audited as they appear


def compas_spec() -> TaskSpec:
    shipped = load_spec(REPO_ROOT / "tasks" / "compas.yaml")
    return shipped.model_copy(update={"name": f"compas{uuid.uuid4().hex[:8]}"})


def compas_rows(spec: TaskSpec) -> tuple[list[dict[str, object]], np.ndarray]:
    frame = pd.read_csv(REPO_ROOT / "data" / "compas-scores-two-years.csv.gz")
    frame = frame.sort_values("compas_screening_date", kind="stable")
    names = [f.name for f in spec.input_features]
    rows = [validate_features(spec, r) for r in frame[names].to_dict("records")]
    return rows, frame["two_year_recid"].to_numpy()


def train(spec: TaskSpec, rows: list[dict[str, object]], y: np.ndarray) -> bytes:
    """A plain LightGBM on the task's model features (sensitive attributes left out)."""
    X = np.array([feature_vector(spec, r) for r in rows])
    booster = lgb.train(
        {"objective": "binary", "verbose": -1, "seed": 7},
        lgb.Dataset(X, y, categorical_feature=[5]),
        num_boost_round=50,
    )
    return model_codec.encode(
        n_features=X.shape[1],
        members=[(1.0, booster)],
        feature_names=[f.name for f in spec.model_features],
    )


async def stream_compas(w: World, spec: TaskSpec, step: int = 500) -> dict[int, ModelTrained]:
    """Append the file, then a model per 500 rows trained on the 2,000 rows before that point
    (so each has later labelled rows, which it never learned, for its audit)."""
    rows, y = compas_rows(spec)
    positions = []
    for start in range(0, len(rows), step):
        events = [
            new_event(
                ObservationRecorded(
                    task=spec.name,
                    pipeline_version=spec.version,
                    entity_id=str(i),
                    features=rows[i],
                    label=int(y[i]),
                ),
                stream_id=data_stream(spec.name),
                producer=TEST_PRODUCER,
            )
            for i in range(start, min(len(rows), start + step))
        ]
        positions += await w.append(events)
    first, trained = positions[0], {}
    for version, end in enumerate(range(step, len(rows) + 1, step), start=1):
        lo = max(0, end - spec.promotion.window)
        model = train(spec, rows[lo:end], y[lo:end])
        w.models[version] = model
        fact = ModelTrained(
            task=spec.name,
            model_version=version,
            parent_version=version - 1 or None,
            pipeline_version=spec.version,
            artifact_sha256=w.artifacts.put(model),
            config="lgbm-50",
            params={},
            metrics={"recent_accuracy": 0.6 + version / 1000},
            first_position=first,
            last_position=positions[end - 1],
            n_learned=step,
            n_learned_total=end,
        )
        event = new_event(fact, stream_id=model_stream(spec.name), producer=TEST_PRODUCER)
        await w.append([event], expected=version - 1)
        trained[version] = fact
    return trained


async def test_a_candidate_awaiting_its_audit_is_superseded_by_a_newer_candidate_only(
    sqlite_url: str, kafka: str, tmp_path: Path
):
    # A candidate that learned every stored row waits for labelled rows it never learned. A
    # challenger or an entrant published after it runs beside the champion and does not
    # supersede it (entrants come right after the candidate of the same row); a newer
    # candidate does.
    spec = compas_spec()
    task = spec.name
    async with world(sqlite_url, kafka, tmp_path, spec) as w:
        w.gov.evidence_retry = 0.2
        rows, y = compas_rows(spec)
        events = [
            new_event(
                ObservationRecorded(
                    task=task,
                    pipeline_version=spec.version,
                    entity_id=str(i),
                    features=rows[i],
                    label=int(y[i]),
                ),
                stream_id=data_stream(task),
                producer=TEST_PRODUCER,
            )
            for i in range(300)
        ]
        positions = await w.append(events)
        model = train(spec, rows[:300], y[:300])

        async def add(version: int, role: str) -> None:
            fact = ModelTrained(
                task=task,
                model_version=version,
                parent_version=None,
                pipeline_version=spec.version,
                artifact_sha256=w.artifacts.put(model),
                config="lgbm-50",
                params={},
                metrics={"recent_accuracy": 0.6},
                first_position=positions[0],
                last_position=positions[-1],
                n_learned=300,
                n_learned_total=300,
                role=role,
            )
            event = new_event(fact, stream_id=model_stream(task), producer=TEST_PRODUCER)
            await w.append([event], expected=version - 1)

        await add(1, "candidate")
        await add(2, "entrant")
        await add(3, "challenger")

        async def listed() -> bool:
            models = (await w.get(f"/v1/tasks/{task}/models")).json().get("models", [])
            return len(models) == 3

        await eventually(listed, timeout=20)
        await asyncio.sleep(1.0)  # v1 is looked at again every 0.2 s meanwhile

        def about_v1(decisions: list[Envelope]) -> list[Envelope]:
            return [e for e in decisions if e.payload["model_version"] == 1]

        assert about_v1(await w.decisions(task)) == []

        async def refused_v1() -> list[Envelope] | None:
            return about_v1(await w.decisions(task)) or None

        await add(4, "candidate")
        [refused] = await eventually(refused_v1, timeout=20)
        assert refused.type == "PromotionRefused"
        assert refused.payload["reasons"][0].startswith("superseded by version 4 before 200")


async def test_compas_models_are_audited_as_they_appear_and_those_over_the_limit_are_refused(
    sqlite_url: str, kafka: str, tmp_path: Path
):
    spec = compas_spec()
    task = spec.name
    async with world(sqlite_url, kafka, tmp_path, spec) as w:
        trained = await stream_compas(w, spec)
        decisions = await w.decided(task, len(trained))
        await w.gov.idle()

        audits = {
            e.payload["model_version"]: e.payload
            for e in await w.store.read_all(types=["AuditCompleted"], limit=100)
        }
        assert sorted(audits) == sorted(trained)
        outcome = {e.payload["model_version"]: e for e in decisions}
        refused, promoted = [], []
        for version, audit in audits.items():
            race = audit["report"]["attributes"]["race"]
            # Audited on the rows after the last one it learned: none of them seen in training.
            assert audit["window"]["rows"] == min(7214 - 500 * version, spec.promotion.window)
            assert audit["window"]["labels_after_position"] == trained[version].last_position
            assert set(race["groups"]) >= {"African-American", "Caucasian", "Hispanic"}
            for figures in race["groups"].values():
                assert {"selection_rate", "accuracy", "false_positive_rate"} <= set(figures)
            over = race["equalized_odds_difference"] > 0.30
            assert audit["passed"] is not over
            decision = outcome[version]
            if over:
                refused.append(version)
                assert decision.type == "PromotionRefused"
                reasons = decision.payload["reasons"]
                prefix = "bias audit failed: race: equalized-odds difference "
                [reason] = [r for r in reasons if r.startswith(prefix)]
                figure = float(reason.removeprefix(prefix).split(" ")[0])
                assert abs(figure - race["equalized_odds_difference"]) < 0.005, reason
                assert reason.endswith("> 0.3")
            else:
                promoted.append(version)
                assert decision.type == "ModelPromoted"
            # The spec keeps race and sex out of the features; the audit checks the model agrees.
            assert not any("sensitive attribute" in r for r in audit["reasons"])
        assert refused and promoted, (refused, promoted)
        timings = w.gov.audit_seconds
        print(f"\naudits: {len(timings)}, mean {np.mean(timings):.3f}s, max {max(timings):.3f}s")
        print(f"refused (equalized odds > 0.30): {refused}; promoted: {promoted}")

        # The trail shows the audits and the refusals, in store order, with the figures.
        async def trail_complete() -> dict[str, object] | None:
            body = (await w.get(f"/v1/tasks/{task}/trail", params={"limit": 1000})).json()
            kinds = [e["type"] for e in body["events"]]
            return body if kinds.count("AuditCompleted") == len(trained) else None

        trail = await eventually(trail_complete)
        positions = [e["position"] for e in trail["events"]]
        assert positions == sorted(positions)
        kinds = [e["type"] for e in trail["events"]]
        assert kinds.count("PromotionRefused") == len(refused)
        assert kinds.count("ModelTrained") == len(trained) and "ObservationRecorded" not in kinds
        only_refusals = await w.get(f"/v1/tasks/{task}/trail", params={"type": "PromotionRefused"})
        assert [e["payload"]["model_version"] for e in only_refusals.json()["events"]] == refused

        # Models list: status and audit verdict per version.
        models = (await eventually(_models_settled(w, task, len(trained)))).json()
        status = {m["model_version"]: m["status"] for m in models["models"]}
        assert {v for v, s in status.items() if s == "refused"} == set(refused)
        assert models["champion"] == max(promoted)
        await _lineage_both_ways(w, spec, trained, models["champion"])
        await _live_audit(w, spec)
        await _rebuilt_and_as_of_answers_equal_live(w, task)


def _models_settled(w: World, task: str, count: int):
    async def probe() -> httpx.Response | None:
        response = await w.get(f"/v1/tasks/{task}/models")
        models = response.json().get("models", [])
        settled = len(models) == count and all(m["status"] != "candidate" for m in models)
        return response if settled else None

    return probe


async def _lineage_both_ways(
    w: World, spec: TaskSpec, trained: dict[int, ModelTrained], champion: int
) -> None:
    task = spec.name
    rows, _ = compas_rows(spec)
    predictor = model_codec.decode(w.models[champion])
    X = np.array([feature_vector(spec, rows[0])])
    prediction_id = uuid.uuid4()
    await w.record(
        PredictionServed.one(
            task,
            prediction_id=prediction_id,
            model_version=champion,
            entity_id="p1",
            features=rows[0],
            probability=float(predictor.predict_proba(X)[0]),
            label=int(predictor.predict_proba(X)[0] >= 0.5),
        ),
        prediction_stream(task),
        event_id=prediction_id,
    )

    async def served() -> httpx.Response | None:
        response = await w.get(f"/v1/predictions/{prediction_id}")
        return response if response.status_code == 200 else None

    lineage = (await eventually(served)).json()
    model = trained[champion]
    assert lineage["model"]["model_version"] == champion
    assert lineage["pipeline"]["version"] == spec.version
    assert lineage["data"]["first_position"] == model.first_position
    assert lineage["data"]["last_position"] == model.last_position
    events = (
        await w.get(f"/v1/tasks/{task}/models/{champion}/events", params={"limit": 100})
    ).json()
    assert len(events["events"]) == 100 and events["next_after"] is not None
    assert events["events"][0]["position"] == model.first_position

    explained = (await w.get(f"/v1/predictions/{prediction_id}/explanation")).json()
    total = sum(c["contribution"] for c in explained["contributions"]) + explained["bias"]
    assert abs(total - explained["logit"]) < 1e-6
    assert abs(explained["probability"] - explained["served_probability"]) < 1e-9
    assert explained["kind"] == "binary" and explained["unit"] == "log-odds of class 1"
    # A class to explain applies to a multiclass task only.
    asked = await w.get(f"/v1/predictions/{prediction_id}/explanation", params={"class": "1"})
    assert asked.status_code == 422 and "multiclass" in asked.text
    assert {c["feature"] for c in explained["contributions"]} == {
        f.name for f in spec.model_features
    }
    importance = (await w.get(f"/v1/tasks/{task}/models/{champion}/explanation")).json()
    assert abs(sum(f["share"] for f in importance["features"]) - 1) < 1e-9

    # The other way: which versions learned from a given data event, or a range.
    v3 = trained[3]
    first_of_v3_chunk = v3.last_position - 499
    data_event = (
        await w.store.read_all(after=first_of_v3_chunk - 1, limit=1, streams=[data_stream(task)])
    )[0]
    saw = (
        await w.get(f"/v1/tasks/{task}/data/models", params={"event_id": str(data_event.event_id)})
    ).json()
    assert saw["model_versions"] == [v for v in trained if v >= 3]
    early = (
        await w.get(
            f"/v1/tasks/{task}/data/models",
            params={"first_position": model.first_position, "last_position": v3.last_position},
        )
    ).json()
    assert early["model_versions"] == sorted(trained)


async def _live_audit(w: World, spec: TaskSpec) -> None:
    task = spec.name
    champion = w.gov  # the champion's served predictions: a batch like serving records
    rows, _ = compas_rows(spec)
    state = await champion.deployment_state(task)
    predictor = model_codec.decode(w.models[state.champion])
    batch = rows[:400]
    proba = predictor.predict_proba(np.array([feature_vector(spec, r) for r in batch]))
    events = []
    for row, p in zip(batch, proba, strict=True):
        pid = uuid.uuid4()
        payload = PredictionServed.one(
            task,
            prediction_id=pid,
            model_version=state.champion,
            entity_id=None,
            features=row,
            probability=float(p),
            label=int(p >= 0.5),
        )
        events.append(
            new_event(
                payload, stream_id=prediction_stream(task), producer=TEST_PRODUCER, event_id=pid
            )
        )
    await w.append(events)

    async def all_projected() -> bool:
        return (await w.get(f"/v1/predictions/{events[-1].event_id}")).status_code == 200

    await eventually(all_projected)  # one partition, in order: the last one comes last
    [live] = await w.gov.live_audits()
    assert live.scope == "live" and live.window["rows"] >= 400
    assert "equalized_odds_difference" in live.window["not_computed_without_outcomes"]
    race = live.report["attributes"]["race"]
    assert race["demographic_parity_difference"] is not None
    assert race["equalized_odds_difference"] is None
    assert all(g["accuracy"] is None for g in race["groups"].values())
    assert any("no outcomes" in note for note in live.report["notes"])
    assert await w.gov.live_audits() == []  # nothing new served: not audited again


async def _rebuilt_and_as_of_answers_equal_live(w: World, task: str) -> None:
    paths = [
        f"/v1/tasks/{task}/models",
        f"/v1/tasks/{task}/models/3/lineage",
        f"/v1/tasks/{task}/deployment",
        f"/v1/tasks/{task}/audits",
    ]

    async def answers(**params: object) -> list[object]:
        return [(await w.get(p, params=params)).json() for p in paths]

    head = await w.store.head()

    async def caught_up() -> list[object] | None:
        live = await answers()
        return live if live == await answers(as_of=head) else None

    live = await eventually(caught_up)
    rebuilt = await w.post("/v1/admin/rebuild", "admin", {})
    assert rebuilt.status_code == 200 and rebuilt.json()["head"] == head
    assert await answers() == live
    assert await answers(as_of=head) == live
    earlier = await answers(as_of=head // 2)
    assert earlier != live


# ---------------------------------------------------------------------------------------------
# Approvals, refusals, manual promotion, rollback, access control and bad input


def approval_spec() -> TaskSpec:
    return TaskSpec(
        name=f"appr{uuid.uuid4().hex[:8]}",
        features=(Feature(name="x"),),
        target=Target(name="y"),
        promotion=PromotionPolicy(require_approval=True, approvals_required=2),
    )


def tiny_model(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(200, 1))
    booster = lgb.train(
        {"objective": "binary", "num_leaves": 4, "verbose": -1},
        lgb.Dataset(X, (X[:, 0] > 0).astype(int)),
        num_boost_round=5,
    )
    return model_codec.encode(n_features=1, members=[(1.0, booster)], feature_names=["x"])


async def add_model(
    w: World,
    spec: TaskSpec,
    version: int,
    accuracy: float,
    role: str = "candidate",
    parent: int | None = -1,  # -1: the version before
) -> None:
    fact = ModelTrained(
        task=spec.name,
        model_version=version,
        parent_version=(version - 1 or None) if parent == -1 else parent,
        pipeline_version=spec.version,
        artifact_sha256=w.artifacts.put(tiny_model(version)),
        config="tiny",
        params={},
        metrics={"recent_accuracy": accuracy},
        first_position=1,
        last_position=version * 10,
        n_learned=10,
        n_learned_total=version * 10,
        role=role,
    )
    event = new_event(fact, stream_id=model_stream(spec.name), producer=TEST_PRODUCER)
    await w.append([event], expected=version - 1)


async def test_models_wait_for_approvals_and_every_human_decision_names_who_and_why(
    store_url: str, kafka: str, tmp_path: Path
):
    spec = approval_spec()
    task, base = spec.name, f"/v1/tasks/{spec.name}"
    async with world(store_url, kafka, tmp_path, spec) as w:
        await add_model(w, spec, 1, 0.80)
        [asked] = await w.decided(task, 1)
        assert asked.type == "ApprovalRequested"
        assert "awaiting approval: 0 of 2" in asked.payload["reasons"]

        first = await w.post(f"{base}/models/1/approve", "approver", {"reason": "looks fine"})
        assert first.status_code == 200 and first.json()["promoted"] is False
        again = await w.post(f"{base}/models/1/approve", "approver", {"reason": "still fine"})
        assert again.json()["approvals"] == ["ann"] and again.json()["promoted"] is False
        done = await w.post(f"{base}/models/1/approve", "admin", {"reason": "second pair of eyes"})
        assert done.json()["promoted"] is True, done.json()
        promoted = (await w.decisions(task))[-1]
        assert promoted.type == "ModelPromoted" and promoted.payload["decided_by"] == "root"

        await add_model(w, spec, 2, 0.70)  # worse than the champion: refused, not waiting
        decisions = await w.decided(task, 6)
        assert decisions[-1].type == "PromotionRefused"
        assert "recent accuracy 0.7000 < champion 0.8000" in decisions[-1].payload["reasons"][0]

        await add_model(w, spec, 3, 0.85)
        await w.decided(task, 7)
        rejected = await w.post(f"{base}/models/3/reject", "approver", {"reason": "odd drift"})
        assert rejected.status_code == 200
        again = await w.post(f"{base}/models/3/reject", "approver", {"reason": "still odd"})
        assert again.status_code == 409
        assert again.json()["reasons"] == ["ann has already rejected version 3"]
        refused = await w.post(f"{base}/models/3/promote", "operator", {"reason": "ship it"})
        assert refused.status_code == 409
        assert refused.json()["reasons"] == ["rejected by ann: odd drift"]

        await add_model(w, spec, 4, 0.86)
        await w.decided(task, 10)
        waiting = await w.post(f"{base}/models/4/promote", "operator", {"reason": "urgent"})
        assert waiting.status_code == 409
        assert waiting.json()["reasons"] == ["awaiting approval: 0 of 2"]
        await w.post(f"{base}/models/4/approve", "approver", {"reason": "ok"})
        done = await w.post(f"{base}/models/4/approve", "admin", {"reason": "ok"})
        assert done.json()["promoted"] is True

        back = await w.post(f"{base}/rollback", "operator", {"model_version": 1, "reason": "bug"})
        assert back.status_code == 200 and back.json()["from_version"] == 4
        rolled = (await w.decisions(task))[-1]
        assert rolled.type == "ModelRolledBack" and rolled.payload["decided_by"] == "otto"
        assert rolled.payload["reason"] == "bug"
        never = await w.post(f"{base}/rollback", "operator", {"model_version": 3, "reason": "x"})
        assert never.status_code == 409
        forward = await w.post(f"{base}/rollback", "operator", {"model_version": 4, "reason": "x"})
        assert forward.status_code == 409
        # Forward again is a promotion (4 was approved), which names the champion it replaced.
        again = await w.post(f"{base}/models/4/promote", "operator", {"reason": "fixed"})
        assert again.status_code == 200 and again.json()["previous_version"] == 1
        assert (await w.decisions(task))[-1].payload["previous_version"] == 1
        back = await w.post(f"{base}/rollback", "operator", {"model_version": 1, "reason": "bug"})
        assert back.status_code == 200 and back.json()["from_version"] == 4

        # Who, when and why of every decision, in order, from the trail.
        trail = (await w.get(f"{base}/trail", params={"type": ["ApprovalGranted"]})).json()
        assert [(e["payload"]["model_version"], e["payload"]["by"]) for e in trail["events"]] == [
            (1, "ann"),
            (1, "ann"),
            (1, "root"),
            (4, "ann"),
            (4, "root"),
        ]
        lines = await w.client.get(
            f"{base}/trail", headers={**w.as_("viewer"), "Accept": "application/x-ndjson"}
        )
        assert lines.headers["content-type"].startswith("application/x-ndjson")
        exported = [orjson.loads(line) for line in lines.text.splitlines()]
        assert [e["position"] for e in exported] == sorted(e["position"] for e in exported)
        assert len(exported) == len(
            await w.store.read_all(
                streams=[f"task-{task}", f"models-{task}", f"deployments-{task}"], limit=1000
            )
        )
        paged, after = [], 0
        while after is not None:
            page = (await w.get(f"{base}/trail", params={"after": after, "limit": 4})).json()
            paged += page["events"]
            after = page["next_after"]
        assert [e["event_id"] for e in paged] == [e["event_id"] for e in exported]
        past = (await w.get(f"{base}/trail", params={"until": "2000-01-01T00:00:00Z"})).json()
        assert past["events"] == []
        since = exported[5]["recorded_at"]
        recent = (await w.get(f"{base}/trail", params={"since": since, "format": "jsonl"})).text
        assert len(recent.splitlines()) <= len(exported) - 5

        expected = {
            1: "champion",
            2: "refused",
            3: "refused",  # rejected, then a manual promotion was refused: the newest decision
            4: "retired",
        }

        async def statuses() -> bool:
            models = (await w.get(f"{base}/models")).json()["models"]
            return {m["model_version"]: m["status"] for m in models} == expected

        await eventually(statuses)

        await _access_control(w, task)
        await _bad_input(w, task)


async def _access_control(w: World, task: str) -> None:
    path = f"/v1/tasks/{task}/models"
    missing = await w.client.get(path)
    assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
    assert "API key is required" in missing.json()["detail"]
    for bad in ("nonsense", _key(), w.keys["viewer"][:-2] + "xx"):
        response = await w.client.get(path, headers={"Authorization": f"Bearer {bad}"})
        assert response.status_code == 401, bad
        assert bad not in response.text
    assert (await w.client.get(path, headers={"X-API-Key": w.keys["viewer"]})).status_code == 200
    for role in ROLES:
        assert (await w.get(path, role)).status_code == 200
    body = {"reason": "r"}
    forbidden = await w.post(f"/v1/tasks/{task}/models/2/approve", "viewer", body)
    assert forbidden.status_code == 403
    assert "needs the approver role" in forbidden.json()["detail"]
    assert (await w.post(f"/v1/tasks/{task}/models/2/approve", "operator", body)).status_code == 403
    assert (await w.post(f"/v1/tasks/{task}/models/2/promote", "approver", body)).status_code == 403
    assert (await w.post("/v1/admin/rebuild", "operator", {})).status_code == 403
    assert (await w.get("/v1/auth/whoami", "approver")).json()["name"] == "ann"
    key_id = w.keys["viewer"].split("_")[1]
    assert await revoke_key(w.gov.engine, key_id)
    revoked = await w.get(path, "viewer")
    assert revoked.status_code == 401 and "revoked" in revoked.json()["detail"]


async def _bad_input(w: World, task: str) -> None:
    base = f"/v1/tasks/{task}"
    cases = [
        ("get", "/v1/tasks/nope/models", None, 404),
        ("get", f"{base}/models/99", None, 404),
        ("get", f"{base}/models/99/lineage", None, 404),
        ("get", f"{base}/models/x", None, 422),
        ("get", f"{base}/models?as_of=99999999", None, 422),
        ("get", f"{base}/models?as_of=-1", None, 422),
        ("get", f"/v1/predictions/{uuid.uuid4()}", None, 404),
        ("get", "/v1/predictions/not-a-uuid", None, 422),
        ("get", f"{base}/data/models", None, 422),
        ("get", f"{base}/data/models?event_id={uuid.uuid4()}", None, 404),
        ("get", f"{base}/trail?since=yesterday", None, 422),
        ("get", "/v1/tasks/nope/trail", None, 404),
        ("post", f"{base}/models/99/promote", {"reason": "x"}, 404),
        ("post", "/v1/tasks/nope/models/1/approve", {"reason": "x"}, 404),
        ("post", f"{base}/models/2/promote", {}, 422),
        ("post", f"{base}/models/2/promote", {"reason": ""}, 422),
        ("post", f"{base}/models/2/promote", {"reason": "x", "extra": 1}, 422),
        ("post", f"{base}/models/2/promote", {"reason": "worse"}, 409),
        ("post", f"{base}/models/1/promote", {"reason": "again"}, 409),
        ("post", f"{base}/rollback", {"model_version": 0, "reason": "x"}, 422),
        ("post", f"{base}/rollback", {"model_version": 99, "reason": "x"}, 404),
        # Numbers past what the store keeps, and text it cannot hold: 422, never a 500.
        ("get", f"{base}/models/9223372036854775808", None, 422),
        ("get", f"{base}/models/2147483648/lineage", None, 422),
        ("get", f"{base}/models?as_of=9223372036854775808", None, 422),
        ("get", f"{base}/trail?after=18446744073709551616", None, 422),
        ("get", f"{base}/audits?version=18446744073709551616", None, 422),
        ("post", f"{base}/models/18446744073709551616/promote", {"reason": "x"}, 422),
        ("post", f"{base}/rollback", {"model_version": 2**63, "reason": "x"}, 422),
        ("post", f"{base}/models/2/promote", {"reason": "a\u0000b"}, 422),
    ]
    for method, path, body, status in cases:
        if method == "get":
            response = await w.get(path, "admin")
        else:
            response = await w.client.post(path, headers=w.as_("admin"), json=body)
        assert response.status_code == status, (path, body, response.text)
        assert "detail" in response.json()
    worse = await w.post(f"{base}/models/2/promote", "admin", {"reason": "worse"})
    assert "recent accuracy 0.7000 < champion 0.8000" in worse.json()["reasons"][0]
    surrogate = await w.client.post(
        f"{base}/models/2/promote",
        headers={**w.as_("admin"), "content-type": "application/json"},
        content=b'{"reason": "\\ud800"}',
    )
    assert surrogate.status_code == 422 and "reason" in surrogate.text
    huge = b'{"reason": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    too_large = await w.client.post(
        f"{base}/models/2/promote",
        headers={**w.as_("admin"), "content-type": "application/json"},
        content=huge,
    )
    assert too_large.status_code == 413


# ---------------------------------------------------------------------------------------------
# Canaries, shadows and flags: bad input is refused with its reason and changes nothing


async def test_routing_decisions_refuse_bad_input_and_leave_the_routing_unchanged(
    store_url: str, kafka: str, tmp_path: Path
):
    spec = approval_spec()
    task, base = spec.name, f"/v1/tasks/{spec.name}"
    async with world(store_url, kafka, tmp_path, spec) as w:
        await add_model(w, spec, 1, 0.80)
        await w.decided(task, 1)
        for who in ("approver", "admin"):
            await w.post(f"{base}/models/1/approve", who, {"reason": "ok"})
        await add_model(w, spec, 2, 0.70)  # refused: worse than the champion
        await add_model(w, spec, 3, 0.85)  # awaiting approval: may run as a canary or shadow
        await w.decided(task, 6)

        async def unchanged(method: str, path: str, body: object, status: int) -> dict:
            before = await w.decisions(task)
            send = w.client.patch if method == "patch" else w.client.post
            if method == "put":
                send = w.client.put
            response = await send(path, headers=w.as_("operator"), json=body)
            assert response.status_code == status, (path, body, response.text)
            assert "detail" in response.json()
            assert [e.event_id for e in await w.decisions(task)] == [e.event_id for e in before]
            return response.json()

        why = {"reason": "try"}
        for weight in (-1, 100.5, "half", None, "50", True):
            await unchanged(
                "post", f"{base}/canary", {**why, "model_version": 3, "weight": weight}, 422
            )
        # A JSON true is not version 1, nor "3" version 3 (a rollback to v1 once took `true`).
        for version in (True, "3"):
            await unchanged(
                "post", f"{base}/canary", {**why, "model_version": version, "weight": 5}, 422
            )
            await unchanged("post", f"{base}/rollback", {**why, "model_version": version}, 422)
        huge = b'{"reason": "x", "model_version": 3, "weight": 1e309}'
        as_json = {**w.as_("operator"), "content-type": "application/json"}
        raw = await w.client.post(f"{base}/canary", headers=as_json, content=huge)
        assert raw.status_code == 422, raw.text
        # Not sent as JSON: 415 (a body that is not JSON at all: 400), as ingest answers.
        for content_type, status in (("text/plain", 415), ("application/json", 400)):
            headers = {**w.as_("operator"), "content-type": content_type}
            body = b"{" if status == 400 else b'{"reason": "x", "model_version": 3, "weight": 5}'
            sent = await w.client.post(f"{base}/canary", headers=headers, content=body)
            assert sent.status_code == status, sent.text
        await unchanged("post", f"{base}/canary", {**why, "model_version": 99, "weight": 5}, 404)
        await unchanged(
            "post", "/v1/tasks/nope/canary", {**why, "model_version": 3, "weight": 5}, 404
        )
        refused = await unchanged(
            "post", f"{base}/canary", {**why, "model_version": 2, "weight": 5}, 409
        )
        assert refused["reasons"] == ["version 2 was refused promotion"]
        champion = await unchanged(
            "post", f"{base}/canary", {**why, "model_version": 1, "weight": 5}, 409
        )
        assert champion["reasons"] == ["version 1 is the champion"]
        await unchanged("post", f"{base}/shadows", {**why, "model_version": 99}, 404)
        await unchanged(
            "post", f"{base}/shadows", {**why, "model_version": 3, "sample_rate": 2}, 422
        )
        await unchanged("post", f"{base}/shadows", {**why, "model_version": 2}, 409)
        await unchanged("patch", f"{base}/canary", {**why, "weight": 10}, 409)  # no canary yet
        await unchanged("post", f"{base}/canary/stop", why, 409)
        await unchanged("post", f"{base}/shadows/3/stop", why, 409)
        flags = [
            ("kill_switch", {"type": "number", "value": 1}),
            ("kill_switch", {"type": "boolean", "value": "yes"}),
            ("shadow_sample", {"type": "number", "value": 1.5}),
            ("shadow_sample", {"type": "string", "value": "all"}),
            (
                "color",
                {"type": "string", "value": "a", "variants": {"a": "x"}, "weights": {"a": 50}},
            ),
            ("color", {"type": "string", "value": "a", "weights": {"b": 100}}),
            # The value (the default) must be one of the variants' values.
            (
                "size",
                {"type": "number", "value": 3, "variants": {"a": 1, "b": 2}, "weights": {"a": 100}},
            ),
            ("color", {"type": "colour", "value": "a"}),
            ("online_features.nope", {"type": "boolean", "value": False}),  # no such feature
        ]
        for key, flag in flags:
            await unchanged("put", f"{base}/flags/{key}", {**why, "flag": flag}, 422)
        await unchanged("put", f"{base}/flags/bad%20key", {**why, "flag": None}, 422)
        await unchanged("put", f"{base}/flags/never_set", {**why, "flag": None}, 409)

        # A version is one arm at a time.
        shadow = await w.post(f"{base}/shadows", "operator", {**why, "model_version": 3})
        assert shadow.status_code == 200, shadow.text
        both = await unchanged(
            "post", f"{base}/canary", {**why, "model_version": 3, "weight": 5}, 409
        )
        assert both["reasons"] == ["version 3 is a shadow (stop it first)"]
        stopped = await w.post(f"{base}/shadows/3/stop", "operator", why)
        assert stopped.status_code == 200, stopped.text

        started = await w.post(
            f"{base}/canary", "operator", {**why, "model_version": 3, "weight": 10}
        )
        assert started.status_code == 200, started.text
        second = await unchanged(
            "post", f"{base}/canary", {**why, "model_version": 3, "weight": 5}, 409
        )
        assert "a canary is already running: version 3" in second["reasons"][0]
        await unchanged("patch", f"{base}/canary", {**why, "weight": 101}, 422)
        await unchanged("post", f"{base}/shadows", {**why, "model_version": 1}, 409)  # champion
        canary = await unchanged("post", f"{base}/shadows", {**why, "model_version": 3}, 409)
        assert canary["reasons"] == ["version 3 is the canary (stop it first)"]
        assert (
            await w.client.post(
                f"{base}/canary",
                headers=w.as_("viewer"),
                json={**why, "model_version": 3, "weight": 5},
            )
        ).status_code == 403

        routing = (await w.get(f"{base}/routing")).json()
        assert routing["champion"]["model_version"] == 1
        assert routing["canary"]["model_version"] == 3 and routing["canary"]["share"] == 10
        assert routing["shadows"] == [] and routing["flags"] == {} and not routing["killed"]
        assert (await w.get("/v1/tasks/nope/routing")).status_code == 404


# ---------------------------------------------------------------------------------------------
# Guardrails: serving's reports of each arm roll a failing or slow canary back, without labels


def served_report(task: str, arms: dict[tuple[str, int], tuple[int, int, float]]) -> ArmsServed:
    """What one replica reports: per (role, version), requests, failures and one latency."""
    reported = []
    for (role, version), (requests, errors, ms) in arms.items():
        health = ArmHealth()
        for i in range(requests):
            health.observe(ms, failed=i < errors)
        reported.append({"role": role, "model_version": version, **health.as_dict()})
    return ArmsServed(task=task, replica="test", seconds=5.0, arms=reported)


async def test_a_canary_that_fails_or_slows_its_requests_is_rolled_back_on_serving_reports(
    store_url: str, kafka: str, tmp_path: Path
):
    spec = TaskSpec(
        name=f"guard{uuid.uuid4().hex[:8]}",
        features=(Feature(name="x"),),
        target=Target(name="y"),
        promotion=PromotionPolicy(
            require_approval=True, approvals_required=1, canary=CanaryPolicy(min_requests=100)
        ),
    )
    task, base = spec.name, f"/v1/tasks/{spec.name}"
    why = {"reason": "try it"}
    async with world(store_url, kafka, tmp_path, spec) as w:
        await add_model(w, spec, 1, 0.80)
        await w.decided(task, 1)
        await w.post(f"{base}/models/1/approve", "approver", {"reason": "ok"})
        for version in (2, 3):  # awaiting approval: each may run as a canary
            await add_model(w, spec, version, 0.85)

        async def waiting() -> bool:
            models = (await w.get(f"{base}/models")).json()["models"]
            return {m["model_version"]: m["status"] for m in models} == {
                1: "champion",
                2: "awaiting_approval",
                3: "awaiting_approval",
            }

        await eventually(waiting, timeout=20)

        async def rolled_back(version: int, reports: list[ArmsServed]) -> dict[str, object]:
            started = await w.post(
                f"{base}/canary", "operator", {**why, "model_version": version, "weight": 50}
            )
            assert started.status_code == 200, started.text
            count = len(await w.decisions(task))
            for report in reports:
                await w.record(report, governance_stream(task))
            [ended] = (await w.decided(task, count + 1))[count:]
            assert ended.type == "CanaryEnded" and ended.payload["model_version"] == version
            assert ended.payload["outcome"] == "rolled_back", ended.payload
            assert ended.payload["decided_by"] == "governance/policy"
            routing = (await w.get(f"{base}/routing")).json()
            assert routing["canary"] is None and routing["champion"]["model_version"] == 1
            return ended.payload

        # Failing: nothing is read before both arms answered 100 requests (60 of 60 failed);
        # the next report brings both past it, and the canary's error rate is 0.6.
        failing = await rolled_back(
            2,
            [
                served_report(task, {("champion", 1): (60, 0, 2.0), ("canary", 2): (60, 60, 2.0)}),
                served_report(task, {("champion", 1): (60, 0, 2.0), ("canary", 2): (40, 0, 2.0)}),
            ],
        )
        assert failing["reason"] == "guardrail: canary error rate 0.6000 > champion 0.0000 + 0.01"
        assert failing["evidence"]["requests_canary"] == 100  # the first report did not trip it
        # Slow: healthy requests at 10x the champion's latency. The reports of the canary before
        # (its 60 failures) are not counted: this canary started after them.
        slow = await rolled_back(
            3,
            [served_report(task, {("champion", 1): (200, 0, 2.0), ("canary", 3): (200, 0, 20.0)})],
        )
        assert slow["reason"].startswith("guardrail: canary p99 latency"), slow["reason"]
        assert slow["evidence"]["error_rate_canary"] == 0.0
        assert slow["evidence"]["requests_champion"] == 200


async def test_a_canary_answering_all_traffic_is_judged_on_its_own_rows_paired_with_the_champion(
    store_url: str, kafka: str, tmp_path: Path
):
    # One entity: sticky routing sends every row to the canary and none to the champion, so a
    # two-sample test on each arm's own traffic would never decide while the canary answers
    # everyone. It is judged on its own rows against the champion's answers to them.
    spec = TaskSpec(
        name=f"solo{uuid.uuid4().hex[:8]}",
        features=(Feature(name="x"),),
        target=Target(name="y"),
        promotion=PromotionPolicy(require_approval=True, approvals_required=1),
    )
    task, base = spec.name, f"/v1/tasks/{spec.name}"
    async with world(store_url, kafka, tmp_path, spec) as w:
        await add_model(w, spec, 1, 0.80)
        await w.decided(task, 1)
        await w.post(f"{base}/models/1/approve", "approver", {"reason": "ok"})
        await add_model(w, spec, 2, 0.85)  # awaiting approval: may run as a canary

        async def waiting() -> bool:
            models = (await w.get(f"{base}/models")).json()["models"]
            return {m["model_version"]: m["status"] for m in models} == {
                1: "champion",
                2: "awaiting_approval",
            }

        await eventually(waiting, timeout=20)
        started = await w.post(
            f"{base}/canary", "operator", {"reason": "try it", "model_version": 2, "weight": 50}
        )
        assert started.status_code == 200, started.text
        count = len(await w.decisions(task))

        def scored(n: int, champion_n: int) -> ArmsScored:
            return ArmsScored(
                task=task,
                champion_version=1,
                canary={
                    "model_version": 2,
                    "canary": {"n": n, "correct": int(0.7 * n), "log_loss": 0.6 * n},
                    "champion": {"n": champion_n, "correct": champion_n, "log_loss": 0.0},
                    "paired": {
                        "n": n,
                        "challenger_only": n // 50,
                        "champion_only": n // 5,
                        "challenger_log_loss": 0.6 * n,
                        "champion_log_loss": 0.3 * n,
                    },
                },
                at_labelled=n,
            )

        await w.record(scored(150, 0), governance_stream(task))  # below min_labels: waits
        await w.record(scored(400, 0), governance_stream(task))
        [ended] = (await w.decided(task, count + 1))[count:]
        assert ended.type == "CanaryEnded" and ended.payload["outcome"] == "rolled_back"
        assert "judged on the canary's own 400 labelled rows" in ended.payload["reason"]
        assert "the champion answered 0 rows itself, too few" in ended.payload["reason"]
        assert ended.payload["evidence"]["n"] == 400


async def shadow_won(w: World, task: str, version: int) -> None:
    """The trainer's counts: shadow `version` beat champion v1 on the same 600 rows."""
    won = {"model_version": version, "n": 600, "challenger_only": 120, "champion_only": 10}
    won |= {"challenger_log_loss": 180.0, "champion_log_loss": 300.0}
    scored = ArmsScored(task=task, champion_version=1, canary=None, shadows=[won], at_labelled=600)
    await w.record(scored, governance_stream(task))


async def test_a_newer_challenger_supersedes_the_older_ones_the_policy_runs(
    store_url: str, kafka: str, tmp_path: Path
):
    # A challenger's trees never learn again after it is published; one from before a later
    # drift learned a concept that changed again. The policy stops its own older challengers
    # when a newer one arrives, and leaves alone those a person started.
    spec = TaskSpec(
        name=f"chal{uuid.uuid4().hex[:8]}", features=(Feature(name="x"),), target=Target(name="y")
    )
    task, base = spec.name, f"/v1/tasks/{spec.name}"
    why = {"reason": "watch it"}
    async with world(store_url, kafka, tmp_path, spec) as w:
        await add_model(w, spec, 1, 0.80)
        await w.decided(task, 1)  # the first model is the champion
        await add_model(w, spec, 2, 0.70, role="challenger", parent=None)
        [started] = (await w.decided(task, 2))[1:]
        assert (started.type, started.payload["decided_by"]) == ("ShadowStarted", POLICY)
        # A person takes over challenger 2: stops the policy's shadow and starts their own.
        stopped = await w.post(f"{base}/shadows/2/stop", "operator", why)
        assert stopped.status_code == 200, stopped.text
        again = await w.post(f"{base}/shadows", "operator", {**why, "model_version": 2})
        assert again.status_code == 200, again.text
        await add_model(w, spec, 3, 0.70, role="challenger", parent=None)
        [third] = (await w.decided(task, 5))[4:]
        assert (third.type, third.payload["model_version"]) == ("ShadowStarted", 3)

        await add_model(w, spec, 4, 0.70, role="challenger", parent=None)
        newer = (await w.decided(task, 7))[5:]
        assert [(e.type, e.payload["model_version"]) for e in newer] == [
            ("ShadowStopped", 3),
            ("ShadowStarted", 4),
        ]
        assert newer[0].payload["outcome"] == "superseded"
        assert newer[0].payload["decided_by"] == POLICY
        assert newer[0].payload["reason"].startswith("superseded by challenger v4")
        routing = (await w.get(f"{base}/routing")).json()
        assert sorted(a["model_version"] for a in routing["shadows"]) == [2, 4]


async def test_a_challenger_that_learns_on_replaces_its_own_shadow_and_canary(
    store_url: str, kafka: str, tmp_path: Path
):
    # The trainer goes on teaching a challenger after publishing it, and publishes it again as
    # the child of its last version: the policy's shadow of it, and the canary made of that
    # shadow, move to the newer version (the same arm, the same weight) instead of a frozen one
    # answering users or running beside a newer shadow.
    spec = TaskSpec(
        name=f"line{uuid.uuid4().hex[:8]}", features=(Feature(name="x"),), target=Target(name="y")
    )
    task, base = spec.name, f"/v1/tasks/{spec.name}"
    async with world(store_url, kafka, tmp_path, spec) as w:
        await add_model(w, spec, 1, 0.80)
        await w.decided(task, 1)
        await add_model(w, spec, 2, 0.70, role="challenger", parent=None)
        await w.decided(task, 2)  # v2 runs as a shadow
        await add_model(w, spec, 3, 0.70, role="challenger", parent=2)
        moved = (await w.decided(task, 4))[2:]
        assert [(e.type, e.payload["model_version"]) for e in moved] == [
            ("ShadowStopped", 2),
            ("ShadowStarted", 3),
        ]
        assert moved[0].payload["outcome"] == "replaced"
        assert moved[0].payload["reason"].startswith("replaced by v3, the same challenger")
        assert moved[1].payload["evidence"]["replaces"] == 2

        # v3 beats the champion on the same rows: the analysis makes it the canary.
        await shadow_won(w, task, 3)
        canary = (await w.decided(task, 6))[4:]
        assert [(e.type, e.payload["model_version"]) for e in canary] == [
            ("ShadowStopped", 3),
            ("CanaryStarted", 3),
        ]
        weight = canary[1].payload["weight"]

        await add_model(w, spec, 4, 0.70, role="challenger", parent=3)
        replaced = (await w.decided(task, 8))[6:]
        assert [(e.type, e.payload["model_version"]) for e in replaced] == [
            ("CanaryEnded", 3),
            ("CanaryStarted", 4),
        ]
        assert replaced[0].payload["outcome"] == "replaced"
        assert replaced[1].payload["weight"] == weight
        assert replaced[1].payload["decided_by"] == POLICY
        routing = (await w.get(f"{base}/routing")).json()
        assert routing["canary"]["model_version"] == 4 and routing["shadows"] == []


async def test_entrants_of_the_race_run_as_shadows_only_where_the_policy_says_so(
    store_url: str, kafka: str, tmp_path: Path
):
    # The trainer publishes its race's runner-up configuration as an entrant; governance runs it
    # as a live shadow if the task's policy runs entrants, and a newer version of the same
    # configuration takes its place. By default entrants are not run (each is one more model).
    runs = TaskSpec(
        name=f"ent{uuid.uuid4().hex[:8]}",
        features=(Feature(name="x"),),
        target=Target(name="y"),
        promotion=PromotionPolicy(canary=CanaryPolicy(shadow_entrants=True)),
    )
    task = runs.name
    async with world(store_url, kafka, tmp_path, runs) as w:
        await add_model(w, runs, 1, 0.80)
        await w.decided(task, 1)
        await add_model(w, runs, 2, 0.78, role="entrant", parent=None)
        [started] = (await w.decided(task, 2))[1:]
        assert (started.type, started.payload["model_version"]) == ("ShadowStarted", 2)
        assert started.payload["decided_by"] == POLICY
        assert started.payload["reason"].startswith("entrant tiny, the runner-up of the trainer's")
        await add_model(w, runs, 3, 0.78, role="entrant", parent=2)
        moved = (await w.decided(task, 4))[2:]
        assert [(e.type, e.payload["model_version"]) for e in moved] == [
            ("ShadowStopped", 2),
            ("ShadowStarted", 3),
        ]
        assert moved[0].payload["reason"].startswith("replaced by v3, the same entrant")

        # v3 wins as a shadow and becomes the canary; a newer entrant of its configuration takes
        # its place as the canary, as a challenger's does (left to its analysis instead, a
        # canary of frozen trees answered half the entities across a drift for 3,000 labels).
        await shadow_won(w, task, 3)
        canary = (await w.decided(task, 6))[4:]
        assert [(e.type, e.payload["model_version"]) for e in canary] == [
            ("ShadowStopped", 3),
            ("CanaryStarted", 3),
        ]
        await add_model(w, runs, 4, 0.78, role="entrant", parent=3)
        replaced = (await w.decided(task, 8))[6:]
        assert [(e.type, e.payload["model_version"]) for e in replaced] == [
            ("CanaryEnded", 3),
            ("CanaryStarted", 4),
        ]
        assert replaced[0].payload["outcome"] == "replaced"
        routing = (await w.get(f"/v1/tasks/{task}/routing")).json()
        assert routing["canary"]["model_version"] == 4

    default = TaskSpec(
        name=f"noent{uuid.uuid4().hex[:8]}", features=(Feature(name="x"),), target=Target(name="y")
    )
    task = default.name
    (tmp_path / "default").mkdir()
    async with world(store_url, kafka, tmp_path / "default", default) as w:
        await add_model(w, default, 1, 0.80)
        await w.decided(task, 1)
        await add_model(w, default, 2, 0.78, role="entrant", parent=None)
        await add_model(w, default, 3, 0.70, role="challenger", parent=None)
        # Models are decided in order: by the challenger's shadow, the entrant was passed over.
        decisions = await w.decided(task, 2)
        assert [(e.type, e.payload["model_version"]) for e in decisions] == [
            ("ModelPromoted", 1),
            ("ShadowStarted", 3),
        ]


# ---------------------------------------------------------------------------------------------
# Served accuracy over time and the trainer's alarms


async def test_served_accuracy_windows_and_drift_alarms_are_served_and_survive_a_rebuild(
    store_url: str, kafka: str, tmp_path: Path
) -> None:
    spec = approval_spec()
    task = spec.name
    async with world(store_url, kafka, tmp_path, spec) as w:
        for number, (right_1, right_2) in enumerate([(150, None), (120, 170)], start=1):
            arms = [{"model_version": 1, "role": "champion", "n": 200, "correct": right_1}]
            if right_2 is not None:
                arms.append({"model_version": 2, "role": "shadow", "n": 200, "correct": right_2})
            scored = ServedScored(
                task=task, window=200, n_windows=number, to_position=number * 400, arms=arms
            )
            await w.record(scored, model_stream(task))
        drift = DriftDetected(
            task=task, detector="adwin", at_labelled=300, model_version=1, evidence={"w": 0.2}
        )
        await w.record(drift, model_stream(task))
        dropped = ConfigDropped(
            task=task,
            config="blend-fast/short-4000",
            at_labelled=2000,
            evidence={"next_budget_rows": 4000, "recent_accuracy": {"blend-fast": 0.9}},
        )
        await w.record(dropped, model_stream(task))

        async def projected() -> tuple[dict, dict] | None:
            served = await w.get(f"/v1/tasks/{task}/served-accuracy")
            alarms = await w.get(f"/v1/tasks/{task}/alarms")
            if served.status_code != 200 or alarms.status_code != 200:
                return None  # the task itself is not projected yet
            done = len(served.json()["windows"]) == 3 and len(alarms.json()["alarms"]) == 2
            return (served.json(), alarms.json()) if done else None

        served, alarms = await eventually(projected)
        assert [(x["model_version"], x["role"], x["accuracy"]) for x in served["windows"]] == [
            (1, "champion", 0.75),
            (1, "champion", 0.6),
            (2, "shadow", 0.85),
        ]
        assert [a["type"] for a in alarms["alarms"]] == ["DriftDetected", "ConfigDropped"]
        assert alarms["alarms"][0]["detail"]["detector"] == "adwin"
        assert alarms["alarms"][1]["at_labelled"] == 2000
        assert alarms["alarms"][1]["detail"]["config"] == "blend-fast/short-4000"
        assert alarms["alarms"][1]["detail"]["evidence"]["next_budget_rows"] == 4000
        later = served["windows"][1]["position"] - 1
        polled = (await w.get(f"/v1/tasks/{task}/served-accuracy", params={"after": later})).json()
        assert len(polled["windows"]) == 2
        assert (await w.get("/v1/tasks/nosuchtask/served-accuracy")).status_code == 404
        assert (await w.post("/v1/admin/rebuild", "admin", {})).status_code == 200
        assert (await w.get(f"/v1/tasks/{task}/served-accuracy")).json() == served
        assert (await w.get(f"/v1/tasks/{task}/alarms")).json() == alarms


# ---------------------------------------------------------------------------------------------
# Pipeline versions: registered and started through governance, named by every decision


async def test_pipeline_versions_are_registered_started_and_named_by_decisions(
    store_url: str, kafka: str, tmp_path: Path
):
    first = TaskSpec(
        name=f"pipe{uuid.uuid4().hex[:8]}", features=(Feature(name="x"),), target=Target(name="y")
    )
    task, base = first.name, f"/v1/tasks/{first.name}"
    second = first.model_copy(update={"promotion": PromotionPolicy(tolerance=0.05)})
    async with world(store_url, kafka, tmp_path, first) as w:
        await add_model(w, first, 1, 0.80)
        [promoted] = await w.decided(task, 1)
        assert promoted.payload["pipeline_version"] == first.version
        listing = (await w.get(f"{base}/pipelines")).json()
        assert listing["running"] == listing["champion"] == first.version
        assert [v["pipeline_version"] for v in listing["versions"]] == [first.version]

        document = second.model_dump(mode="json")
        bad = {
            "is not the task": {**document, "name": "other"},
            "target": {**document, "target": {"name": "z"}},
            "feature 'q'": {**document, "features": [{"name": "q"}]},
            "features": {k: v for k, v in document.items() if k != "features"},
        }
        for said, spec in bad.items():
            refused = await w.post(f"{base}/pipelines", "operator", {"spec": spec, "reason": "r"})
            assert refused.status_code == 422 and said in refused.text, refused.text
        assert (
            await w.post(f"{base}/pipelines", "viewer", {"spec": document, "reason": "r"})
        ).status_code == 403
        unknown = await w.post(
            "/v1/tasks/nope/pipelines", "operator", {"spec": document, "reason": "r"}
        )
        assert unknown.status_code == 404
        # A version that changes the policy is the admin's to register, not an operator's.
        operator = await w.post(f"{base}/pipelines", "operator", {"spec": document, "reason": "r"})
        assert operator.status_code == 403 and "promotion" in operator.text
        made = await w.post(f"{base}/pipelines", "admin", {"spec": document, "reason": "r"})
        assert made.status_code == 200 and made.json()["registered"] is True
        assert made.json()["pipeline_version"] == second.version
        registered = (await w.store.read_stream(f"task-{task}"))[-1].payload
        assert (registered["registered_by"], registered["reason"]) == ("root", "r")
        again = await w.post(f"{base}/pipelines", "admin", {"spec": document, "reason": "r"})
        assert again.json()["registered"] is False

        # A challenger of the first pipeline runs as a shadow (the policy starts it).
        await add_model(w, first, 2, 0.70, role="challenger", parent=None)
        await w.decided(task, 2)
        assert (await w.decisions(task))[-1].type == "ShadowStarted"
        start = f"{base}/pipelines/{second.version}/start"
        why = {"reason": "a looser tolerance"}
        cases = [
            (f"{base}/pipelines/{'0' * 64}/start", why, 404),
            (f"{base}/pipelines/{first.version}/start", why, 409),
            (start, {**why, "from_version": 10**6}, 422),
            (start, {**why, "from_version": -1}, 422),
            (f"{base}/pipelines/not-a-version/start", why, 422),
        ]
        for path, body, status in cases:
            before = await w.decisions(task)
            response = await w.post(path, "operator", body)
            assert response.status_code == status, (path, response.text)
            assert len(await w.decisions(task)) == len(before)
        started = await w.post(start, "operator", why)
        assert started.status_code == 200, started.text
        assert started.json()["arms_stopped"] == 1
        *_, decided, stopped = await w.decisions(task)
        assert decided.type == "PipelineStarted" and decided.payload["decided_by"] == "otto"
        # The trainer scores only its own pipeline's arms: the first's shadow stops with it.
        assert stopped.type == "ShadowStopped" and stopped.payload["model_version"] == 2
        assert decided.payload["previous_version"] == first.version
        listing = (await w.get(f"{base}/pipelines")).json()
        assert listing["last_started"]["pipeline_version"] == second.version

        # Beside the first pipeline's champion, a model of the pipeline the task runs may be a
        # shadow (or canary): the trainer scores it, and serving answers it with its own
        # pipeline's inputs. One of the pipeline left may not.
        await add_model(w, first, 3, 0.75, role="challenger", parent=None)
        await add_model(w, second, 4, 0.78, role="challenger", parent=None)
        decisions = await w.decided(task, 5)
        assert decisions[-1].type == "ShadowStarted"
        assert decisions[-1].payload["model_version"] == 4
        assert decisions[-1].payload["pipeline_version"] == second.version
        refused = await w.post(
            f"{base}/shadows", "operator", {"model_version": 3, "reason": "r", "sample_rate": 1.0}
        )
        assert refused.status_code == 409 and "not the one the task runs" in refused.text
        await add_model(w, second, 5, 0.95)
        decisions = await w.decided(task, 6)
        promoted = decisions[-1]
        assert promoted.type == "ModelPromoted" and promoted.payload["model_version"] == 5
        assert promoted.payload["pipeline_version"] == second.version
        assert (await w.get(f"{base}/pipelines")).json()["champion"] == second.version

        # Back to the first pipeline: one decision; the second's shadow ends with it, in the
        # same append (the trainer will not score it any more).
        back = await w.post(f"{base}/rollback", "operator", {"model_version": 1, "reason": "r"})
        assert back.status_code == 200, back.text
        *_, rolled, stopped = await w.decisions(task)
        assert (
            rolled.type == "ModelRolledBack" and rolled.payload["pipeline_version"] == first.version
        )
        assert stopped.type == "ShadowStopped" and stopped.payload["model_version"] == 4
        assert stopped.stream_version == rolled.stream_version + 1
        listing = (await w.get(f"{base}/pipelines")).json()
        assert listing["decided"] == listing["champion"] == first.version
