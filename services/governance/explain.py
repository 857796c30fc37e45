"""Explanations, pure: global feature importance of a model, and one prediction's TreeSHAP.

Contributions are LightGBM's native TreeSHAP (`pred_contrib`) through the shared model codec, in
log-odds: they add up, with the bias, to the model's logit for the row.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from shared.model_codec import Predictor
from shared.tasks import TaskSpec, feature_vector


def global_importance(predictor: Predictor) -> list[dict[str, Any]]:
    """Total split gain per feature, largest first, with each one's share of the total."""
    gains = predictor.feature_importance()
    total = sum(gains.values()) or 1.0
    ranked = sorted(gains.items(), key=lambda item: (-item[1], item[0]))
    return [{"feature": name, "gain": gain, "share": gain / total} for name, gain in ranked]


def _value(predictor: Predictor, features: Mapping[str, Any], name: str) -> Any:
    if name.startswith("stream:"):  # state learned from the label stream, frozen in the model
        return predictor.state.get(name.removeprefix("stream:"))
    return features.get(name)


def prediction_contributions(
    spec: TaskSpec, predictor: Predictor, features: Mapping[str, Any]
) -> dict[str, Any]:
    """Each feature's contribution to one prediction's log-odds, the bias and the totals."""
    X = np.asarray([feature_vector(spec, features)], dtype=np.float64)
    contributions = predictor.contributions(X)[0]
    logit = float(predictor.logits(X)[0])
    per_feature = [
        {"feature": name, "value": _value(predictor, features, name), "contribution": float(c)}
        for name, c in zip(predictor.feature_names, contributions[:-1], strict=True)
    ]
    per_feature.sort(key=lambda item: -abs(item["contribution"]))
    return {
        "contributions": per_feature,
        "bias": float(contributions[-1]),
        "logit": logit,
        "probability": 1.0 / (1.0 + math.exp(-logit)),
        "sum_of_contributions": float(contributions.sum()),
        "unit": "log-odds of class 1",
    }
