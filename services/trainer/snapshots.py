"""Trainer snapshots: a task's core as of a data stream version, so a restart replays only the
events after it instead of the task's whole history.

A snapshot is the core pickled (`TaskTraining.__getstate__` says what it keeps), filed in the
artifact store under its sha256, and named by a `TrainerSnapshotted` event on the task's snapshot
stream. The core is a deterministic function of the data events it applied, so a core restored from
a snapshot and fed the rest of the stream makes the same models, byte for byte, as one that never
stopped (tests/unit/test_trainer_snapshots.py).

A snapshot is taken only after everything the core emitted up to it is stored: a restart from it
loses nothing. It is read only by the build that wrote it (`build_id`: a digest of the code it
pickles and of the libraries that pickle with it), for the same spec version; anything else (an
upgrade, a missing or corrupt artifact, a pickle that fails) is logged and the task is replayed
from the start, which is always correct, only slower. Artifacts are the platform's own storage,
written by the trainer and verified by digest on read; pickles from elsewhere are never loaded.
"""

from __future__ import annotations

import asyncio
import hashlib
import pickle
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from functools import cache
from importlib import metadata

import structlog

from services.trainer.core import Learner, TaskTraining
from shared.events.envelope import new_event
from shared.events.types import TrainerSnapshotted, snapshot_stream
from shared.runtime import Runtime
from shared.settings import REPO_ROOT
from shared.tasks import TaskSpec

log = structlog.get_logger(__name__)

_NAMESPACE = uuid.UUID("0c0471e0-7a1e-4e00-8000-00000000000a")
# The code a snapshot pickles (the core, its learner, the shared folds and models) and the
# libraries whose objects it holds.
_CODE = ("services/trainer", "shared")
_LIBRARIES = ("lightgbm", "numpy", "river", "pydantic")
# Snapshot artifacts kept per task: the newest is the one a restart loads; the one before it is
# kept for an operator. Older ones are deleted (their events stay: the record of what was taken).
KEEP = 2


@cache
def build_id() -> str:
    """A digest of this trainer build: its source files, Python's and the libraries' versions."""
    digest = hashlib.sha256(sys.version.encode())
    for library in _LIBRARIES:
        digest.update(f"{library}={metadata.version(library)}".encode())
    for folder in _CODE:
        for path in sorted((REPO_ROOT / folder).rglob("*.py")):
            digest.update(str(path.relative_to(REPO_ROOT)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


class Snapshots:
    """Takes a task's snapshot every `every` data events (0: never) and restores the newest."""

    def __init__(self, runtime: Runtime, every: int) -> None:
        self.runtime = runtime
        self.every = every
        self._taken: dict[str, int] = {}  # per task: the data version of the newest snapshot
        self.restored: dict[str, int] = {}  # per task: the data version restored at start-up

    def newest(self, task: str) -> int:
        """The data version of the task's newest snapshot (0: none)."""
        return self._taken.get(task, 0)

    async def restore(
        self,
        specs: Mapping[str, TaskSpec],
        challengers: Callable[[], Learner],
        pending_limit: int,
    ) -> TaskTraining | None:
        """The task's newest usable snapshot as a core (its scorers unset), or None. `specs`:
        the task's registered spec versions (the core may run any of them, as the data stream
        switched it)."""
        task = next(iter(specs.values())).name
        found = await self.runtime.store.read_all(
            streams=[snapshot_stream(task)], descending=True, limit=1
        )
        if not found:
            return None
        fact = TrainerSnapshotted.model_validate(found[0].payload)
        self._taken[task] = fact.data_version
        spec = specs.get(fact.pipeline_version)
        if fact.build != build_id() or spec is None:
            log.info(
                "trainer.snapshot_skipped",
                task=task,
                data_version=fact.data_version,
                reason="written by another trainer build"
                if fact.build != build_id()
                else "written for a spec version not registered",
            )
            return None
        try:
            data = await asyncio.to_thread(self.runtime.artifacts.get, fact.artifact_sha256)
            core = await asyncio.to_thread(pickle.loads, data)
        except Exception as exc:  # a lost or unreadable snapshot costs a full replay, no more
            log.warning(
                "trainer.snapshot_unusable",
                task=task,
                data_version=fact.data_version,
                artifact=fact.artifact_sha256,
                error=repr(exc),
            )
            return None
        if not isinstance(core, TaskTraining) or core.version != fact.data_version:
            log.warning("trainer.snapshot_unusable", task=task, error="not this task's core")
            return None
        core.spec = spec
        core.attach(challengers, pending_limit)
        self.restored[task] = core.version
        return core

    async def maybe_take(self, core: TaskTraining) -> None:
        """Take a snapshot if `every` data events were applied since the newest one. Call only
        when everything the core emitted so far is stored."""
        task = core.spec.name
        if self.every and core.version - self._taken.get(task, 0) >= self.every:
            await self.take_safely(core)

    async def take_safely(self, core: TaskTraining) -> None:
        """`take`, a failure logged: a snapshot missed costs a longer replay later, nothing else."""
        try:
            await self.take(core)
        except Exception:
            log.exception("trainer.snapshot_failed", task=core.spec.name, data_version=core.version)

    async def take(self, core: TaskTraining) -> TrainerSnapshotted:
        started = time.perf_counter()
        data = await asyncio.to_thread(pickle.dumps, core, pickle.HIGHEST_PROTOCOL)
        digest = await asyncio.to_thread(self.runtime.artifacts.put, data)
        fact = TrainerSnapshotted(
            task=core.spec.name,
            pipeline_version=core.spec.version,
            build=build_id(),
            data_version=core.version,
            last_position=core.last_position,
            model_version=core.model_version,
            n_learned_total=core.n_learned_total,
            artifact_sha256=digest,
            size_bytes=len(data),
        )
        key = f"{fact.task}/{fact.pipeline_version}/{fact.build}/{fact.data_version}"
        await self.runtime.store.append(
            [
                new_event(
                    fact,
                    stream_id=snapshot_stream(fact.task),
                    producer=self.runtime.producer,
                    event_id=uuid.uuid5(_NAMESPACE, key),
                )
            ]
        )
        self._taken[fact.task] = fact.data_version
        await self._prune(fact.task)
        log.info(
            "trainer.snapshot_taken",
            task=fact.task,
            data_version=fact.data_version,
            mb=round(len(data) / 1e6, 2),
            seconds=round(time.perf_counter() - started, 3),
        )
        return fact

    async def _prune(self, task: str) -> None:
        taken = [
            e.payload["artifact_sha256"]
            for e in await self.runtime.store.read_stream(snapshot_stream(task))
        ]
        for digest in set(taken[:-KEEP]) - set(taken[-KEEP:]):
            await asyncio.to_thread(self.runtime.artifacts.delete, digest)
