"""Serving and its labels as the trainer-core tests of the task kinds replay them."""

from __future__ import annotations

from typing import Any

import numpy as np

from services.trainer.core import TaskTraining
from shared.online_models import LearnedRow, LiveModel


def served_one_request_late(
    core: TaskTraining,
    stream: Any,
    serving: LiveModel,
    X: np.ndarray,
    y: np.ndarray,
    start: int,
    version: int,
    request: int = 100,
) -> tuple[list[Any], list[Any]]:
    """Rows `start`.. of X in `request`-row requests: `serving` answers each request, the rows
    are recorded with those answers (log and wait: `stream.observe(x, served=, version=)`), and
    each request's labels (`stream.label`) follow the next request's answers, serving learning
    them as it does. Returns the answers, in row order, and the facts the core made."""
    answers: list[Any] = []
    facts: list[Any] = []
    waiting: list[tuple[list[Any], range]] = []
    for first in range(start, len(X), request):
        rows = range(first, min(first + request, len(X)))
        served = serving.predict(X[rows.start : rows.stop]).tolist()
        answers += served
        observed = [
            stream.observe(X[i], served=a, version=version)
            for i, a in zip(rows, served, strict=True)
        ]
        waiting.append((observed, rows))
        events = list(observed)
        if len(waiting) > 1:  # the previous request's labels
            labelled, earlier = waiting.pop(0)
            labels = [stream.label(o, y[i].item()) for o, i in zip(labelled, earlier, strict=True)]
            events += labels
            serving.learn(
                [
                    LearnedRow(e.stream_version, list(X[i]), y[i].item())
                    for e, i in zip(labels, earlier, strict=True)
                ]
            )
        facts += core.apply(events).facts
    labelled, earlier = waiting.pop(0)
    facts += core.apply(
        [stream.label(o, y[i].item()) for o, i in zip(labelled, earlier, strict=True)]
    ).facts
    return answers, facts
