"""Governance's work: keep the projections current, audit every model version, decide promotions.

Decisions are made on the event store's deployment stream (the system of record, current the
moment governance appends), not on the projection, which lags by a Kafka round trip. Facts with an
identity get event ids derived from it (the audit of candidate N, the automatic decision on N), so
processing a model twice records once.

New models are queued per task and handled one at a time by that task's worker: audit (the maths
off the event loop), then decide. The Kafka consumer only projects and enqueues, so a slow audit
never stalls it. On start-up, models newer than the champion without a decision are queued again.
Human decisions (approve, reject, promote, roll back) take the same per-task lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import time
import uuid
from collections import OrderedDict, defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import structlog
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import StaticPool

from services.governance.audit import AuditReport
from services.governance.audits import (
    NotAuditable,
    UnseenWindow,
    audit_candidate,
    audit_live,
    recorded_inputs,
)
from services.governance.auth import Principal
from services.governance.errors import Conflict, NotFound
from services.governance.instruments import audited, decided, projected
from services.governance.pipelines import PipelineDecisions
from services.governance.policy import AuditResult, Decision, Verdict, decide
from services.governance.projections import apply_events, replay_into
from services.governance.routing import RoutingDecisions
from services.governance.schema import (
    PROJECTION_TABLES,
    deployments,
    governance_engine,
    metadata,
    models,
    predictions,
)
from services.governance.settings import GovernanceSettings
from shared.artifacts import ArtifactNotFound
from shared.deployments import POLICY, DeploymentState
from shared.events.envelope import Envelope, Payload, new_event
from shared.events.types import (
    ApprovalGranted,
    ApprovalRejected,
    ApprovalRequested,
    AuditCompleted,
    CanaryEnded,
    ModelPromoted,
    ModelRolledBack,
    ModelTrained,
    PromotionRefused,
    ShadowStopped,
    data_stream,
    deployment_stream,
    governance_stream,
    model_stream,
)
from shared.fanout import Fanout
from shared.features import OnlineFold, data_event, model_inputs
from shared.model_codec import ModelFormatError, OneVsRestPredictor, Predictor, decode_any
from shared.registry import registered_spec, registered_tasks, spec_versions
from shared.runtime import Runtime
from shared.store.port import ConcurrencyError
from shared.tasks import TaskSpec

log = structlog.get_logger(__name__)
_NAMESPACE = uuid.UUID("9e0c0471-90e5-4a11-8d3c-000000000004")
_DATA_TYPES = ("ObservationRecorded", "LabelRecorded")


def audit_event_id(task: str, version: int) -> uuid.UUID:
    return uuid.uuid5(_NAMESPACE, f"{task}/audit/{version}")


def decision_event_id(task: str, version: int) -> uuid.UUID:
    return uuid.uuid5(_NAMESPACE, f"{task}/decision/{version}")


async def _dispose_later(engine: AsyncEngine, grace: float) -> None:
    try:
        await asyncio.sleep(grace)
    finally:
        await engine.dispose()


class Governance:
    def __init__(
        self,
        runtime: Runtime,
        engine: AsyncEngine,
        settings: GovernanceSettings | None = None,
        fanout: Fanout | None = None,
    ) -> None:
        self.runtime = runtime
        self.fanout = fanout
        self.routing = RoutingDecisions(self)
        self.pipelines = PipelineDecisions(self)
        self.store = runtime.store
        self.engine = engine
        self.settings = settings or GovernanceSettings()
        self.projection_lock = asyncio.Lock()
        self.task_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._queues: dict[str, asyncio.Queue[Envelope]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        # Each model's audit and decision is tried this often, waiting 0.5 s, 1 s, 2 s... between.
        self.attempts = 4
        self.retry_delay = 0.5
        self._as_of: OrderedDict[int, AsyncEngine] = OrderedDict()
        self._as_of_lock = asyncio.Lock()
        self._retiring: set[asyncio.Task[None]] = set()
        # Wall time of each candidate audit (seconds): reading the window, predicting, the maths.
        self.audit_seconds: list[float] = []
        # Seconds before a candidate that awaits labelled rows for its audit is looked at again.
        self.evidence_retry = 2.0

    # -- projections --------------------------------------------------------------------------

    async def handle(self, events: Sequence[Envelope]) -> None:
        """Project a batch, then queue every model it newly brought for audit and decision."""
        async with self.projection_lock, self.engine.begin() as conn:
            fresh = await apply_events(conn, events)
        projected(fresh)
        for envelope in fresh:
            if envelope.type in ("ModelTrained", "ArmsScored", "ArmsServed"):
                self.enqueue(envelope)

    async def rebuild(self, progress: Callable[[int], object] | None = None) -> dict[str, int]:
        """Empty the projections and replay them from position 0 (one transaction);
        `progress(n)` after each page of n events read."""
        started = time.monotonic()
        async with self.projection_lock, self.engine.begin() as conn:
            for table in reversed(PROJECTION_TABLES):
                await conn.execute(delete(table))
            applied = await replay_into(conn, self.store, progress=progress)
        self._as_of.clear()
        head = await self.store.head()
        log.info("governance.rebuilt", events=applied, head=head)
        return {
            "events_applied": applied,
            "head": head,
            "ms": int(1000 * (time.monotonic() - started)),
        }

    async def as_of(self, position: int) -> AsyncEngine:
        """The projections as of a store position, built in a throwaway in-memory SQLite.

        One build at a time (a build replays the store: concurrent requests for new positions
        queue instead of multiplying that work); the last few are kept, since the events up to
        a position never change. An evicted one is closed after a grace period, not under a
        request that may still be reading it."""
        async with self._as_of_lock:
            if position in self._as_of:
                self._as_of.move_to_end(position)
                return self._as_of[position]
            engine = governance_engine("sqlite+aiosqlite://", poolclass=StaticPool)
            async with engine.begin() as conn:
                await conn.run_sync(metadata.create_all)
                await replay_into(conn, self.store, until=position)
            self._as_of[position] = engine
            while len(self._as_of) > 4:
                _, old = self._as_of.popitem(last=False)
                retiring = asyncio.create_task(_dispose_later(old, grace=30.0))
                self._retiring.add(retiring)
                retiring.add_done_callback(self._retiring.discard)
            return engine

    async def close(self) -> None:
        for worker in self._workers.values():
            worker.cancel()
        for worker in self._workers.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await worker
        for engine in self._as_of.values():
            await engine.dispose()
        for retiring in list(self._retiring):
            retiring.cancel()

    # -- the per-task work queue --------------------------------------------------------------

    def enqueue(self, envelope: Envelope) -> None:
        task = str(envelope.payload["task"])
        if task not in self._queues:
            self._queues[task] = asyncio.Queue()
            self._workers[task] = asyncio.create_task(self._work(task), name=f"gov:{task}")
        self._queues[task].put_nowait(envelope)

    async def _work(self, task: str) -> None:
        queue = self._queues[task]
        while True:
            envelope = await queue.get()
            try:
                await self._process_with_retries(task, envelope)
            finally:
                queue.task_done()

    async def _process_with_retries(self, task: str, envelope: Envelope) -> None:
        """Audit and decide, retrying a failure (the store blinked, a concurrent decision won):
        processing is idempotent, its events have derived ids. After the last attempt the model
        is left undecided for the next start-up's `resume`, so one bad model cannot block the
        task's queue."""
        for attempt in range(1, self.attempts + 1):
            try:
                await self.process(envelope)
                return
            except Exception:  # noqa: BLE001 - logged with its traceback, then retried
                log.exception(
                    "governance.process_failed",
                    task=task,
                    event_id=str(envelope.event_id),
                    attempt=attempt,
                    of=self.attempts,
                )
                if attempt < self.attempts:
                    await asyncio.sleep(self.retry_delay * 2 ** (attempt - 1))

    async def idle(self) -> None:
        """Wait until every queued model has been audited and decided (for tests and tools)."""
        for queue in list(self._queues.values()):
            await queue.join()

    async def resume(self) -> int:
        """Queue the models newer than their champion that have no decision yet; return how many."""
        queued = 0
        for task in await registered_tasks(self.store):
            state = await self.deployment_state(task)
            for envelope in await self.store.read_stream(
                model_stream(task), after_version=state.champion or 0
            ):
                version = int(envelope.payload["model_version"])
                if not state.decided(version):
                    self.enqueue(envelope)
                    queued += 1
        return queued

    # -- reading the store --------------------------------------------------------------------

    async def spec(self, task: str) -> TaskSpec:
        """The task's newest registered spec (404 for an unknown task). A model is judged by
        its own pipeline's: `model_spec`."""
        spec = await registered_spec(self.store, task)
        if spec is None:
            raise NotFound(f"unknown task {task!r}")
        return spec

    async def model_spec(self, trained: ModelTrained) -> TaskSpec:
        """The spec (pipeline version) a model was trained under: its inputs and its policy. A
        version registered later changes nothing about the models of another."""
        found = (await spec_versions(self.store, trained.task)).get(trained.pipeline_version)
        return found if found is not None else await self.spec(trained.task)

    async def deployment_state(self, task: str) -> DeploymentState:
        stream = await self.store.read_stream(deployment_stream(task))
        return DeploymentState.fold([(e.type, e.stream_version, e.payload) for e in stream])

    async def model_event(self, task: str, version: int) -> Envelope:
        """The ModelTrained event of a version (stream version N of models-<task> is model N)."""
        if version >= 1:
            found = await self.store.read_stream(
                model_stream(task), after_version=version - 1, limit=1
            )
            if found and found[0].stream_version == version:
                return found[0]
        raise NotFound(f"task {task!r} has no model version {version}")

    async def pipeline_of(self, task: str, version: int, state: DeploymentState) -> str:
        """The pipeline (spec) version a model was trained under, as decisions name it."""
        named = state.pipelines.get(version)
        return named if named is not None else (await self.trained(task, version)).pipeline_version

    async def predictor(self, artifact_sha256: str) -> Predictor | OneVsRestPredictor:
        """A model version's predictor, of any kind (a multiclass one answers rows of classes)."""
        data = await asyncio.to_thread(self.runtime.artifacts.get, artifact_sha256)
        return await asyncio.to_thread(decode_any, data)

    async def candidate_audit(self, task: str, version: int) -> AuditCompleted | None:
        found = (await self.store.get([audit_event_id(task, version)])).values()
        for envelope in found:
            data = envelope.data()
            assert isinstance(data, AuditCompleted)
            return data
        return None

    # -- audits -------------------------------------------------------------------------------

    async def audit_candidate(self, envelope: Envelope, spec: TaskSpec) -> AuditCompleted | None:
        """Audit a new model on labelled rows it never learned; record it once.

        None while fewer than the policy's `min_rows` such rows exist: the labels have not come
        yet (the caller retries later, or lets a newer model supersede this one)."""
        trained = envelope.data()
        assert isinstance(trained, ModelTrained)
        if (done := await self.candidate_audit(trained.task, trained.model_version)) is not None:
            return done
        started = time.monotonic()
        model_spec = (await spec_versions(self.store, trained.task)).get(
            trained.pipeline_version, spec
        )
        window = await self._unseen_window(
            trained.task, model_spec, spec.promotion.window, trained.last_position
        )
        rows = window.rows
        if len(rows) < spec.promotion.audit.min_rows:
            return None
        info: dict[str, Any] = {
            "requested_rows": spec.promotion.window,
            "labels_after_position": trained.last_position,
            "rows": len(rows),
            "first_position": rows[0]["position"],
            "last_position": rows[-1]["position"],
            "rows_learned_by_model": 0,
        }
        try:
            predictor = await self.predictor(trained.artifact_sha256)
            report: AuditReport | None = await asyncio.to_thread(
                audit_candidate, model_spec, predictor, rows, spec
            )
        except (NotAuditable, ArtifactNotFound, ModelFormatError, ValueError) as exc:
            report, reasons = None, [f"audit could not run: {exc}"]
        seconds = time.monotonic() - started
        self.audit_seconds.append(seconds)
        payload = AuditCompleted(
            task=trained.task,
            model_version=trained.model_version,
            scope="candidate",
            window=info,
            report=report.model_dump(mode="json") if report else {},
            passed=bool(report and report.passed),
            reasons=list(report.reasons) if report else reasons,
        )
        event = new_event(
            payload,
            stream_id=governance_stream(trained.task),
            producer=self.runtime.producer,
            event_id=audit_event_id(trained.task, trained.model_version),
            causation=envelope,
        )
        [stored] = await self.store.append([event])
        audited(trained.task, payload.scope, payload.passed, stored)
        log.info(
            "governance.audited",
            task=trained.task,
            version=trained.model_version,
            passed=payload.passed,
            rows=len(rows),
            ms=round(1000 * seconds, 1),
            reasons=payload.reasons,
        )
        return payload

    async def _unseen_window(
        self, task: str, spec: TaskSpec, size: int, after: int
    ) -> UnseenWindow:
        """Up to `size` labelled rows whose labels were stored after position `after`, each with
        its features and its model inputs under `spec` (rows of other spec versions left out)."""
        window = UnseenWindow(size, kind=spec.target.kind)
        cursor = after
        while not window.full:
            page = await self.store.read_all(
                after=cursor,
                limit=min(5000, 2 * size + 10),
                types=_DATA_TYPES,
                streams=[data_stream(task)],
            )
            if not page:
                break
            window.add(page)
            cursor = page[-1].position or cursor
        window.join(await self.store.get(list(window.waiting)))
        window.rows = [
            r for r in window.rows if r["observation"].payload["pipeline_version"] == spec.version
        ]
        replay = []
        for row in window.rows:
            row["features"] = row["observation"].payload["features"]
            row["inputs"] = recorded_inputs(spec, row["observation"])
            if row["inputs"] is None:
                replay.append(row)
        if replay:
            wanted = {r["observation"].event_id for r in replay}
            until = max(r["observation"].position or 0 for r in replay)
            inputs = await self._stream_inputs(task, spec, wanted, until)
            for row in replay:
                row["inputs"] = inputs[row["observation"].event_id]
        return window

    async def _stream_inputs(
        self, task: str, spec: TaskSpec, wanted: set[uuid.UUID], until: int
    ) -> dict[uuid.UUID, list[float]]:
        """Observations' model inputs as the trainer built them: the task's online-feature fold
        replayed from the start of its data stream (the values depend on everything before)."""
        fold = OnlineFold(spec)
        out: dict[uuid.UUID, list[float]] = {}
        after = 0
        while page := await self.store.read_stream(
            data_stream(task), after_version=after, limit=5000
        ):
            for envelope in page:
                if (envelope.position or 0) > until:
                    return out
                event = data_event(envelope)
                if event is None:
                    continue
                values = fold.apply(event)
                if values is not None and envelope.event_id in wanted:
                    out[envelope.event_id] = model_inputs(spec, event.features or {}, values)
            after = page[-1].stream_version or after
        return out

    async def live_audits(self) -> list[AuditCompleted]:
        """Audit each champion's most recent served predictions (selection rates; no outcomes)."""
        done = []
        async with self.engine.connect() as conn:
            champions = (await conn.execute(select(deployments))).all()
        for row in champions:
            try:
                spec = await self.model_spec(await self.trained(row.task, row.model_version))
            except NotFound:
                continue
            if not spec.sensitive:
                continue
            if (audited := await self._live_audit(spec, row.model_version)) is not None:
                done.append(audited)
        return done

    async def _live_audit(self, spec: TaskSpec, version: int) -> AuditCompleted | None:
        async with self.engine.connect() as conn:
            served = (
                await conn.execute(
                    select(
                        predictions.c.position,
                        predictions.c.features,
                        predictions.c.probability,
                        predictions.c.label,
                    )
                    .where(predictions.c.task == spec.name, predictions.c.model_version == version)
                    .order_by(predictions.c.position.desc())
                    .limit(spec.promotion.window)
                )
            ).all()
        if not served:
            return None
        last, first = served[0].position, served[-1].position
        event_id = uuid.uuid5(_NAMESPACE, f"{spec.name}/live-audit/{version}/{last}")
        if await self.store.get([event_id]):
            return None  # nothing served since the last live audit
        # A regression's answer is its label (its value); a classifier's, the probability.
        rows = [
            {"features": r.features, "probability": r.probability, "value": r.label} for r in served
        ]
        report = await asyncio.to_thread(audit_live, spec, rows)
        payload = AuditCompleted(
            task=spec.name,
            model_version=version,
            scope="live",
            window={
                "rows": len(rows),
                "first_position": first,
                "last_position": last,
                "stream": f"predictions-{spec.name}",
                "not_computed_without_outcomes": report.unavailable,
            },
            report=report.model_dump(mode="json"),
            passed=report.passed,
            reasons=report.reasons,
        )
        event = new_event(
            payload,
            stream_id=governance_stream(spec.name),
            producer=self.runtime.producer,
            event_id=event_id,
        )
        [stored] = await self.store.append([event])
        audited(spec.name, payload.scope, payload.passed, stored)
        log.info(
            "governance.live_audited",
            task=spec.name,
            version=version,
            rows=len(rows),
            passed=report.passed,
            reasons=report.reasons,
        )
        return payload

    async def run_live_audits(self, interval: float) -> None:
        """Every `interval` seconds, audit the champions' live predictions (until cancelled)."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.live_audits()
            except Exception:  # noqa: BLE001 - logged; the next round tries again
                log.exception("governance.live_audit_failed")

    # -- decisions ----------------------------------------------------------------------------

    async def process(self, envelope: Envelope) -> None:
        """Audit a new model (if its task names sensitive attributes), then decide on it; run a
        challenger as a shadow; judge the canary and shadows on the trainer's newest counts, and the
        canary's guardrails on serving's newest report."""
        if envelope.type == "ArmsScored":
            await self.routing.on_arms(envelope)
            return
        if envelope.type == "ArmsServed":
            await self.routing.on_served(envelope)
            return
        trained = envelope.data()
        assert isinstance(trained, ModelTrained)
        if trained.role in ("challenger", "entrant"):
            # A shadow never answers users; its audit gates the step to canary (and is run
            # there if the labels it needs have not come yet).
            spec = await self.model_spec(trained)
            if spec.sensitive:
                await self.audit_candidate(envelope, spec)
            await self.routing.on_challenger(envelope)
            return
        try:
            spec = await self.model_spec(trained)
        except NotFound:
            log.error("governance.unknown_task", task=trained.task)
            return
        state = await self.deployment_state(trained.task)
        if self._settled(state, trained.model_version):
            if not state.decided(trained.model_version):  # every version gets its decision
                await self.refuse(
                    envelope,
                    [
                        f"superseded: version {state.champion} became the champion before this one "
                        "was decided"
                    ],
                )
            return
        if spec.sensitive and await self.audit_candidate(envelope, spec) is None:
            await self._await_evidence(envelope, spec)
            return
        await self.consider(envelope, spec)

    async def _await_evidence(self, envelope: Envelope, spec: TaskSpec) -> None:
        """A candidate whose audit lacks rows it never learned: check again later, unless a
        newer candidate has come meanwhile (then this one is refused as superseded). Challengers
        and entrants published after it do not supersede it: they run beside the champion."""
        trained = envelope.data()
        assert isinstance(trained, ModelTrained)
        task, version = trained.task, trained.model_version
        newer = await self._newer_candidate(task, version)
        if newer is None:
            log.info("governance.awaiting_labels", task=task, version=version)
            loop = asyncio.get_running_loop()
            loop.call_later(self.evidence_retry, self.enqueue, envelope)
            return
        newest = newer.model_version
        await self.refuse(
            envelope,
            [
                f"superseded by version {newest} before {spec.promotion.audit.min_rows} "
                "labelled rows it never learned had arrived for its audit"
            ],
        )

    async def _newer_candidate(self, task: str, version: int) -> ModelTrained | None:
        """The first candidate (not a challenger or entrant) after `version`, if one is stored."""
        after = version
        while page := await self.store.read_stream(
            model_stream(task), after_version=after, limit=100
        ):
            for envelope in page:
                trained = envelope.data()
                if isinstance(trained, ModelTrained) and trained.role == "candidate":
                    return trained
            after = page[-1].stream_version or after
        return None

    async def refuse(self, envelope: Envelope, reasons: list[str]) -> None:
        """Refuse a model with the reasons, once (the decision is named by the version)."""
        trained = envelope.data()
        assert isinstance(trained, ModelTrained)
        task, version = trained.task, trained.model_version
        async with self.task_locks[task]:
            state = await self.deployment_state(task)
            if state.decided(version):
                return
            await self._append(
                task,
                PromotionRefused(
                    task=task, model_version=version, reasons=reasons, decided_by=POLICY
                ),
                state,
                event_id=decision_event_id(task, version),
                causation=envelope,
            )
        log.info(
            "governance.decided", task=task, version=version, verdict="refuse", reasons=reasons
        )

    @staticmethod
    def _settled(state: DeploymentState, version: int) -> bool:
        newer_champion = state.champion is not None and state.champion >= version
        return newer_champion or state.decided(version)

    async def consider(self, envelope: Envelope, spec: TaskSpec | None = None) -> None:
        """The automatic decision on a new model: promote, refuse, or ask for approval."""
        trained = envelope.data()
        assert isinstance(trained, ModelTrained)
        task, version = trained.task, trained.model_version
        spec = spec or await self.model_spec(trained)
        async with self.task_locks[task]:
            state = await self.deployment_state(task)
            if self._settled(state, version):
                return  # a newer (or this) model already serves, or this one was decided
            decision = await self.gate(spec, trained, state)
            if state.pipeline is not None and trained.pipeline_version != state.pipeline:
                # Made before the trainer switched to the pipeline decided since: not the
                # policy's to bring back (a person may, by promoting or rolling back to it).
                decision = Decision(
                    Verdict.REFUSE,
                    [
                        f"trained under pipeline {trained.pipeline_version[:12]}; the task runs "
                        f"pipeline {state.pipeline[:12]} since a later decision"
                    ],
                )
            payload: Payload
            if decision.verdict is Verdict.PROMOTE:
                payload = ModelPromoted(
                    task=task,
                    model_version=version,
                    artifact_sha256=trained.artifact_sha256,
                    previous_version=state.champion,
                    reason="; ".join(decision.reasons),
                    decided_by=POLICY,
                    pipeline_version=trained.pipeline_version,
                )
            elif decision.verdict is Verdict.AWAIT:
                payload = ApprovalRequested(
                    task=task,
                    model_version=version,
                    approvals_required=spec.promotion.approvals_required,
                    reasons=decision.reasons,
                    decided_by=POLICY,
                )
            else:
                payload = PromotionRefused(
                    task=task, model_version=version, reasons=decision.reasons, decided_by=POLICY
                )
            await self._append(
                task, payload, state, event_id=decision_event_id(task, version), causation=envelope
            )
        log.info(
            "governance.decided",
            task=task,
            version=version,
            verdict=decision.verdict.value,
            reasons=decision.reasons,
        )

    async def gate(self, spec: TaskSpec, trained: ModelTrained, state: DeploymentState) -> Decision:
        champion_metrics = None
        if state.champion is not None:
            champion = (await self.model_event(trained.task, state.champion)).data()
            assert isinstance(champion, ModelTrained)
            champion_metrics = champion.metrics
        audited = await self.candidate_audit(trained.task, trained.model_version)
        return decide(
            spec.promotion,
            trained.metrics,
            champion_metrics,
            champion_version=state.champion,
            audit=AuditResult(audited.passed, audited.reasons) if audited else None,
            approvals=state.approvals.get(trained.model_version, []),
            rejections=state.rejections.get(trained.model_version, []),
        )

    async def _append(
        self,
        task: str,
        payload: Payload,
        state: DeploymentState,
        *,
        event_id: uuid.UUID | None = None,
        causation: Envelope | None = None,
    ) -> Envelope:
        # The decision first; a change of pipeline may add the ends of other pipelines' arms.
        stored = await self.decide_all(
            task, [payload], state, event_ids=[event_id], causation=causation
        )
        return stored[0]

    async def decide_all(
        self,
        task: str,
        payloads: list[Payload],
        state: DeploymentState,
        *,
        event_ids: list[uuid.UUID | None] | None = None,
        causation: Envelope | None = None,
    ) -> list[Envelope]:
        """Append decisions to the task's deployment stream at once (expecting the stream where
        `state` left it: two deciders cannot both act on what they read), fold them into
        `state`, and send them down the fast path to serving replicas. Decisions that change the
        pipeline the task runs bring, in the same append, the end of the other pipelines' arms
        (the trainer scores only its own pipeline's: they would never end)."""
        ids = list(event_ids or [None] * len(payloads))
        after = copy.deepcopy(state)
        for number, payload in enumerate(payloads, start=state.stream_version + 1):
            after.apply(payload.type_name, number, payload.model_dump(mode="json"))
        if after.pipeline != state.pipeline:
            stops = await self._stranded(task, after)
            payloads, ids = [*payloads, *stops], [*ids, *([None] * len(stops))]
        events = [
            new_event(
                payload,
                stream_id=deployment_stream(task),
                producer=self.runtime.producer,
                event_id=event_id,
                causation=causation,
            )
            for payload, event_id in zip(payloads, ids, strict=True)
        ]
        try:
            appended = await self.store.append(events, expected_version=state.stream_version)
        except ConcurrencyError:
            raise Conflict(
                ["another decision on this task was recorded at the same time; retry"]
            ) from None
        decided(task, events, appended)
        stored = [
            event.model_copy(update={"position": a.position, "stream_version": a.stream_version})
            for event, a in zip(events, appended, strict=True)
        ]
        for event in stored:
            state.apply(event.type, event.stream_version, event.payload)
        if self.fanout is not None:
            for event in stored:
                self.fanout.send(event)
        return stored

    async def _stranded(self, task: str, state: DeploymentState) -> list[Payload]:
        """The end of each canary or shadow of another pipeline than the one `state` runs."""
        assert state.pipeline is not None
        why = f"the task runs pipeline {state.pipeline[:12]} now: the trainer scores only its arms"
        arms = [*([state.canary] if state.canary else []), *state.shadows.values()]
        stops: list[Payload] = []
        for arm in arms:
            if await self.pipeline_of(task, arm.model_version, state) != state.pipeline:
                ended = CanaryEnded if arm is state.canary else ShadowStopped
                stops.append(
                    ended(
                        task=task,
                        model_version=arm.model_version,
                        outcome="stopped",
                        reason=why,
                        decided_by=POLICY,
                    )
                )
        return stops

    async def trained(self, task: str, version: int) -> ModelTrained:
        await self.spec(task)
        data = (await self.model_event(task, version)).data()
        assert isinstance(data, ModelTrained)
        return data

    @contextlib.asynccontextmanager
    async def _deciding_on(
        self, task: str, version: int
    ) -> AsyncIterator[tuple[TaskSpec, ModelTrained, DeploymentState]]:
        """A human decision on a version that is not the champion: its spec, its ModelTrained
        and the deployment state, read and held under the task's lock."""
        trained = await self.trained(task, version)
        spec = await self.model_spec(trained)
        async with self.task_locks[task]:
            state = await self.deployment_state(task)
            if state.champion == version:
                raise Conflict([f"version {version} is already the champion"])
            yield spec, trained, state

    async def approve(self, task: str, version: int, who: Principal, reason: str) -> dict[str, Any]:
        """Record an approval; promote the version if that completes the policy's gate."""
        async with self._deciding_on(task, version) as (spec, trained, state):
            await self._append(
                task,
                ApprovalGranted(task=task, model_version=version, by=who.name, reason=reason),
                state,
            )  # folded into `state` as it is appended
            outcome: dict[str, Any] = {
                "task": task,
                "model_version": version,
                "approved_by": who.name,
                "approvals": sorted(set(state.approvals[version])),
                "approvals_required": spec.promotion.approvals_required
                if spec.promotion.require_approval
                else 0,
                "promoted": False,
            }
            if state.champion is not None and version < state.champion:
                outcome["reasons"] = [
                    f"not promoted: version {version} is older than the champion {state.champion}"
                ]
                return outcome
            decision = await self.gate(spec, trained, state)
            outcome["reasons"] = decision.reasons
            if decision.verdict is Verdict.PROMOTE:
                await self._append(
                    task,
                    ModelPromoted(
                        task=task,
                        model_version=version,
                        artifact_sha256=trained.artifact_sha256,
                        previous_version=state.champion,
                        reason=f"approved ({reason}); " + "; ".join(decision.reasons),
                        decided_by=who.name,
                        pipeline_version=trained.pipeline_version,
                    ),
                    state,
                )
                outcome["promoted"] = True
        return outcome

    async def reject(self, task: str, version: int, who: Principal, reason: str) -> dict[str, Any]:
        """Record a rejection: the version will not be promoted by the automatic flow."""
        await self.trained(task, version)
        async with self.task_locks[task]:
            state = await self.deployment_state(task)
            if state.champion == version:
                raise Conflict(
                    [f"version {version} is the champion: roll back to an earlier version instead"]
                )
            if any(r.startswith(f"{who.name}: ") for r in state.rejections.get(version, [])):
                raise Conflict([f"{who.name} has already rejected version {version}"])
            await self._append(
                task,
                ApprovalRejected(task=task, model_version=version, by=who.name, reason=reason),
                state,
            )
        return {"task": task, "model_version": version, "rejected_by": who.name, "reason": reason}

    async def promote(self, task: str, version: int, who: Principal, reason: str) -> dict[str, Any]:
        """Promote by hand, through the same gate; a refusal is recorded and raised as Conflict."""
        async with self._deciding_on(task, version) as (spec, trained, state):
            if state.champion is not None and version < state.champion:
                raise Conflict(
                    [
                        f"version {version} is older than the champion {state.champion}: "
                        "roll back to it instead"
                    ]
                )
            decision = await self.gate(spec, trained, state)
            if decision.verdict is not Verdict.PROMOTE:
                reasons = (
                    decision.reasons
                    if decision.verdict is Verdict.REFUSE
                    else [r for r in decision.reasons if r.startswith("awaiting approval")]
                )
                await self._append(
                    task,
                    PromotionRefused(
                        task=task,
                        model_version=version,
                        reasons=[*reasons, f"requested by {who.name}: {reason}"],
                        decided_by=who.name,
                    ),
                    state,
                )
                raise Conflict(reasons)
            previous = state.champion  # read before the promotion is folded into `state`
            await self._append(
                task,
                ModelPromoted(
                    task=task,
                    model_version=version,
                    artifact_sha256=trained.artifact_sha256,
                    previous_version=previous,
                    reason=f"{reason} (policy: {'; '.join(decision.reasons)})",
                    decided_by=who.name,
                    pipeline_version=trained.pipeline_version,
                ),
                state,
            )
        return {
            "task": task,
            "model_version": version,
            "previous_version": previous,
            "promoted_by": who.name,
            "reasons": decision.reasons,
        }

    async def rollback(
        self, task: str, version: int, who: Principal, reason: str
    ) -> dict[str, Any]:
        """Set the champion back to an earlier version that was promoted or approved before."""
        trained = await self.trained(task, version)
        async with self.task_locks[task]:
            state = await self.deployment_state(task)
            if state.champion is None:
                raise Conflict([f"task {task!r} has no champion to roll back"])
            if version >= state.champion:
                raise Conflict(
                    [f"can only roll back to a version older than the champion {state.champion}"]
                )
            if version not in state.promoted and not state.approvals.get(version):
                raise Conflict([f"version {version} was never promoted or approved"])
            if state.rejections.get(version):
                raise Conflict(
                    [f"version {version} was rejected by {state.rejections[version][0]}"]
                )
            previous = state.champion
            await self._append(
                task,
                ModelRolledBack(
                    task=task,
                    model_version=version,
                    artifact_sha256=trained.artifact_sha256,
                    from_version=previous,
                    reason=reason,
                    decided_by=who.name,
                    pipeline_version=trained.pipeline_version,
                ),
                state,
            )
        return {
            "task": task,
            "model_version": version,
            "from_version": previous,
            "rolled_back_by": who.name,
            "reason": reason,
        }

    async def models_of(self, conn: Any, task: str) -> list[Any]:
        return (
            await conn.execute(
                select(models).where(models.c.task == task).order_by(models.c.model_version)
            )
        ).all()
