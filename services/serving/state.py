"""What serving's routes need, built once in the app's lifespan."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException, Request

from services.serving.deployments import Deployments
from services.serving.models import Prediction, predict
from services.serving.online import OnlineFeatures
from services.serving.recorder import ObservationLog, PredictionRecorder, served_events
from services.serving.routing import Routes, RoutingTable
from services.serving.settings import ServingSettings
from shared.deployments import bucket
from shared.events.envelope import Producer
from shared.features import OnlineFold
from shared.runtime import Runtime
from shared.tasks import TaskSpec


def sampled(prediction_id: str, rate: float) -> bool:
    """Whether a shadow scores a row: a stable share of prediction ids (0 <= rate <= 1)."""
    return bucket("shadow/", prediction_id) < 100.0 * rate


@dataclass
class ServingState:
    settings: ServingSettings
    runtime: Runtime
    table: RoutingTable
    recorder: PredictionRecorder
    observations: ObservationLog
    deployments: Deployments
    online: OnlineFeatures
    followers: tuple[asyncio.Task[None], ...] = ()
    loaded: bool = False
    shadow_scored: int = 0

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
        use_online: bool = True,
    ) -> list[list[float]]:
        """Each row's online-feature values as of now (or as of `after_position` at least).

        Rows that will be recorded are read in sequence: each sees the rows before it in the
        request, as the trainer will when it folds them in. With `use_online` false (the task's
        `online_features` flag), every row gets each feature's value before any history."""
        if not spec.online_features:
            return [[] for _ in rows]
        if not use_online:
            empty = OnlineFold(spec)
            return [empty.values(entity, row) for entity, row in zip(entity_ids, rows, strict=True)]
        if after_position is not None:
            fold = await self.online.sync(spec, after_position)
        else:
            fold = self.online.fold(spec) or await self.online.prepare(spec)
        pairs = list(zip(entity_ids, rows, strict=True))
        if record:
            return fold.preview(pairs)
        return [fold.values(entity, row) for entity, row in pairs]

    def score_shadows(
        self,
        routes: Routes,
        answered: Sequence[Prediction],
        online: Sequence[Sequence[float]],
        sample: float | None,
    ) -> None:
        """After the answer went out: each shadow scores its share of the rows (the flag's
        `shadow_sample`, else its own rate), recorded under the rows' prediction ids, never
        returned."""
        for shadow in routes.shadows:
            rate = shadow.share if sample is None else float(sample)
            index = [i for i, p in enumerate(answered) if sampled(str(p.prediction_id), rate)]
            if not index:
                continue
            scored = predict(
                shadow.predictor,
                routes.spec,
                [answered[i].features for i in index],
                [answered[i].entity_id for i in index],
                [online[i] for i in index],
                model_version=shadow.model_version,
                role="shadow",
                prediction_ids=[answered[i].prediction_id for i in index],
            )
            learned = {shadow.model_version: getattr(shadow.predictor, "learned_through", None)}
            self.recorder.record(served_events(routes.task, scored, learned, False))
            self.shadow_scored += len(scored)

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
