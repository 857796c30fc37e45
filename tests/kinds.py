"""Synthetic tasks of the kinds that are not binary, with their streams: what the e2e loops and
the chaos suite stream through the running system."""

from __future__ import annotations

import numpy as np

from shared.tasks import TaskSpec

CLASSES = ["routine", "urgent", "critical"]
TRIAGE = TaskSpec.model_validate(
    {
        "name": "triage",
        "features": [{"name": "x1"}, {"name": "x2"}],
        "target": {"name": "level", "kind": "multiclass", "classes": CLASSES},
        "sensitive": [{"name": "region", "type": "category", "categories": ["north", "south"]}],
        # Each site's last outcome: sites lean to one level, which a global model cannot know.
        "online_features": [
            {"name": "site_last", "kind": "last_label", "scope": "entity", "default": -1.0}
        ],
        "serving": {"record": True},
        "learner": {"publish_every": 500},
        "promotion": {"window": 300, "require_audit": True, "audit": {"min_rows": 200}},
    }
)


def triage_stream(n: int, seed: int = 13) -> tuple[list[dict], list[str], list[str]]:
    """30 sites, interleaved; the level is set by x1 + x2 in bands, and each site's cases are
    one band more severe half the time at the sites that lean that way."""
    rng = np.random.default_rng(seed)
    lean = rng.integers(0, 2, 30)
    sites = rng.integers(0, 30, n)
    x = rng.uniform(0.0, 1.0, (n, 2))
    level = np.digitize(x[:, 0] + x[:, 1], [0.8, 1.3])
    level = np.minimum(level + (lean[sites] & (rng.random(n) < 0.5)), 2)
    features = [
        {"x1": float(a), "x2": float(b), "region": "north" if s < 15 else "south"}
        for (a, b), s in zip(x, sites, strict=True)
    ]
    return features, [CLASSES[k] for k in level], [f"site-{s}" for s in sites]


DEMAND = TaskSpec.model_validate(
    {
        "name": "demand",
        "features": [{"name": "x1"}, {"name": "x2"}],
        "target": {"name": "units", "kind": "regression"},
        "sensitive": [{"name": "region", "type": "category", "categories": ["north", "south"]}],
        # Each store's recent demand: what a global model cannot know.
        "online_features": [
            {"name": "store_level", "kind": "label_mean", "window": 5, "default": 50.0}
        ],
        "serving": {"record": True},
        "learner": {"publish_every": 500},
        "promotion": {"window": 300, "require_audit": True, "audit": {"min_rows": 200}},
    }
)


def demand_stream(n: int, seed: int = 11) -> tuple[list[dict], list[float], list[str]]:
    """20 stores, interleaved, each with its own level of demand; the same two drivers."""
    rng = np.random.default_rng(seed)
    levels = rng.uniform(20.0, 80.0, 20)
    stores = rng.integers(0, 20, n)
    x = rng.uniform(0.0, 1.0, (n, 2))
    units = levels[stores] + 10.0 * x[:, 0] - 5.0 * x[:, 1] + rng.normal(0.0, 1.0, n)
    features = [
        {"x1": float(a), "x2": float(b), "region": "north" if s < 10 else "south"}
        for (a, b), s in zip(x, stores, strict=True)
    ]
    return features, units.round(3).tolist(), [f"store-{s}" for s in stores]
