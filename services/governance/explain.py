"""Explanations, pure: global feature importance of a model, and one prediction's TreeSHAP.

Contributions are LightGBM's native TreeSHAP (`pred_contrib`) for tree members and exact terms for
linear members, through the shared model codec; they add up, with the bias, to the model's score
for the row. The score is the task kind's:

* binary: the log-odds of class 1;
* regression: the value, in the target's units (the model's standardised score times its scale;
  the bias holds the scale's center);
* multiclass: the log-odds of one class against the rest (its one-vs-rest model; the answered
  class unless another is asked for), next to every class's probability.

A prediction is explained with the online-feature values it was served with (recorded with it),
not today's. Serving's model went on learning online after it was published; where the served
answer shows how far (a binary probability, a regression value), that difference is one more term.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np

from shared.features import model_inputs
from shared.model_codec import OneVsRestPredictor, Predictor
from shared.online_models import answered_class
from shared.tasks import TaskSpec

ONLINE_LEARNING = "learned online since the version was published"
CLIPPED = "the score's bounds (a member's raw score or the total clipped)"


class UnknownClass(ValueError):
    """An explanation was asked for a class the task does not have."""


NO_TREES = (
    "no tree member{where}: split gain is 0 for every input; a linear member's part of each "
    "answer shows in that prediction's explanation (GET /v1/predictions/{{id}}/explanation)"
)


def global_importance(
    predictor: Predictor | OneVsRestPredictor, classes: Sequence[Any] = ()
) -> dict[str, Any]:
    """Total split gain per feature, largest first, with each one's share of the total (a
    multiclass model: summed over its classes' models, and each class's own under `classes`,
    named as the spec lists them, else by index); `notes` where a model (or a class's) has no
    tree to measure gain on."""
    if isinstance(predictor, OneVsRestPredictor):
        per_class = [p.feature_importance() for p in predictor.per_class]
        names = list(classes) or list(range(len(per_class)))
        summed = {name: sum(g[name] for g in per_class) for name in predictor.feature_names}
        out: dict[str, Any] = {
            "features": _ranked(summed),
            "classes": [
                {"class": name, "features": _ranked(g)}
                for name, g in zip(names, per_class, strict=True)
            ],
        }
        treeless = [name for name, g in zip(names, per_class, strict=True) if not any(g.values())]
        if treeless:
            out["notes"] = NO_TREES.format(where=f" in the models of classes {treeless}")
        return out
    gains = predictor.feature_importance()
    out = {"features": _ranked(gains)}
    if not any(gains.values()):
        out["notes"] = NO_TREES.format(where="")
    return out


def _ranked(gains: Mapping[str, float]) -> list[dict[str, Any]]:
    total = sum(gains.values()) or 1.0
    ranked = sorted(gains.items(), key=lambda item: (-item[1], item[0]))
    return [{"feature": name, "gain": gain, "share": gain / total} for name, gain in ranked]


def prediction_contributions(
    spec: TaskSpec,
    predictor: Predictor | OneVsRestPredictor,
    features: Mapping[str, Any],
    online: Mapping[str, float] | None = None,
    served: float | Sequence[float] | None = None,
    *,
    class_name: str | None = None,
) -> dict[str, Any]:
    """Each input's contribution to one prediction's score (its features and the online
    features it was given), the bias and the totals, in the unit of the task's kind.

    `served`: what serving answered (P(class 1), a regression's value, a multiclass answer's
    class probabilities in class order). `class_name`: the class to explain, as text (a
    multiclass task; default: the class served)."""
    online = online or {}
    values = {**features, **online}
    X = np.asarray(
        [model_inputs(spec, features, [online.get(n, 0.0) for n in spec.online_names])],
        dtype=np.float64,
    )
    if isinstance(predictor, OneVsRestPredictor):
        probabilities = None if served is None else [float(p) for p in cast(Sequence, served)]
        return _multiclass(spec, predictor, X, values, probabilities, class_name)
    answer = None if served is None else float(cast(float, served))
    contributions = predictor.contributions(X)[0]
    score = float(predictor.logits(X)[0])
    target = predictor.target
    if target is None:  # binary: log-odds, the served one where the probability has one
        served_logit = None
        if answer is not None and 0.0 < answer < 1.0:
            served_logit = math.log(answer / (1.0 - answer))
        terms, logit = _explained(
            predictor.feature_names, values, contributions, score, served_logit
        )
        return {
            "kind": "binary",
            **terms,
            "logit": logit,
            "probability": 1.0 / (1.0 + math.exp(-logit)),
            "unit": "log-odds of class 1",
        }
    # A regression: into the target's units (the bias takes the scale's center).
    contributions = contributions * target.scale
    contributions[-1] += target.center
    published = target.center + target.scale * score
    terms, value = _explained(predictor.feature_names, values, contributions, published, answer)
    return {
        "kind": "regression",
        **terms,
        "value": value,
        "unit": f"{spec.target.name}, in its units",
    }


def _explained(
    names: Sequence[str],
    values: Mapping[str, Any],
    contributions: np.ndarray,
    published: float,
    served: float | None,
) -> tuple[dict[str, Any], float]:
    """An answer's terms, largest first, its bias and their sum; and the score they add up to.
    Where the published score was clipped (a member's raw score past its bound on a pure leaf,
    or the total past the score's), what the bound took off is one more term; where the served
    score differs from the published version's, the difference is another: the terms always
    add up to the score."""
    terms: list[dict[str, Any]] = [
        {"feature": name, "value": values.get(name), "contribution": float(c)}
        for name, c in zip(names, contributions[:-1], strict=True)
    ]
    total = float(contributions.sum())
    for name, to in ((CLIPPED, published), (ONLINE_LEARNING, served)):
        if to is not None and abs(to - total) > 1e-9 * max(1.0, abs(total)):
            terms.append({"feature": name, "value": None, "contribution": to - total})
            total = to
    score = total
    terms.sort(key=lambda item: -abs(float(item["contribution"])))
    explained = {
        "contributions": terms,
        "bias": float(contributions[-1]),
        "sum_of_contributions": total,
    }
    return explained, score


def _multiclass(
    spec: TaskSpec,
    predictor: OneVsRestPredictor,
    X: np.ndarray,
    values: Mapping[str, Any],
    served: list[float] | None,
    class_name: str | None,
) -> dict[str, Any]:
    classes = list(spec.target.classes)
    names = [str(c) for c in classes]  # as a query names them (and serving keys them)
    published = predictor.predict_proba(X)[0]
    if class_name is None:
        k = answered_class(served if served is not None else published)
    elif class_name in names:
        k = names.index(class_name)
    else:
        raise UnknownClass(f"{class_name!r} is not a class of task {spec.name!r}: {names}")
    model = predictor.per_class[k]
    contributions = model.contributions(X)[0]
    logit = float(model.logits(X)[0])
    # The served probabilities are normalised over the classes' models as serving had moved
    # them on; one class's own score is not recorded, so no online term can be split off here.
    terms, logit = _explained(predictor.feature_names, values, contributions, logit, None)
    return {
        "kind": "multiclass",
        "class": classes[k],
        **terms,
        "logit": logit,
        # Its one-vs-rest model's own P(class), the sigmoid of the logit; `probability` is
        # P(class) normalised over every class's model, as answered.
        "own_probability": 1.0 / (1.0 + math.exp(-logit)),
        "probability": float(published[k]),
        "unit": f"log-odds of class {names[k]} against the rest (its one-vs-rest model)",
        "classes": [
            {
                "class": value,
                "probability": float(published[j]),
                "served_probability": None if served is None else served[j],
            }
            for j, value in enumerate(classes)
        ],
        "notes": (
            "The contributions and probabilities are the published version's; serving's copy "
            "went on learning online, so its probabilities (served_probability) may differ."
        ),
    }
