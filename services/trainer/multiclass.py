"""A multiclass target, learned one class against the rest.

Each class has its own `OnlineLearner` (its members, blends, race, drift detection and search)
learning whether a row is of that class; the answer is each class's P(class) divided by their
sum. One-vs-rest keeps every part of the binary learner as it is, bit for bit, and lets each
class follow its own drift (a class that appears late, a boundary that moves for one class);
its cost is one binary learner per class (LED's 10 classes: about a tenth of the binary rows/s).

The model file (`shared.model_codec`, format `continuo-ovr/1`) holds each class's binary model as
it would be published alone; `shared.online_models.LiveModel` moves each on with the labels, so a
published multiclass model keeps learning as a binary one does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from services.trainer.drift import Drift
from services.trainer.learner import OnlineLearner
from services.trainer.members import SharedWindows
from services.trainer.metrics import MulticlassMetrics
from services.trainer.racing import ConfigDrop, ConfigSwitch
from shared import model_codec
from shared.tasks import TaskSpec, categorical_indices


@dataclass(frozen=True)
class MulticlassReport:
    """What one `learn` call did; `proba`: the class probabilities each row was scored on.
    Every class's drifts, race switches and search drops, by class in order, each named by its
    class (`class_fact`), so two classes' facts at the same row are two facts."""

    n_learned: int
    model_changed: bool
    drifts: list[Drift] = field(default_factory=list)
    proba: np.ndarray | None = None
    switches: list[ConfigSwitch] = field(default_factory=list)
    dropped: list[ConfigDrop] = field(default_factory=list)


def class_fact(k: int, fact: Drift | ConfigSwitch | ConfigDrop) -> Any:
    """A class's learner's fact as the multiclass learner reports it: its detector or its
    configurations prefixed with the class index (`class-2/adwin`), the class in the evidence."""
    evidence = {**fact.evidence, "class": k}
    if isinstance(fact, Drift):
        return replace(fact, detector=f"class-{k}/{fact.detector}", evidence=evidence)
    if isinstance(fact, ConfigSwitch):
        return replace(
            fact,
            from_config=f"class-{k}/{fact.from_config}",
            to_config=f"class-{k}/{fact.to_config}",
            evidence=evidence,
        )
    return replace(fact, config=f"class-{k}/{fact.config}", evidence=evidence)


def normalised(per_class: np.ndarray) -> np.ndarray:
    """Rows of one-vs-rest probabilities (n, classes) made to sum to one."""
    per_class = np.asarray(per_class, dtype=float)
    return per_class / per_class.sum(axis=1, keepdims=True)


def learner_for(spec: TaskSpec) -> OnlineLearner | OneVsRest:
    """The learner of a task's kind: one binary learner per class for a multiclass target."""
    if spec.target.kind == "multiclass":
        return OneVsRest.from_spec(spec)
    return OnlineLearner.from_spec(spec)


class OneVsRest:
    """A multiclass learner of `n_classes` classes (labels 0..n_classes-1): one `OnlineLearner`
    per class, answers normalised. The same interface as `OnlineLearner` where it applies;
    probabilities are (rows, classes)."""

    @classmethod
    def from_spec(cls, spec: TaskSpec) -> OneVsRest:
        return cls(
            len(spec.input_names),
            len(spec.target.classes),
            seed=spec.learner.seed,
            params=spec.learner.params,
            categorical=categorical_indices(spec),
            feature_names=list(spec.input_names),
        )

    def __init__(
        self,
        n_features: int,
        n_classes: int,
        *,
        seed: int = 7,
        params: Mapping[str, Any] | None = None,
        categorical: Sequence[int] = (),
        feature_names: Sequence[str] | None = None,
    ) -> None:
        if n_classes < 3:
            raise ValueError("a multiclass learner needs at least 3 classes")
        self.n_features = n_features
        self.n_classes = n_classes
        self.classes = [
            OnlineLearner(
                n_features,
                seed=seed,
                params=params,
                categorical=categorical,
                feature_names=feature_names,
            )
            for _ in range(n_classes)
        ]
        # The classes learn the same rows: each tick's windows are binned once for them all.
        self._windows = SharedWindows()
        for learner in self.classes:
            learner.shared_windows = self._windows
        window = int(self.classes[0].settings["recent_window"])
        self._metrics = MulticlassMetrics(n_classes, window)

    @property
    def n_updates(self) -> int:
        return sum(c.n_updates for c in self.classes)

    @property
    def n_drifts(self) -> int:
        return sum(c.n_drifts for c in self.classes)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """P(each class) for each row, (rows, classes), as of now."""
        return normalised(np.column_stack([c.predict_proba(X) for c in self.classes]))

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.predict_proba(X)

    def predict_on_arrival(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The class probabilities (rows, classes) and what `learn` needs back to judge each
        class's race on what it answered now: (rows, classes, 1 + configurations), each
        class's own P(class) first, then each of its configurations'."""
        parts = [c.predict_on_arrival(X) for c in self.classes]
        own = np.column_stack([p[0] for p in parts])
        configs = np.stack([np.column_stack([p[0], p[1]]) for p in parts], axis=1)
        return normalised(own), configs

    def learn(
        self,
        X: np.ndarray,
        y: np.ndarray,
        proba: np.ndarray,
        configs: np.ndarray | None = None,
    ) -> MulticlassReport:
        """Score `proba` (the class probabilities given before the labels were known), then
        learn the rows; `configs`: what `predict_on_arrival` gave with them (None: each class
        is scored on its column of `proba`, its race on its predictions as it learns)."""
        y = self._labels(y)
        proba = np.asarray(proba, dtype=float).reshape(len(y), self.n_classes)
        reports = []
        for k, learner in enumerate(self.classes):
            own = proba[:, k] if configs is None else configs[:, k, 0]
            judged = None if configs is None else configs[:, k, 1:]
            reports.append(learner.learn(X, (y == k).astype(np.int64), own, judged))
        self._windows.clear()
        self._metrics.update(y, proba)
        return self._report(len(y), reports, proba)

    def test_then_train(self, X: np.ndarray, y: np.ndarray) -> MulticlassReport:
        """Prequential: each row predicted as of the rows before it, then learned."""
        y = self._labels(y)
        reports = [
            c.test_then_train(X, (y == k).astype(np.int64)) for k, c in enumerate(self.classes)
        ]
        self._windows.clear()
        proba = normalised(np.column_stack([np.asarray(r.proba) for r in reports]))
        self._metrics.update(y, proba)
        return self._report(len(y), reports, proba)

    def _labels(self, y: np.ndarray) -> np.ndarray:
        given = np.asarray(y).reshape(-1)
        whole = given.astype(np.int64)
        if len(given) and (
            not np.array_equal(whole, given) or whole.min() < 0 or whole.max() >= self.n_classes
        ):
            raise ValueError(f"labels must be class indices 0..{self.n_classes - 1}")
        return whole

    @staticmethod
    def _report(n: int, reports: list[Any], proba: np.ndarray) -> MulticlassReport:
        def tagged(name: str) -> list[Any]:
            return [class_fact(k, f) for k, r in enumerate(reports) for f in getattr(r, name)]

        return MulticlassReport(
            n,
            any(r.model_changed for r in reports),
            tagged("drifts"),
            proba,
            tagged("switches"),
            tagged("dropped"),
        )

    @property
    def metrics(self) -> dict[str, float]:
        out = self._metrics.as_dict()
        out["n_updates"] = float(self.n_updates)
        out["n_drifts"] = float(self.n_drifts)
        return out

    def champion_config(self) -> str:
        """Each class's race champion, in class order, comma-separated (what `choose` takes
        back; about 30 characters a class at most)."""
        return ",".join(c.champion_config() for c in self.classes)

    def entrant(self) -> tuple[str, dict[str, Any]] | None:
        """The runner-up model: each class's race runner-up (its champion where no other
        configuration differs from it), named in `champion_config`'s form so that choosing it
        back switches each class; the paired evidence summed over the classes (`window`: the
        longest) and each class's under `classes`. None where no class has a runner-up."""
        parts: list[str] = []
        found: dict[str, dict[str, Any]] = {}
        for k, learner in enumerate(self.classes):
            runner_up = learner.entrant()
            if runner_up is None:
                parts.append(learner.champion_config())
                continue
            name, evidence = runner_up
            parts.append(name)
            found[str(k)] = {"config": name, **evidence}
        config = ",".join(parts)
        if not found:
            return None
        return config, {
            "window": max(int(e["window"]) for e in found.values()),
            "wins": sum(int(e["wins"]) for e in found.values()),
            "losses": sum(int(e["losses"]) for e in found.values()),
            "classes": found,
        }

    def choose(self, config: str, evidence: Mapping[str, Any]) -> list[ConfigSwitch]:
        """Make each class's race run its part of `config` (`champion_config`'s form: governance
        rolled back to a model of these configurations); the switches made, named by class.
        Nothing for a config of another form (before 2026-11-30 a task of many classes was
        named by how many classes ran each configuration, which cannot be chosen back)."""
        parts = config.split(",")
        if len(parts) != self.n_classes:
            return []
        switches = [c.choose(part, evidence) for c, part in zip(self.classes, parts, strict=True)]
        return [class_fact(k, s) for k, s in enumerate(switches) if s is not None]

    def model_bytes(
        self,
        learned_through: int = 0,
        config: str | None = None,
        residuals: Sequence[float] | None = None,
    ) -> bytes:
        """Every class's binary model, encoded together: its race's champion, or, with
        `config` (`champion_config`'s form, as `entrant` names one), each class's part."""
        if residuals is not None:
            raise ValueError("a multiclass model keeps no residuals (they are a regression's)")
        parts = [None] * self.n_classes if config is None else config.split(",")
        if len(parts) != self.n_classes:
            raise ValueError(f"a config of {self.n_classes} classes, one per class: {config!r}")
        return model_codec.encode_one_vs_rest(
            [
                c.model_bytes(learned_through, part)
                for c, part in zip(self.classes, parts, strict=True)
            ]
        )
