"""Explanations, pure: global feature importance of a model, and one prediction's TreeSHAP.

Contributions are LightGBM's native TreeSHAP (`pred_contrib`) for tree members and exact terms for
linear members, through the shared model codec, in log-odds: they add up, with the bias, to the
model's logit for the row. A prediction is explained with the online-feature values it was served
with (recorded with it), not today's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from shared.features import model_inputs
from shared.model_codec import Predictor
from shared.tasks import TaskSpec


def global_importance(predictor: Predictor) -> list[dict[str, Any]]:
    """Total split gain per feature, largest first, with each one's share of the total."""
    gains = predictor.feature_importance()
    total = sum(gains.values()) or 1.0
    ranked = sorted(gains.items(), key=lambda item: (-item[1], item[0]))
    return [{"feature": name, "gain": gain, "share": gain / total} for name, gain in ranked]


ONLINE_LEARNING = "learned online since the version was published"


def prediction_contributions(
    spec: TaskSpec,
    predictor: Predictor,
    features: Mapping[str, Any],
    online: Mapping[str, float] | None = None,
    served_probability: float | None = None,
) -> dict[str, Any]:
    """Each input's contribution to one prediction's log-odds (its features and the online
    features it was given), the bias and the totals.

    The contributions are the published version's. A served answer came from that version with
    its online parts moved on by the labels since (shared.online_models.LiveModel); with
    `served_probability`, the difference is one more term, so the total is what was served."""
    online = online or {}
    values = {**features, **online}
    X = np.asarray(
        [model_inputs(spec, features, [online.get(n, 0.0) for n in spec.online_names])],
        dtype=np.float64,
    )
    contributions = predictor.contributions(X)[0]
    logit = float(predictor.logits(X)[0])
    per_feature: list[dict[str, Any]] = [
        {"feature": name, "value": values.get(name), "contribution": float(c)}
        for name, c in zip(predictor.feature_names, contributions[:-1], strict=True)
    ]
    total = float(contributions.sum())
    if served_probability is not None and 0.0 < served_probability < 1.0:
        served_logit = math.log(served_probability / (1.0 - served_probability))
        if abs(served_logit - logit) > 1e-9:
            per_feature.append(
                {"feature": ONLINE_LEARNING, "value": None, "contribution": served_logit - logit}
            )
            total += served_logit - logit
            logit = served_logit
    per_feature.sort(key=lambda item: -abs(float(item["contribution"])))
    return {
        "contributions": per_feature,
        "bias": float(contributions[-1]),
        "logit": logit,
        "probability": 1.0 / (1.0 + math.exp(-logit)),
        "sum_of_contributions": total,
        "unit": "log-odds of class 1",
    }
