"""The trainer's adapter between the bus and the pure core: replay, learn, store what it made.

One `TaskTraining` per task. The first time a task is seen, its core is rebuilt from the task's
newest snapshot (services/trainer/snapshots.py) and the stored data events after it, or from all of
them (the store is the system of record); events the core has already applied (by version) are
skipped, and everything it emits carries a deterministic event id, so emitting it again after a
restart is a no-op in the store.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence

import structlog

from services.trainer import instruments
from services.trainer.core import Candidate, Learner, Output, TaskTraining, config_choice
from services.trainer.snapshots import Snapshots
from shared.deployments import DeploymentState
from shared.events.envelope import Envelope, Payload, new_event
from shared.events.types import (
    ModelTrained,
    PipelineChosen,
    data_stream,
    deployment_stream,
    governance_stream,
    model_stream,
)
from shared.online_models import LiveModel
from shared.registry import registered_since, registered_tasks, spec_versions
from shared.runtime import Runtime
from shared.store.pages import stream_pages
from shared.store.port import ConcurrencyError, EventStore
from shared.streams import in_order
from shared.tasks import TaskSpec

log = structlog.get_logger(__name__)

LearnerFactory = Callable[[TaskSpec], Learner]
_PIPELINES = uuid.UUID("9c1f3b0e-5d2a-4f6b-8e71-2a4c6d8e0f13")  # ids of PipelineChosen events


def default_learner(spec: TaskSpec) -> Learner:
    from services.trainer.multiclass import learner_for

    return learner_for(spec)


def new_core(
    spec: TaskSpec, learner_factory: LearnerFactory = default_learner, pending_limit: int = 200_000
) -> TaskTraining:
    """A task's core as the trainer makes it, before any event (challengers from the factory,
    for the pipeline the core runs when they start)."""
    core = TaskTraining(
        spec,
        learner_factory(spec),
        pending_limit=pending_limit,
        challengers=lambda: learner_factory(core.spec),
    )
    return core


async def first_spec(store: EventStore, task: str) -> TaskSpec | None:
    """The pipeline a task's training starts with: its first registered spec version. Later
    versions run from where a PipelineChosen in the data stream switches to them."""
    versions = await spec_versions(store, task)
    return next(iter(versions.values()), None)


async def learn(
    core: TaskTraining,
    events: Sequence[Envelope],
    store: EventStore,
    learner_factory: LearnerFactory = default_learner,
) -> AsyncIterator[Output]:
    """Apply data events to a core, in a thread, switching pipelines where the stream says so:
    the incoming pipeline learns the stored events the switch names (a replay, a page at a
    time), then takes over. Yields each output, to be stored in order."""
    rest = list(events)
    while rest:
        out = await asyncio.to_thread(core.apply, rest)
        yield out
        switch = out.switch
        if switch is None:
            return
        rest = rest[out.consumed :]
        task = core.spec.name
        spec = (await spec_versions(store, task)).get(switch.pipeline_version)
        if spec is None:
            raise LookupError(
                f"{task}: pipeline version {switch.pipeline_version} is not registered"
            )
        started = time.perf_counter()
        caught_up, failed = 0, None
        try:
            core.begin_switch(switch, spec, learner_factory(spec))
        except Exception as exc:  # noqa: BLE001 - the spec's learner cannot be made
            failed = exc
        if failed is None:
            # A store error here propagates: the batch is tried again, from the store.
            async for page in stream_pages(
                store, data_stream(task), after_version=switch.from_version
            ):
                try:
                    caught_up += await asyncio.to_thread(core.catch_up, page)
                except Exception as exc:  # noqa: BLE001 - its learner fails on these rows
                    failed = exc
                    break
                if (page[-1].stream_version or 0) >= switch.to_version:
                    break
        if failed is not None:
            # Deterministic: every replay fails the same way here and goes on the same way.
            core.abandon_switch(switch)
            log.error(
                "trainer.pipeline_switch_failed",
                task=task,
                pipeline_version=spec.version[:12],
                error=repr(failed),
                detail="its learner fails on the task's rows; the trainer goes on with the "
                "pipeline it ran",
            )
            continue
        yield core.switched()
        log.info(
            "trainer.pipeline_switched",
            task=task,
            pipeline_version=spec.version[:12],
            replayed=caught_up,
            from_version=switch.from_version,
            seconds=round(time.perf_counter() - started, 3),
        )


async def replay_models(
    store: EventStore, task: str, progress: Callable[[int], object] | None = None
) -> tuple[TaskTraining, list[Candidate]]:
    """A fault-free trainer over the task's stored data events, in process, from the start: its
    core and every model it made. A running trainer's models must equal these byte for byte,
    whatever it went through (restarts, snapshots, redeliveries). The next page of the stream is
    read while the core learns this one; `progress(n)` after each page of n events."""
    spec = await first_spec(store, task)
    if spec is None:
        raise LookupError(f"task {task!r} is not registered")
    core = new_core(spec)
    made = core.start().candidates
    async for page in stream_pages(store, data_stream(task)):
        async for out in learn(core, page, store):
            made += out.candidates
        if progress is not None:
            progress(len(page))
    return core, made


async def replay_pipeline(
    store: EventStore,
    spec: TaskSpec,
    *,
    after_version: int = 0,
    progress: Callable[[int], object] | None = None,
) -> TaskTraining:
    """One pipeline version alone over its task's stored data events after `after_version`, in
    process, publishing nothing (no switches, no models): its prequential figures on the rows
    and label timing the stream holds (those that carry its features), to compare versions
    before one is started (`continuo compare`). ConfigChosen events of this version apply."""
    core = TaskTraining(spec, default_learner(spec), quiet=True)
    core.version = after_version
    async for page in stream_pages(store, data_stream(spec.name), after_version=after_version):
        await asyncio.to_thread(core.apply, page)
        if progress is not None:
            progress(len(page))
    return core


class Trainer:
    """Feeds data events to per-task cores and appends their models and facts to the store."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        learner_factory: LearnerFactory = default_learner,
        pending_limit: int = 200_000,
        snapshot_every: int = 0,
    ) -> None:
        self.runtime = runtime
        self.snapshots = Snapshots(runtime, snapshot_every)
        self._learner_factory = learner_factory
        self._pending_limit = pending_limit
        self._cores: dict[str, TaskTraining] = {}
        self._lock = asyncio.Lock()
        self.models_emitted = 0
        self.labels_learned = instruments.LabelsLearned()
        self.retry_delay = 1.0  # after a failed batch, before the next (the store may be down)
        self._status: dict[str, dict[str, object]] = {}
        # Per task: the deployment stream folded so far, and when it was last looked at.
        self._deployments: dict[str, tuple[DeploymentState, float]] = {}
        # Per task: the last decision that set the champion (its version in the deployment
        # stream, the model version it set, whether it was a rollback); and the (task,
        # decision) pairs looked at for a choice of configuration (`_chosen`).
        self._decisions: dict[str, tuple[int, int, bool] | None] = {}
        self._choices: set[tuple[str, int]] = set()
        # The pipeline (spec) version of each model version looked up, by (task, version).
        self._pipelines: dict[tuple[str, int], str | None] = {}
        self._first: dict[str, str] = {}  # each task's first pipeline: the one it starts with
        self._catalogue_read = 0  # the store position through which registrations were read

    async def start_tasks(self, *, new_only: bool = False) -> None:
        """Publish version 1 of every registered task that has none: serving can answer its
        first request with it (its online parts learn from the first label). `new_only`: only
        tasks this trainer has not taken up yet (registered since it last looked: the
        registrations after the store position read then, not the whole catalogue again)."""
        if new_only:
            found, self._catalogue_read = await registered_since(
                self.runtime.store, self._catalogue_read
            )
            tasks = [t for t in dict.fromkeys(found) if t not in self._first]
        else:
            self._catalogue_read = await self.runtime.store.head()
            tasks = list(await registered_tasks(self.runtime.store))
        for task in tasks:
            async with self._lock:
                try:
                    core = await self._core(task)
                    if core is not None:
                        await self._persist(core, core.start())
                        self._record_status(core)
                except Exception:
                    self._cores.pop(task, None)
                    log.exception("trainer.start_task_failed", task=task)

    async def handle(self, envelopes: Sequence[Envelope]) -> None:
        """Apply a batch of data events (any tasks, store order within each task).

        If applying or storing fails (the store is down, a write timed out), the task's core is
        dropped: its in-memory state may be ahead of the store. The next batch rebuilds it by
        replaying the store, which re-emits what was lost (what was stored is a duplicate).
        """
        by_task: dict[str, list[Envelope]] = defaultdict(list)
        for envelope in envelopes:
            by_task[str(envelope.payload.get("task"))].append(envelope)
        async with self._lock:
            for task, events in by_task.items():
                try:
                    core = await self._core(task)
                    if core is None:
                        log.warning("trainer.unknown_task", task=task, events=len(events))
                        continue
                    await self._apply(core, events)
                    await self.snapshots.maybe_take(core)
                    self._record_status(core)
                except Exception:
                    self._cores.pop(task, None)
                    log.exception("trainer.batch_failed", task=task, events=len(events))
                    await asyncio.sleep(self.retry_delay)

    async def snapshot_all(self) -> None:
        """Snapshot every task whose state is ahead of its newest snapshot (at shutdown: the
        next start replays nothing). A failure is logged: the next start replays more."""
        if not self.snapshots.every:
            return
        async with self._lock:
            for core in self._cores.values():
                if core.version > self.snapshots.newest(core.spec.name):
                    await self.snapshots.take_safely(core)

    async def _core(self, task: str) -> TaskTraining | None:
        if task in self._cores:
            return self._cores[task]
        spec = await first_spec(self.runtime.store, task)
        if spec is None:
            return None
        self._first[task] = spec.version

        def challengers() -> Learner:
            return self._learner_factory(self._cores[task].spec)  # the pipeline it runs then

        core = await self.snapshots.restore(
            await spec_versions(self.runtime.store, task), challengers, self._pending_limit
        )
        if core is None:
            core = new_core(spec, self._learner_factory, self._pending_limit)
        self._cores[task] = core
        await self._replay(core)
        return core

    async def _replay(self, core: TaskTraining) -> None:
        """Bring a core up to the task's stored data events after the version it has applied
        (deterministic, so nothing changes), snapshotting along the way."""
        started, restored = time.perf_counter(), core.version
        stream, after, replayed = data_stream(core.spec.name), core.version, 0
        while page := await self.runtime.store.read_stream(stream, after_version=after, limit=5000):
            await self._apply(core, page)
            await self.snapshots.maybe_take(core)
            after = page[-1].stream_version or after
            replayed += len(page)
        log.info(
            "trainer.replayed",
            task=core.spec.name,
            from_snapshot=restored,
            events=replayed,
            models=core.model_version,
            seconds=round(time.perf_counter() - started, 3),
        )

    async def _follow_deployments(self, core: TaskTraining, every: float = 0.2) -> None:
        """Keep the core's champion, canary and shadows as governance decided them: each as
        serving runs it, a live model that goes on learning the labels after its version."""
        task = core.spec.name
        state, checked = self._deployments.get(task, (DeploymentState(), 0.0))
        if time.monotonic() - checked < every:
            return
        decision = self._decisions.get(task)
        first = self._first[task]
        for envelope in await self.runtime.store.read_stream(
            deployment_stream(task), state.stream_version
        ):
            before = state.pipeline or first
            applied = state.apply(envelope.type, envelope.stream_version, envelope.payload)
            if applied and (state.pipeline or first) != before:
                await self._choose_pipeline(task, state, envelope)
            if applied and envelope.type in ("ModelPromoted", "ModelRolledBack"):
                rolled_back = envelope.type == "ModelRolledBack"
                model = int(envelope.payload["model_version"])
                decision = (envelope.stream_version or 0, model, rolled_back)
        self._decisions[task] = decision
        self._deployments[task] = (state, time.monotonic())
        answering = state.answering()
        if answering is not None and answering[0] != core.champion_version:
            # Scored with its own pipeline's inputs where the core still folds them (this one,
            # or the one it ran before its last switch).
            pipeline = await self._pipeline_of(core, state, answering[0])
            scorer = await self._live(answering[1]) if core.scores(pipeline) else None
            core.set_champion(answering[0], scorer, pipeline)
        # A decision's choice only while serving answers with what it decided (not under the
        # kill switch, an override rather than a decision about the model: it is made once the
        # switch is off, unless a later decision came first).
        if (
            decision is not None
            and answering is not None
            and decision[1] == answering[0]
            and not state.killed
            and (task, decision[0]) not in self._choices
        ):
            await self._chosen(task, *decision)
        # The arms of this pipeline (another's inputs are not this core's: not scored here).
        shadows = {
            version: core.arms.shadows.get(version) or await self._live(arm.artifact_sha256)
            for version, arm in state.shadows.items()
            if await self._pipeline_of(core, state, version) == core.spec.version
        }
        canary = state.canary.model_version if state.canary is not None else None
        if canary is not None and await self._pipeline_of(core, state, canary) != core.spec.version:
            canary = None
        core.follow_arms(canary, shadows)

    async def _pipeline_of(self, core: TaskTraining, state: DeploymentState, version: int) -> str:
        """The pipeline version of a task's model: as its decision named it, else as trained
        (a version not in the model stream: the task's first pipeline's)."""
        task = core.spec.name
        named = state.pipelines.get(version)
        if named is not None:
            return named
        if (task, version) not in self._pipelines:
            stored = await self.runtime.store.read_stream(
                model_stream(task), after_version=version - 1, limit=1
            )
            trained = stored[0].data() if stored else None
            self._pipelines[task, version] = (
                trained.pipeline_version if isinstance(trained, ModelTrained) else None
            )
        found = self._pipelines[task, version]
        return found if found is not None else core.spec.version

    async def _choose_pipeline(self, task: str, state: DeploymentState, decision: Envelope) -> None:
        """A decision changed the pipeline the task is to run (`state.pipeline`: started, or a
        model of it promoted or rolled back to): recorded in the data stream, where the core
        switches to it, replayed from where the last started pipeline was. A function of the
        deployment stream alone, with an id derived from the decision: whoever records it, and
        however often (a restart folds the stream again), the data stream holds it once."""
        assert state.pipeline is not None and decision.stream_version is not None
        decided_at = decision.stream_version
        started = state.pipeline_started
        why = {
            "PipelineStarted": "started",
            "ModelRolledBack": "rolled back to a model of it",
        }.get(decision.type, "a model of it was promoted")
        chosen = PipelineChosen(
            task=task,
            pipeline_version=state.pipeline,
            from_version=started[2] if started else 0,
            reason=f"pipeline {state.pipeline[:12]}: {why} (deployment decision {decided_at})",
            decided_at=decided_at,
        )
        event = new_event(
            chosen,
            stream_id=data_stream(task),
            producer=self.runtime.producer,
            event_id=uuid.uuid5(_PIPELINES, f"{task}/pipeline/decision/{decided_at}"),
        )
        [stored] = await self.runtime.store.append([event])
        if not stored.duplicate:
            log.info(
                "trainer.pipeline_chosen", task=task, pipeline=state.pipeline[:12], at=decided_at
            )

    async def _chosen(self, task: str, decided_at: int, version: int, rollback: bool) -> None:
        """If governance's last decision (at `decided_at` in the deployment stream) promoted an
        entrant or rolled back to `version`, record the choice of that model's configuration in
        the data stream, where the core (and every replay) applies it between the same rows: the
        race learns on with the configuration serving answers with, not with the one governance
        left. Read from the version's own ModelTrained, not from what the core has replayed so
        far; looked at once per decision and process (until it is stored: a failed append is
        tried again at the next batch), and after a restart again, a duplicate the store
        ignores. Not made: after a routine promotion of the race's own candidate (the race chose
        it; a candidate of the configuration a rollback left may still be promoted later, and
        then the race goes on with the one the rollback chose)."""
        stored = await self.runtime.store.read_stream(
            model_stream(task), after_version=version - 1, limit=1
        )
        trained = stored[0].data() if stored else None  # none: a version not the trainer's
        choice = (
            config_choice(trained, decided_at=decided_at, rollback=rollback)
            if isinstance(trained, ModelTrained)
            else None
        )
        if choice is not None:
            event_id, chosen = choice
            event = new_event(
                chosen,
                stream_id=data_stream(task),
                producer=self.runtime.producer,
                event_id=event_id,
            )
            await self.runtime.store.append([event])
            log.info("trainer.config_chosen", task=task, version=version, config=chosen.config)
        self._choices.add((task, decided_at))

    async def _live(self, digest: str) -> LiveModel:
        model = await asyncio.to_thread(self.runtime.artifacts.get, digest)
        return await asyncio.to_thread(LiveModel, model)

    async def _apply(self, core: TaskTraining, events: Sequence[Envelope]) -> None:
        await self._follow_deployments(core)
        # Kafka may deliver the stream out of order (several services append to it): apply it
        # in stream order, reading the store for what has not arrived yet.
        ordered = await in_order(
            self.runtime.store, data_stream(core.spec.name), core.version, events
        )
        # LightGBM training blocks (`learn` runs it in a thread): keep the event loop (and Kafka
        # heartbeats) free meanwhile.
        task = core.spec.name
        async for out in learn(core, ordered, self.runtime.store, self._learner_factory):
            await self._persist(core, out)
            if out.switch is not None:
                self._deployments.pop(task, None)
            elif task not in self._deployments:
                # Switched: the champion and arms again, before the rest of the batch, each
                # scored with its own pipeline's inputs where the core still folds them.
                await self._follow_deployments(core)

    async def _persist(self, core: TaskTraining, out: Output) -> None:
        rt, task = self.runtime, core.spec.name
        if out.facts:
            # One append for the batch's facts (one write transaction, not one each): the store
            # reports each event's own outcome, so a fact stored before (a replay) is a duplicate
            # and the rest are new. Ids are derived from what a fact is about: keep the first.
            made: dict[uuid.UUID, Payload] = {}
            for event_id, made_fact in out.facts:
                made.setdefault(event_id, made_fact)
            facts = [
                new_event(
                    payload, stream_id=governance_stream(task), producer=rt.producer, event_id=key
                )
                for key, payload in made.items()
            ]
            stored = await rt.store.append(facts)
            for payload, result in zip(made.values(), stored, strict=True):
                instruments.fact_stored(payload, duplicate=result.duplicate)
        for candidate in out.candidates:
            digest = await asyncio.to_thread(rt.artifacts.put, candidate.model_bytes)
            fact = candidate.fact(task, digest)
            event = new_event(
                fact,
                stream_id=model_stream(task),
                producer=rt.producer,
                event_id=candidate.event_id,
            )
            try:
                [result] = await rt.store.append(
                    [event], expected_version=candidate.model_version - 1
                )
            except ConcurrencyError as exc:
                log.error(
                    "trainer.version_taken",
                    task=task,
                    version=candidate.model_version,
                    error=str(exc),
                )
                continue
            if not result.duplicate:
                self.models_emitted += 1
                instruments.MODELS_PUBLISHED.labels(task, candidate.role).inc()
                log.info(
                    "trainer.model_trained",
                    task=task,
                    version=candidate.model_version,
                    learned=candidate.n_learned_total,
                    # The kind's prequential figure: a classifier's accuracy, a regression's MAE.
                    **{
                        figure: round(candidate.metrics[figure], 4)
                        for figure in ("accuracy", "mae")
                        if figure in candidate.metrics
                    },
                )
        if out.unmatched_labels:
            log.warning("trainer.unmatched_labels", task=task, count=out.unmatched_labels)
        if out.other_spec:
            log.warning(
                "trainer.other_spec_version",
                task=task,
                count=out.other_spec,
                spec_version=core.spec.version,
                detail="observations recorded under another spec version were not learned",
            )

    def _record_status(self, core: TaskTraining) -> None:
        """Record a task's figures once a batch is applied and stored (read by `status`)."""
        self.labels_learned.follow(core.spec.name, core.n_learned_total)
        self._status[core.spec.name] = {
            "last_position": core.last_position,
            "pipeline_version": core.spec.version,
            "model_version": core.model_version,
            "learned": core.n_learned_total,
            "metrics": core.metrics(),
            "snapshot_version": self.snapshots.newest(core.spec.name),
            "restored_from": self.snapshots.restored.get(core.spec.name, 0),
        }

    def status(self) -> dict[str, dict[str, object]]:
        """Per task: position, models and labels as stored, and whether a batch is in flight
        (`settled` false: more may be learned or stored any moment)."""
        settled = not self._lock.locked()
        return {task: {**figures, "settled": settled} for task, figures in self._status.items()}
