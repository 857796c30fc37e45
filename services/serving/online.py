"""Serving's online features and online learning: each task's fold, kept live from the data
topic, in stream order.

The fold gives the online features a prediction needs, and the rows it learns (a label with its
row's inputs) go to the task's champion, whose online parts learn them as the trainer's do
(`shared.online_models.LiveModel`): serving answers with what the trainer would at that moment,
but for the trees, which change with the next published version.

Every replica folds the task's data events itself (`shared.features.OnlineFold`, the trainer's own
fold), so replicas that have applied the same events answer with the same values, and a replica
needs nothing but the store and Kafka to start. Events are applied exactly once and in stream
order: Kafka batches that follow on from what was applied are applied as they are; a gap (another
producer's event still in flight, a restart, a lost broker) is filled from the store.

Freshness: rows this replica records (log and wait) are in its fold before their answers go out.
Other events (labels posted to ingest, other replicas' rows) are in once their relay has published
them and this replica has fetched them, typically within a few hundred milliseconds. A caller that
must see its own labels passes the store position ingest returned (`after_position`): the fold then
first reads the store up to it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import structlog

from services.serving.instruments import Freshness
from shared.events.envelope import Envelope
from shared.events.types import data_stream
from shared.features import PENDING_LIMIT, OnlineFold, data_event, model_inputs
from shared.online_models import LearnedRow, RecentRows
from shared.store.port import Appended, EventStore
from shared.streams import in_order, read_after
from shared.tasks import TaskSpec

log = structlog.get_logger(__name__)


# Called with a task's rows as they are learned (their labels folded in), in stream order.
LearnedRows = Callable[[TaskSpec, Sequence[LearnedRow]], None]


@dataclass
class _TaskFold:
    fold: OnlineFold
    version: int = 0  # data stream version applied
    # Every data event of the task stored at or before this position has been applied.
    synced: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    applied_at: float = 0.0  # monotonic time of the last event applied
    # Model inputs of observations awaiting their label, and the rows learned lately.
    inputs: OrderedDict[uuid.UUID, list[float]] = field(default_factory=OrderedDict)
    recent: RecentRows = field(default_factory=RecentRows)
    # Rows learned are timed for freshness once the fold is built (not those it was built from).
    timed: bool = False


class OnlineFeatures:
    """The folds of every task, one per spec version a model in a role takes its inputs from
    (the champion's, and a canary's or shadow's of another pipeline): its online features, and
    the rows it learns (each label with the inputs its row had), which those models learn too.
    The champion's is the task's primary fold: the one timed for freshness and reported."""

    def __init__(self, store: EventStore) -> None:
        self._store = store
        self._on_learned: LearnedRows | None = None
        self._building: dict[tuple[str, str], asyncio.Future[OnlineFold]] = {}
        # Per task, the spec versions routed to (`retain`; a task never retained keeps all).
        self._kept: dict[str, frozenset[str]] = {}
        self._primary: dict[str, str] = {}  # per task, the champion's spec version
        self._folds: dict[tuple[str, str], _TaskFold] = {}  # by (task, spec version)
        self.events_applied = 0
        self.store_reads = 0
        self.freshness = Freshness()

    def on_learned(self, callback: LearnedRows) -> None:
        """Call `callback(task, rows)` with every batch of rows learned from now on."""
        self._on_learned = callback

    def recent(self, spec: TaskSpec, after: int) -> list[LearnedRow]:
        """The rows learned after data stream version `after` (those still remembered), with
        this spec version's inputs (none before its fold is built)."""
        state = self._folds.get((spec.name, spec.version))
        return [] if state is None else state.recent.after(after)

    def fold(self, spec: TaskSpec) -> OnlineFold | None:
        """The live fold of a task's spec version (None: not built yet, or not needed)."""
        state = self._folds.get((spec.name, spec.version))
        return None if state is None else state.fold

    def retain(self, task: str, versions: Sequence[str]) -> None:
        """The spec versions a task's models take their inputs from now (the champion's first):
        the folds of others are dropped, and a build of one finishing later is not kept."""
        kept = frozenset(versions)
        self._kept[task] = kept
        if versions:
            self._primary[task] = versions[0]
        for key in [k for k in self._folds if k[0] == task and k[1] not in kept]:
            del self._folds[key]

    async def prepare(self, spec: TaskSpec) -> OnlineFold:
        """The fold of this spec version, built from the store first if needed (once, however
        many ask at the same time)."""
        key = (spec.name, spec.version)
        state = self._folds.get(key)
        if state is not None:
            return state.fold
        build = self._building.get(key)
        if build is None:
            build = self._building[key] = asyncio.ensure_future(self._build(spec))
            build.add_done_callback(lambda _: self._building.pop(key, None))
        return await asyncio.shield(build)

    async def _build(self, spec: TaskSpec) -> OnlineFold:
        state = _TaskFold(OnlineFold(spec))
        await self._catch_up(spec.name, state)
        kept = self._kept.get(spec.name)
        if kept is not None and spec.version not in kept:
            return state.fold  # no model takes these inputs any more: not kept
        self._folds[spec.name, spec.version] = state
        async with state.lock:
            await self._catch_up(spec.name, state)  # what was stored meanwhile
            state.timed = True
        log.info(
            "serving.online_fold_built",
            task=spec.name,
            spec_version=spec.version[:12],
            events=state.version,
            entities=state.fold.entities,
        )
        return state.fold

    async def sync(self, spec: TaskSpec, position: int) -> OnlineFold:
        """The fold, holding every event of the task stored at or before `position`."""
        fold = await self.prepare(spec)
        state = self._folds.get((spec.name, spec.version))
        if state is None or state.fold is not fold or state.synced >= position:
            return fold  # synced, or dropped meanwhile
        async with state.lock:
            if state.synced < position:
                head = await self._store.head()
                await self._catch_up(spec.name, state)
                # The read began after `head` was stored: everything up to it is applied.
                state.synced = max(state.synced, min(position, head))
        return fold

    async def own_writes(
        self, spec: TaskSpec, events: Sequence[Envelope], appended: Sequence[Appended]
    ) -> None:
        """Fold in rows this replica has just recorded (read your own writes): at once when they
        follow on from what is applied, else with everything before them, from the store."""
        state = self._folds.get((spec.name, spec.version))
        if state is None:
            return
        stored = [
            e.model_copy(update={"position": a.position, "stream_version": a.stream_version})
            for e, a in zip(events, appended, strict=True)
        ]
        async with state.lock:
            ordered = await in_order(self._store, data_stream(spec.name), state.version, stored)
            if len(ordered) > len(stored):
                self.store_reads += 1
            self._apply(state, ordered)

    async def apply(self, envelopes: Sequence[Envelope]) -> None:
        """Apply a batch from the data topic (any tasks, any order)."""
        by_task: defaultdict[str, list[Envelope]] = defaultdict(list)
        for envelope in envelopes:
            by_task[str(envelope.payload.get("task"))].append(envelope)
        for task, events in by_task.items():
            # No fold yet: built from the store when first asked for.
            for state in [s for k, s in list(self._folds.items()) if k[0] == task]:
                async with state.lock:
                    ordered = await in_order(self._store, data_stream(task), state.version, events)
                    if len(ordered) > len(events):
                        self.store_reads += 1
                    self._apply(state, ordered)

    async def _catch_up(self, task: str, state: _TaskFold) -> None:
        self.store_reads += 1
        self._apply(state, await read_after(self._store, data_stream(task), state.version))

    def _apply(self, state: _TaskFold, ordered: Sequence[Envelope]) -> None:
        learned: list[LearnedRow] = []
        accepted: list[tuple[int, float]] = []  # (version, when ingest stored it) of rows learned
        spec = state.fold.spec
        for envelope in ordered:
            event = data_event(envelope)
            if event is not None:
                before = len(learned)
                values = state.fold.apply(event)
                if event.is_label:
                    assert event.observation_id is not None and event.label is not None
                    x = state.inputs.pop(event.observation_id, None)
                    if x is not None:
                        learned.append(LearnedRow(event.version, x, event.label))
                elif values is not None and event.features is not None:
                    x = model_inputs(spec, event.features, values)
                    if event.label is not None:
                        learned.append(LearnedRow(event.version, x, event.label))
                    else:
                        state.inputs[event.event_id] = x
                        while len(state.inputs) > PENDING_LIMIT:
                            state.inputs.popitem(last=False)
                if len(learned) > before and state.timed and envelope.recorded_at is not None:
                    accepted.append((event.version, envelope.recorded_at.timestamp()))
            state.version = envelope.stream_version or state.version
            state.synced = max(state.synced, envelope.position or 0)
        if ordered:
            self.events_applied += len(ordered)
            state.applied_at = time.monotonic()
        if learned:
            state.recent.add(learned)
            if self._on_learned is not None:
                self._on_learned(spec, learned)
        if accepted and self._primary.get(spec.name, spec.version) == spec.version:
            self.freshness.learned(spec.name, accepted)

    def status(self) -> dict[str, dict[str, object]]:
        """Per task, its primary fold's figures, and the spec versions folded."""
        out: dict[str, dict[str, object]] = {}
        for (task, version), s in self._folds.items():
            folded = out.setdefault(task, {"spec_versions": []})
            folded["spec_versions"].append(version)  # type: ignore[attr-defined]
            if self._primary.get(task, version) == version:
                folded.update(
                    spec_version=version,
                    events_applied=s.version,
                    synced_position=s.synced,
                    entities=s.fold.entities,
                )
        return out
