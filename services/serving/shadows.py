"""Shadows, scored off the response path.

A request leaves its answered rows here and returns. A background task on the event loop (where
the models also learn their labels, so a shadow is never read half-way through one) takes
everything waiting every `interval` seconds and scores each shadow over all of it with one
vectorised predict, then hands the scores to the prediction recorder (role `shadow`, never
returned), and waits while the recorder is behind (its backpressure). Past `backlog` waiting rows
the oldest requests are dropped and counted: a shadow's score is evidence, never an answer, and
serving answers first.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import structlog

from services.serving.models import Prediction, predict
from services.serving.recorder import PredictionRecorder
from services.serving.routing import Routes, Served
from shared.deployments import bucket

log = structlog.get_logger(__name__)


def sampled(prediction_id: str, rate: float) -> bool:
    """Whether a shadow scores a row: a stable share of prediction ids (0 <= rate <= 1)."""
    return bucket("shadow/", prediction_id) < 100.0 * rate


@dataclass(frozen=True)
class _Waiting:
    routes: Routes
    answered: Sequence[Prediction]
    online: Mapping[str, Sequence[Sequence[float]]]  # by spec version, in request order
    sample: float | None


class ShadowScorer:
    def __init__(
        self, recorder: PredictionRecorder, *, interval: float = 0.02, backlog: int = 50_000
    ) -> None:
        self._recorder = recorder
        self._interval = interval
        self._backlog = backlog
        self._waiting: deque[_Waiting] = deque()
        self._rows = 0
        self._task: asyncio.Task[None] | None = None
        self.scored = 0
        self.dropped = 0

    def submit(
        self,
        routes: Routes,
        answered: Sequence[Prediction],
        online: Mapping[str, Sequence[Sequence[float]]],
        sample: float | None,
    ) -> None:
        """Leave a request's answered rows for its shadows (`sample`: the flag's rate, if set)."""
        self._waiting.append(_Waiting(routes, answered, online, sample))
        self._rows += len(answered)
        while self._rows > self._backlog and len(self._waiting) > 1:
            old = self._waiting.popleft()
            self._rows -= len(old.answered)
            self.dropped += len(old.answered)
            log.warning("serving.shadow_rows_dropped", rows=len(old.answered), total=self.dropped)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="serving:shadows")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.score_waiting()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                self.score_waiting()
            except Exception:  # noqa: BLE001 - evidence lost for these rows; serving goes on
                log.exception("serving.shadow_scoring_failed")
            await self._recorder.room()  # the scores wait, and past `backlog` are dropped

    def score_waiting(self) -> int:
        """Score every shadow over the rows waiting (one predict per shadow); returns the count."""
        taken, self._waiting, self._rows = self._waiting, deque(), 0
        # Per shadow model: its routes (task, spec), and the rows it scores with their inputs.
        groups: dict[int, tuple[Routes, Served, list[Prediction], list[Sequence[float]]]] = {}
        for item in taken:
            for shadow in item.routes.shadows:
                rate = shadow.share if item.sample is None else float(item.sample)
                _, _, rows, online = groups.setdefault(
                    id(shadow.predictor), (item.routes, shadow, [], [])
                )
                spec_online = item.online.get(item.routes.spec_of(shadow).version)
                if spec_online is None:
                    continue  # its pipeline's fold was not ready for this request
                for p, values in zip(item.answered, spec_online, strict=True):
                    if sampled(str(p.prediction_id), rate):
                        rows.append(p)
                        online.append(values)
        scored = 0
        for routes, shadow, rows, online in groups.values():
            if not rows:
                continue
            predictions = predict(
                shadow.predictor,
                routes.spec_of(shadow),
                [p.features for p in rows],
                [p.entity_id for p in rows],
                online,
                model_version=shadow.model_version,
                role="shadow",
                prediction_ids=[p.prediction_id for p in rows],
            )
            learned = {shadow.model_version: getattr(shadow.predictor, "learned_through", None)}
            self._recorder.record(routes.task, predictions, learned, False)
            scored += len(predictions)
        self.scored += scored
        return scored
