"""The model format shared by trainer, serving and governance: a weighted blend of members.

Bytes are compact JSON with sorted keys (deterministic for the same model)::

    {"format": "continuo-lgbm/2",
     "n_features": 9, "feature_names": ["period", ..., "last_label", ...] | null,
     "members": [{"weight": 0.7, "model": "<LightGBM Booster.model_to_string()>"},
                 {"weight": 0.4, "linear": {"coef": [...], "intercept": -0.1,
                                            "center": [...], "scale": [...], "z_clip": 5.0}}],
     "bias": -0.2, "clip": 8.0,
     "online": null | {"learned_through": 1234, "blend_lr": 0.05,
                       "linear": {"lrs": [0.003, 0.03], "k": 1200, "m2": [...]}}}

A regression model adds ``"target": {"kind": "regression", "center": c, "scale": s}``: its
scores are the standardised target, and its answer is ``c + s * score`` (`Predictor.predict`);
its `online` section's ``linear`` holds its ridge members' moments (``{"memories": [...],
"weights": [...], "comoments": [[d*d numbers], ...], "xy": [[...], ...]}``, `OnlineRidge`; files
written before 2026-11-30 hold learning rates as a binary model's do) and it adds
``"residuals": [...]``, the absolute errors of the last answers serving
gave (else the learner's own; at most `RESIDUALS`, oldest first), which a `LiveModel`'s
prediction interval is calibrated on (`shared.online_models.conformal_reach`).
Binary models have no `target` section. A multiclass model is
``{"format": "continuo-ovr/1", "models": [<a binary model's document>, ...]}``, one per class in
class order (`encode_one_vs_rest`); it answers each class's P(class) divided by their sum
(`decode_any`, `OneVsRestPredictor`).

Prediction, in log-odds (a regression's standardised score)::

    logit(x) = bias + sum_m weight_m * clip(raw_m(x))

where a LightGBM member's raw score is its summed trees and a linear member's is
`intercept + sum_j coef_j * clip((x_j - center_j) / scale_j, +-z_clip)`. The columns of x are
the task's model features followed by its online features (`TaskSpec.input_names`): a model holds
no stream state, so whoever predicts (serving, the trainer, governance) passes the online features
as of that moment, computed by `shared.features`.

`online` lets a model keep learning after it was published (`shared.online_models.LiveModel`):
the blend's learning rate, the linear members' learning rates and running statistics (a
regression's ridge members: their memories and weighted moments), and the data stream version of
the last labelled row it learned. Tree members come first in `members`,
then linear members, in the order the trainer's blend uses them.

Version 1 (`continuo-lgbm/1`, before online features) is still read: its frozen stream state
becomes constant extra inputs and a constant term, exactly as it predicted then.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np

FORMAT = "continuo-lgbm/2"
FORMAT_V1 = "continuo-lgbm/1"
FORMAT_OVR = "continuo-ovr/1"  # a multiclass model: one binary model per class
_LOGIT_CLIP = 30.0
# A regression's scores are the standardised target, bounded only to stay finite: between two
# moves of the scale a target can go far from the rows it was set on (a chick's weight: 41 +- 1.1 g
# in ChickWeights' first 50 rows, 373 g later). Huber-clipped online steps keep them stable at
# any size.
REGRESSION_CLIP = 1e6


class ModelFormatError(ValueError):
    """The bytes are not a model this codec understands."""


@dataclass(frozen=True)
class LinearMember:
    """A logistic model on standardised inputs: intercept + sum_j coef_j * z_j, where
    z_j = (x_j - center_j) / scale_j, clipped to +-z_clip (one outlier cannot dominate)."""

    coef: tuple[float, ...]
    intercept: float
    center: tuple[float, ...]
    scale: tuple[float, ...]
    z_clip: float

    def _z(self, X: np.ndarray) -> np.ndarray:
        z = (X - np.asarray(self.center)) / np.asarray(self.scale)
        return np.clip(z, -self.z_clip, self.z_clip)

    def raw(self, X: np.ndarray) -> np.ndarray:
        return self._z(X) @ np.asarray(self.coef) + self.intercept

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """Per-column terms (n, n_features); the intercept is left to the caller's bias."""
        return self._z(X) * np.asarray(self.coef)

    def as_doc(self) -> dict[str, Any]:
        return {
            "coef": [float(v) for v in self.coef],
            "intercept": float(self.intercept),
            "center": [float(v) for v in self.center],
            "scale": [float(v) for v in self.scale],
            "z_clip": float(self.z_clip),
        }


Member = str | lgb.Booster | LinearMember


@dataclass(frozen=True)
class TargetScale:
    """A regression model's scores are (y - center) / scale, fixed in a model file. The learner
    sets it at its first tick and moves it (carrying every online part over exactly, retraining
    the trees) when the labels' scale changes, so every part of a model shares one scale."""

    center: float
    scale: float

    @classmethod
    def of(cls, y: np.ndarray) -> TargetScale:
        """The scale of these labels: their median and their median absolute deviation (times
        1.4826, the standard deviation's value for normal data), so one wild label moves it
        little; the standard deviation where most labels are equal, else 1."""
        y = np.asarray(y, dtype=float)
        if not len(y):
            return cls(0.0, 1.0)
        center = float(np.median(y))
        spread = 1.4826 * float(np.median(np.abs(y - center)))
        # Relative to the center only: a target measured in tiny units keeps its own scale.
        if not spread > 1e-9 * abs(center):
            spread = float(y.std())
        return cls(center, spread if spread > 1e-9 * abs(center) else 1.0)

    def moved(self, other: TargetScale, factor: float = 2.0) -> bool:
        """Whether `other` is a scale to change to: its spread `factor` times this one's or
        more (or less), or its center more than `factor` of this spread away."""
        ratio = other.scale / self.scale
        return not 1 / factor < ratio < factor or abs(other.center - self.center) > (
            factor * self.scale
        )

    def standardise(self, y: np.ndarray | float) -> Any:
        return (np.asarray(y, dtype=float) - self.center) / self.scale

    def value(self, score: np.ndarray | float) -> Any:
        """The target value of a standardised score."""
        return self.center + self.scale * np.asarray(score, dtype=float)

    def as_doc(self) -> dict[str, Any]:
        return {"kind": "regression", "center": self.center, "scale": self.scale}


def target_scale(doc: Mapping[str, Any]) -> TargetScale | None:
    """A model file's target scale: None for a binary model (no `target` section)."""
    target = doc.get("target")
    if target is None:
        return None
    return TargetScale(float(target["center"]), float(target["scale"]))


def encode(
    *,
    n_features: int,
    members: Sequence[tuple[float, Member]],
    bias: float = 0.0,
    feature_names: Sequence[str] | None = None,
    clip: float | None = None,
    online: Mapping[str, Any] | None = None,
    target: TargetScale | None = None,
) -> bytes:
    """Encode a weighted blend of LightGBM boosters (or their model strings) and linear members;
    `target`: a regression model's scale (none: a binary model's log-odds)."""
    if feature_names is not None and len(feature_names) != n_features:
        raise ValueError("feature_names must name every feature")
    docs = []
    for weight, member in members:
        if isinstance(member, LinearMember):
            if not len(member.coef) == len(member.center) == len(member.scale) == n_features:
                raise ValueError("a linear member needs one coefficient per feature")
            docs.append({"weight": float(weight), "linear": member.as_doc()})
        else:
            text = member if isinstance(member, str) else member.model_to_string()
            docs.append({"weight": float(weight), "model": text})
    doc = {
        "format": FORMAT,
        "n_features": int(n_features),
        "feature_names": list(feature_names) if feature_names is not None else None,
        "members": docs,
        "bias": float(bias),
        "clip": None if clip is None else float(clip),
        "online": None if online is None else dict(online),
    }
    if target is not None:  # left out for binary models: their bytes stay as they were
        doc["target"] = target.as_doc()
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def encode_one_vs_rest(per_class: Sequence[bytes]) -> bytes:
    """A multiclass model: each class's binary model (class k against the rest), in class
    order; it answers each class's P(class) divided by their sum."""
    if len(per_class) < 3:
        raise ValueError("a multiclass model needs at least 3 classes")
    doc = {"format": FORMAT_OVR, "models": [parse(data) for data in per_class]}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def class_models(doc: Mapping[str, Any]) -> list[bytes]:
    """The binary models of a multiclass model file, each as the bytes it was published as."""
    models = doc.get("models")
    if not isinstance(models, list) or len(models) < 3:
        raise ModelFormatError("malformed Continuo model: a multiclass model holds 3+ models")
    return [json.dumps(d, sort_keys=True, separators=(",", ":")).encode() for d in models]


def decode(data: bytes) -> Predictor:
    """Decode the bytes of a binary or regression model; the same bytes give the same (cached,
    read-only) predictor. A multiclass model is refused here (it has no single score):
    `decode_any` takes every kind."""
    predictor = _decode_cached(bytes(data))
    if isinstance(predictor, OneVsRestPredictor):
        raise ModelFormatError("a multiclass model: decode it with decode_any")
    return predictor


def decode_any(data: bytes) -> Predictor | OneVsRestPredictor:
    """Decode model bytes of any kind: a multiclass model's predictor answers (rows, classes)."""
    return _decode_cached(bytes(data))


def parse(data: bytes) -> dict[str, Any]:
    """The model file as a dict, checked to be a Continuo model."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFormatError(f"not a Continuo model: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") not in (FORMAT, FORMAT_V1, FORMAT_OVR):
        raise ModelFormatError(f"expected format {FORMAT!r} or {FORMAT_OVR!r}")
    return doc


@functools.lru_cache(maxsize=32)
def _decode_cached(data: bytes) -> Predictor | OneVsRestPredictor:
    doc = parse(data)
    if doc["format"] == FORMAT_OVR:
        try:
            return OneVsRestPredictor([_predictor(m) for m in class_models(doc)])
        except (KeyError, TypeError) as exc:
            raise ModelFormatError(f"malformed Continuo model: {exc}") from exc
    return _predictor(data)


def _predictor(data: bytes) -> Predictor:
    doc = parse(data)
    if doc["format"] == FORMAT_OVR:
        raise ModelFormatError("a multiclass model holds binary models, not multiclass ones")
    try:
        members: list[tuple[float, lgb.Booster | LinearMember]] = []
        for m in doc["members"]:
            if "linear" in m:
                lin = m["linear"]
                member: lgb.Booster | LinearMember = LinearMember(
                    tuple(lin["coef"]),
                    float(lin["intercept"]),
                    tuple(lin["center"]),
                    tuple(lin["scale"]),
                    float(lin["z_clip"]),
                )
            else:
                member = lgb.Booster(model_str=m["model"])
            members.append((float(m["weight"]), member))
        return Predictor(doc, members)
    except (KeyError, TypeError, ValueError, lgb.basic.LightGBMError) as exc:
        raise ModelFormatError(f"malformed Continuo model: {exc}") from exc


class Predictor:
    """A decoded model. Columns of X: the task's model features, then its online features."""

    def __init__(
        self, doc: Mapping[str, Any], members: Sequence[tuple[float, lgb.Booster | LinearMember]]
    ) -> None:
        self.format = str(doc["format"])
        self._members = tuple(members)
        self.n_features = int(doc["n_features"])
        self._bias = float(doc["bias"])
        self._clip = doc.get("clip")
        self.target = target_scale(doc)
        names = doc.get("feature_names") or [f"f{i}" for i in range(self.n_features)]
        self.feature_names: list[str] = list(names)
        # Version 1 models: the stream state frozen in the file, as constant inputs and terms.
        stream = doc.get("stream") or {"inputs": [], "linear": {}, "state": {}}
        state = stream["state"]
        self._constant_inputs = np.array([state[k] for k in stream["inputs"]], dtype=float)
        self._bias += float(sum(w * state[k] for k, w in stream["linear"].items()))

    def _inputs(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=float).reshape(-1, self.n_features)
        if not len(self._constant_inputs):
            return X
        extra = np.broadcast_to(self._constant_inputs, (len(X), len(self._constant_inputs)))
        return np.hstack([X, extra])

    def _raw(self, member: lgb.Booster | LinearMember, Xa: np.ndarray) -> np.ndarray:
        if isinstance(member, LinearMember):
            raw = member.raw(Xa[:, : self.n_features])
        else:
            raw = np.asarray(member.predict(Xa, raw_score=True, num_threads=1))
        return raw if self._clip is None else np.clip(raw, -self._clip, self._clip)

    def logits(self, X: np.ndarray) -> np.ndarray:
        """Log-odds of class 1 for each row (a regression's standardised score)."""
        Xa = self._inputs(X)
        out = np.full(len(Xa), self._bias)
        for weight, member in self._members:
            out += weight * self._raw(member, Xa)
        top = _LOGIT_CLIP if self.target is None else REGRESSION_CLIP
        return np.clip(out, -top, top)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """P(class 1) for each row of X, shape (n,)."""
        if self.target is not None:
            raise TypeError("a regression model answers values: call predict")
        return 1.0 / (1.0 + np.exp(-self.logits(X)))

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The answer for each row: P(class 1) of a binary model, the value of a regression."""
        if self.target is None:
            return self.predict_proba(X)
        return np.asarray(self.target.value(self.logits(X)), dtype=float)

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """Per-feature contributions to the log-odds, shape (n, n_features + 1).

        LightGBM's TreeSHAP (`pred_contrib=True`) of each tree member and the exact terms of each
        linear member, weighted by the member's weight; the last column is the bias (members'
        expected values and intercepts plus the blend's bias). Rows sum to `logits(X)` unless a
        member score was clipped (|raw| > clip, rare) or the logit hit +-30.
        """
        Xa = self._inputs(X)
        n = self.n_features
        out = np.zeros((len(Xa), n + 1))
        for weight, member in self._members:
            if isinstance(member, LinearMember):
                out[:, :n] += weight * member.contributions(Xa[:, :n])
                out[:, -1] += weight * member.intercept
                continue
            contrib = np.asarray(member.predict(Xa, pred_contrib=True, num_threads=1))
            out[:, :n] += weight * contrib[:, :n]
            # Version 1 constant inputs: their part joins the bias (they never vary).
            out[:, -1] += weight * contrib[:, n:].sum(axis=1)
        out[:, -1] += self._bias
        return out

    def feature_importance(self) -> dict[str, float]:
        """Total split gain per feature over the tree members, weighted by |weight| (linear
        members have no gain: their share of each prediction is in `contributions`)."""
        total = np.zeros(self.n_features)
        for weight, member in self._members:
            if not isinstance(member, LinearMember):
                gain = member.feature_importance(importance_type="gain")
                total += abs(weight) * gain[: self.n_features]
        return {name: float(v) for name, v in zip(self.feature_names, total, strict=True)}


class OneVsRestPredictor:
    """A decoded multiclass model: each class's binary model, answers normalised."""

    def __init__(self, per_class: Sequence[Predictor]) -> None:
        self.per_class = list(per_class)
        self.n_features = self.per_class[0].n_features
        self.feature_names = self.per_class[0].feature_names
        self.n_classes = len(self.per_class)
        self.target = None

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """P(each class) for each row of X, shape (n, classes), rows summing to one."""
        own = np.column_stack([p.predict_proba(X) for p in self.per_class])
        return own / own.sum(axis=1, keepdims=True)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.predict_proba(X)
