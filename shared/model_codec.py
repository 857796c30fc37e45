"""The model format shared by trainer, serving and governance: a weighted blend of LightGBM models.

Bytes are compact JSON with sorted keys (deterministic for the same model)::

    {"format": "continuo-lgbm/1",
     "n_features": 6, "feature_names": ["period", ...] | null,
     "members": [{"weight": 1.7, "model": "<LightGBM Booster.model_to_string()>"}, ...],
     "bias": -0.2, "clip": 8.0,
     "stream": null | {"inputs": ["last_label", "label_ewm"],
                       "linear": {"last_label": 1.9, "residual": 6.1},
                       "state": {"last_label": 1.0, "label_ewm": 0.75, "residual": 0.1}}}

Prediction, in log-odds::

    logit(x) = bias + sum_m weight_m * clip(raw_m(x ++ state[inputs]))
                    + sum_k linear_k * state[k]

`stream` holds features computed from the labelled stream (the last label learned, an EWMA of
labels, the blend's recent residual). Serving knows only a request's features, so a decoded model
uses the stream state frozen when it was encoded, which is older than the trainer's by up to one
publish interval. A caller that knows fresher state may pass it (`predict_proba(X, state=...)`
or `with_state`). A model encoded with `stream: null` depends on the request's features only.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from typing import Any

import lightgbm as lgb
import numpy as np

FORMAT = "continuo-lgbm/1"
_LOGIT_CLIP = 30.0


class ModelFormatError(ValueError):
    """The bytes are not a model this codec understands."""


def encode(
    *,
    n_features: int,
    members: Sequence[tuple[float, str | lgb.Booster]],
    bias: float = 0.0,
    feature_names: Sequence[str] | None = None,
    stream: Mapping[str, Any] | None = None,
    clip: float | None = None,
) -> bytes:
    """Encode a weighted blend of LightGBM boosters (or their model strings) as bytes."""
    if feature_names is not None and len(feature_names) != n_features:
        raise ValueError("feature_names must name every feature")
    doc = {
        "format": FORMAT,
        "n_features": int(n_features),
        "feature_names": list(feature_names) if feature_names is not None else None,
        "members": [
            {"weight": float(w), "model": m if isinstance(m, str) else m.model_to_string()}
            for w, m in members
        ],
        "bias": float(bias),
        "clip": None if clip is None else float(clip),
        "stream": None if stream is None else _stream_doc(stream),
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _stream_doc(stream: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "inputs": list(stream.get("inputs", ())),
        "linear": {k: float(v) for k, v in stream.get("linear", {}).items()},
        "state": {k: float(v) for k, v in stream.get("state", {}).items()},
    }


def decode(data: bytes) -> Predictor:
    """Decode model bytes; the same bytes give the same (cached, read-only) predictor."""
    return _decode_cached(bytes(data))


@functools.lru_cache(maxsize=32)
def _decode_cached(data: bytes) -> Predictor:
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFormatError(f"not a Continuo model: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ModelFormatError(f"expected format {FORMAT!r}")
    boosters = tuple(lgb.Booster(model_str=m["model"]) for m in doc["members"])
    return Predictor(doc, boosters)


class Predictor:
    """A decoded model. Column order of X: the task's model features, as encoded."""

    def __init__(
        self,
        doc: Mapping[str, Any],
        boosters: Sequence[lgb.Booster],
        state: Mapping[str, float] | None = None,
    ) -> None:
        self._doc = doc
        self._boosters = tuple(boosters)
        self._weights = np.array([m["weight"] for m in doc["members"]], dtype=float)
        self.n_features = int(doc["n_features"])
        stream = doc.get("stream") or {"inputs": [], "linear": {}, "state": {}}
        self._inputs: list[str] = list(stream["inputs"])
        self._linear: dict[str, float] = dict(stream["linear"])
        self.state: dict[str, float] = dict(state if state is not None else stream["state"])
        self._bias = float(doc["bias"])
        self._clip = doc.get("clip")
        names = doc.get("feature_names") or [f"f{i}" for i in range(self.n_features)]
        extra = self._inputs + [k for k in self._linear if k not in self._inputs]
        # Columns of `contributions`: request features, stream features, then the bias.
        self.feature_names: list[str] = list(names) + [f"stream:{k}" for k in extra]

    def with_state(self, state: Mapping[str, float]) -> Predictor:
        """The same model with fresher stream state (e.g. the trainer's latest last label)."""
        return Predictor(self._doc, self._boosters, {**self.state, **state})

    def _model_inputs(self, X: np.ndarray, state: Mapping[str, float]) -> np.ndarray:
        X = np.asarray(X, dtype=float).reshape(-1, self.n_features)
        if not self._inputs:
            return X
        cols = np.array([state[k] for k in self._inputs], dtype=float)
        return np.hstack([X, np.broadcast_to(cols, (len(X), len(cols)))])

    def _linear_term(self, state: Mapping[str, float]) -> float:
        return float(sum(w * state[k] for k, w in self._linear.items()))

    def logits(self, X: np.ndarray, state: Mapping[str, float] | None = None) -> np.ndarray:
        """Log-odds of class 1 for each row."""
        state = self.state if state is None else {**self.state, **state}
        Xa = self._model_inputs(X, state)
        out = np.full(len(Xa), self._bias + self._linear_term(state))
        for w, booster in zip(self._weights, self._boosters, strict=True):
            raw = booster.predict(Xa, raw_score=True, num_threads=1)
            if self._clip is not None:
                raw = np.clip(raw, -self._clip, self._clip)
            out += w * raw
        return np.clip(out, -_LOGIT_CLIP, _LOGIT_CLIP)

    def predict_proba(self, X: np.ndarray, state: Mapping[str, float] | None = None) -> np.ndarray:
        """P(class 1) for each row of X, shape (n,)."""
        return 1.0 / (1.0 + np.exp(-self.logits(X, state)))

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """Per-feature contributions to the log-odds, shape (n, len(feature_names) + 1).

        LightGBM's TreeSHAP (`pred_contrib=True`) of each member, weighted by the member's weight;
        stream features' linear terms added to their own columns; the last column is the bias
        (members' expected values plus the blend's bias). Rows sum to `logits(X)` unless a member
        score was clipped (|raw| > clip, rare) or the logit hit +-30. Without stream features the
        shape is (n, n_features + 1).
        """
        Xa = self._model_inputs(X, self.state)
        n_cols = len(self.feature_names)
        out = np.zeros((len(Xa), n_cols + 1))
        for w, booster in zip(self._weights, self._boosters, strict=True):
            contrib = np.asarray(booster.predict(Xa, pred_contrib=True, num_threads=1))
            out[:, : Xa.shape[1]] += w * contrib[:, :-1]
            out[:, -1] += w * contrib[:, -1]
        for k, w in self._linear.items():
            out[:, self.feature_names.index(f"stream:{k}")] += w * self.state[k]
        out[:, -1] += self._bias
        return out

    def feature_importance(self) -> dict[str, float]:
        """Total split gain per feature, summed over members weighted by |weight|."""
        total = np.zeros(len(self.feature_names))
        for w, booster in zip(self._weights, self._boosters, strict=True):
            gain = booster.feature_importance(importance_type="gain")
            total[: len(gain)] += abs(w) * gain
        return {name: float(v) for name, v in zip(self.feature_names, total, strict=True)}
