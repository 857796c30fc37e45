"""What serving's routes need, built once in the app's lifespan."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException, Request

from services.serving.deployments import Deployments
from services.serving.health import ArmsHealth
from services.serving.online import OnlineFeatures
from services.serving.recorder import ObservationLog, PredictionRecorder
from services.serving.routing import RoutingTable
from services.serving.settings import ServingSettings
from services.serving.shadows import ShadowScorer
from shared.events.envelope import Producer
from shared.features import OnlineFold
from shared.runtime import Runtime
from shared.tasks import TaskSpec


@dataclass
class ServingState:
    settings: ServingSettings
    runtime: Runtime
    table: RoutingTable
    recorder: PredictionRecorder
    observations: ObservationLog
    deployments: Deployments
    online: OnlineFeatures
    shadows: ShadowScorer
    health: ArmsHealth
    followers: tuple[asyncio.Task[None], ...] = ()
    loaded: bool = False

    @property
    def producer(self) -> Producer:
        return self.runtime.producer

    async def online_values(
        self,
        spec: TaskSpec,
        rows: Sequence[dict[str, Any]],
        entity_ids: Sequence[str | None],
        record: bool,
        after_position: int | None,
        *,
        off: Collection[str] = (),
    ) -> list[list[float]]:
        """Each row's online-feature values as of now (or as of `after_position` at least).

        Rows that will be recorded are read in sequence: each sees the rows before it in the
        request, as the trainer will when it folds them in. The features named in `off` (turned
        off by the task's flags) get their value before any history. A task without online
        features is synced to `after_position` all the same: its models learn each label the
        fold folds in, so the answer reflects every label stored up to there."""
        if not spec.online_features:
            if after_position is not None:
                await self.online.sync(spec, after_position)
            return [[] for _ in rows]
        values = await self._online_values(spec, rows, entity_ids, record, after_position)
        if off:
            empty = OnlineFold(spec)
            pairs = zip(entity_ids, rows, values, strict=True)
            index = [i for i, name in enumerate(spec.online_names) if name in off]
            for entity, row, row_values in pairs:
                default = empty.values(entity, row)
                for i in index:
                    row_values[i] = default[i]
        return values

    async def _online_values(
        self,
        spec: TaskSpec,
        rows: Sequence[dict[str, Any]],
        entity_ids: Sequence[str | None],
        record: bool,
        after_position: int | None,
    ) -> list[list[float]]:
        if after_position is not None:
            fold = await self.online.sync(spec, after_position)
        else:
            fold = self.online.fold(spec) or await self.online.prepare(spec)
        pairs = list(zip(entity_ids, rows, strict=True))
        if record:
            return fold.preview(pairs)
        return [fold.values(entity, row) for entity, row in pairs]

    async def readiness(self) -> str | None:
        if not self.loaded:
            return "loading current models"
        if any(f.done() for f in self.followers):
            return "a Kafka follower (deployments or data) is not running"
        if not self.recorder.alive:
            return "prediction recorder not running"
        return self.deployments.behind()


def serving_state(request: Request) -> ServingState:
    state: ServingState | None = getattr(request.app.state, "serving", None)
    if state is None:
        raise HTTPException(503, "serving is starting")
    return state
