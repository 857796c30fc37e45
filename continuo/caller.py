"""A caller of the running system: asks serving for each request's predictions (recording the
rows: log and wait), posts their labels to ingest by prediction id under a label timing, and
waits for the trainer; used by `continuo demo`, the closed loop, the benchmarks and e2e tests."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

from continuo.progress import aprogress
from continuo.simulate import Timing
from continuo.stack import Stack

ENTITY = "nsw"


@dataclass
class Served:
    """What serving answered, row by row, and when labels were accepted."""

    # Each row's answer: P(class 1), a regression's value, or a multiclass task's class
    # probabilities by class (None: no model yet).
    answers: list[float | dict[str, float] | None]
    requests: int = 0
    labels: int = 0
    seconds: float = 0.0
    # For each label request: when ingest accepted it (time.monotonic()) and its last position.
    label_batches: list[tuple[float, int]] = field(default_factory=list)
    versions: set[int] = field(default_factory=set)
    first_seen: dict[int, float] = field(default_factory=dict)  # version -> time first answered
    # Per request: its first row and the model version that answered it (None: no model yet).
    answered_by: list[tuple[int, int | None]] = field(default_factory=list)
    # A regression's prediction interval per row, by row index (rows without one are absent).
    intervals: dict[int, tuple[float, float]] = field(default_factory=dict)

    def right(self, labels: list[Any]) -> np.ndarray:
        """1 where serving answered the row's class (a binary task's labels: 0/1; a multiclass
        task's: the classes); unanswered rows (before any model) are 0."""
        if any(isinstance(v, dict) for v in self.answers):
            return np.array(
                [
                    isinstance(v, dict) and max(v, key=v.__getitem__) == str(label)
                    for v, label in zip(self.answers, labels, strict=True)
                ]
            )
        p = np.array([np.nan if v is None else v for v in self.answers], dtype=float)
        return ~np.isnan(p) & ((p >= 0.5) == (np.asarray(labels) == 1))

    def abs_errors(self, labels: list[float]) -> np.ndarray:
        """A regression's absolute error on each row (NaN where no model answered)."""
        p = np.array([np.nan if v is None else v for v in self.answers], dtype=float)
        return np.abs(p - np.asarray(labels, dtype=float))

    def interval_coverage(
        self, labels: list[float], last: int | None = None
    ) -> tuple[float, float, int]:
        """Of the rows answered with a prediction interval (the `last` of them): the share
        whose label fell inside it, the intervals' mean width, and how many rows had one."""
        rows = sorted(self.intervals.items())[-last:] if last else self.intervals.items()
        inside = [lo <= labels[i] <= hi for i, (lo, hi) in rows]
        widths = [hi - lo for _, (lo, hi) in rows]
        n = len(inside)
        return (sum(inside) / n, sum(widths) / n, n) if n else (float("nan"), float("nan"), 0)

    @property
    def unanswered(self) -> int:
        return sum(1 for p in self.answers if p is None)


async def _post(client: httpx.AsyncClient, url: str, body: Any) -> dict[str, Any]:
    for attempt in range(20):
        response = await client.post(url, json=body)
        if response.status_code < 500:
            break
        await asyncio.sleep(0.1 * (attempt + 1))  # starting up, or the store blinked: retry
    if response.status_code not in (200, 202):
        raise RuntimeError(f"{url} refused: {response.status_code} {response.text[:500]}")
    return response.json()


async def stream_through_serving(
    urls: dict[str, str],
    task: str,
    features: list[dict[str, Any]],
    labels: list[Any],
    timing: Timing,
    *,
    entity: str = ENTITY,
    entities: list[str] | None = None,
    progress: bool = True,
    rate: float | None = None,
) -> Served:
    """Ask serving for each request's predictions (recording the rows), then post their labels
    by prediction id `timing.label_delay` requests later. Each request passes the last position
    ingest returned, so serving's online features include every label already posted (what a
    caller sees that posts its own labels). With `rate`, rows go no faster than that many a
    second (an offered load). `entities` names each row's entity (else all are `entity`)."""
    served = Served([None] * len(features))
    waiting: deque[list[dict[str, Any]]] = deque()
    position = 0
    started = time.monotonic()
    quiet = None if progress else False  # a bar on a terminal, nothing in a log
    async with (
        httpx.AsyncClient(timeout=60) as client,
        aprogress("streaming", len(features), unit="rows", enabled=quiet) as bar,
    ):
        predict_url = f"{urls['serving']}/v1/tasks/{task}/predict"
        labels_url = f"{urls['ingest']}/v1/tasks/{task}/labels"

        async def post_labels(batch: list[dict[str, Any]]) -> None:
            nonlocal position
            accepted = await _post(client, labels_url, batch)
            position = max(position, *accepted["positions"])
            served.label_batches.append((time.monotonic(), position))
            served.labels += len(batch)
            served.requests += 1

        for start in range(0, len(features), timing.batch):
            chunk = range(start, min(len(features), start + timing.batch))
            body = {
                "records": [
                    {"features": features[i], "entity_id": entities[i] if entities else entity}
                    for i in chunk
                ],
                "record": True,
                "after_position": position,
            }
            answer = await _post(client, predict_url, body)
            served.requests += 1
            served.answered_by.append((start, answer["model_version"]))
            if answer["model_version"] is not None:
                if answer["model_version"] not in served.versions:
                    served.first_seen[answer["model_version"]] = time.monotonic()
                served.versions.add(answer["model_version"])
            for i, prediction in zip(chunk, answer["predictions"], strict=True):
                if prediction.get("interval") is not None:
                    low, high = prediction["interval"]
                    served.intervals[i] = (low, high)
                served.answers[i] = next(
                    (
                        prediction[k]
                        for k in ("probabilities", "value")
                        if prediction.get(k) is not None
                    ),
                    prediction["probability"],
                )
            waiting.append(
                [
                    {"prediction_id": p["prediction_id"], "label": labels[i]}
                    for i, p in zip(chunk, answer["predictions"], strict=True)
                ]
            )
            while len(waiting) > timing.label_delay:
                await post_labels(waiting.popleft())
            if rate:
                ahead = chunk.stop / rate - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
            bar.update(completed=chunk.stop)
        while waiting:
            await post_labels(waiting.popleft())
    served.seconds = time.monotonic() - started
    return served


def freshness(
    label_batches: list[tuple[float, int]],
    seen: Iterable[tuple[float, int]],
    learned_through: Mapping[int, int],
) -> tuple[list[float], int]:
    """Seconds from each label request's acceptance (time, its last position) to serving first
    answering with a model that learned it (`seen`: (time, version) serving answered with;
    `learned_through`: each version's last position learned); and how many requests no served
    model had learned by the end (the stream's tail)."""
    seen = sorted(seen)
    delays, unserved = [], 0
    for accepted_at, position in label_batches:
        # No model that learned a label can be served before the label was accepted.
        served = [t for t, v in seen if t >= accepted_at and learned_through.get(v, -1) >= position]
        if served:
            delays.append(served[0] - accepted_at)
        else:
            unserved += 1
    return delays, unserved


async def trainer_status(trainer_url: str, task: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"{trainer_url}/v1/status")
        return response.json()["tasks"].get(task, {})


async def wait_until_learned(
    trainer_url: str, task: str, labels: int, timeout: float
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status = await trainer_status(trainer_url, task)
        # `settled`: no batch in flight, so every model built from these labels is stored.
        if status.get("learned", 0) >= labels and status.get("settled"):
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"trainer learned {status.get('learned', 0)} of {labels} labels in {timeout}s"
            )
        await asyncio.sleep(0.2)


async def governance_models(stack: Stack, task: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(
            f"{stack.url('governance')}/v1/tasks/{task}/models",
            headers=stack.governance_headers(),
        )
        return response.json()
