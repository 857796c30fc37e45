"""Trainer snapshots: a core pickled mid-stream and restored makes what a core that never stopped
makes (the same model ids and bytes, the same facts), with the real learner on real data."""

from __future__ import annotations

import pickle
import uuid

from continuo.demo import FEATURES, find_elec, read_rows
from services.trainer.core import Candidate, TaskTraining
from services.trainer.learner import OnlineLearner
from services.trainer.snapshots import build_id
from shared.features import DataEvent
from shared.settings import REPO_ROOT
from shared.tasks import load_spec

SPEC = load_spec(REPO_ROOT / "tasks" / "elec.yaml")
ROWS = 6000
BATCH = 20  # rows per request; each request's labels come one request late


def _events() -> list[DataEvent]:
    rows = read_rows(find_elec(), limit=ROWS)
    events: list[DataEvent] = []
    observed: list[uuid.UUID] = []  # row i's observation id

    def add(**fields) -> uuid.UUID:
        version = len(events) + 1
        events.append(DataEvent(version, version, uuid.UUID(int=version), "nsw", **fields))
        return events[-1].event_id

    for start in range(0, ROWS, BATCH):
        for row in rows[start : start + BATCH]:
            features = {f: row[f] for f in FEATURES}
            observed.append(add(label=None, features=features, pipeline_version=SPEC.version))
        for i in range(max(0, start - BATCH), start):
            add(label=rows[i]["class"], observation_id=observed[i])
    return events


def _core() -> TaskTraining:
    return TaskTraining(
        SPEC, OnlineLearner.from_spec(SPEC), challengers=lambda: OnlineLearner.from_spec(SPEC)
    )


def _run(events: list[DataEvent], restore_at: set[int]) -> tuple[list, TaskTraining]:
    core, made = _core(), []
    for start in range(0, len(events), 333):  # batches that end anywhere, not at publish points
        if start in restore_at:
            core = pickle.loads(pickle.dumps(core, pickle.HIGHEST_PROTOCOL))
            core.attach(lambda: OnlineLearner.from_spec(SPEC), 200_000)
        out = core.apply(events[start : start + 333])
        made += out.candidates  # each compared whole: id, bytes, lineage, metrics
        made += [(event_id, fact.model_dump()) for event_id, fact in out.facts]
    return made, core


def test_a_core_restored_mid_stream_makes_the_same_models_and_facts_byte_for_byte():
    events = _events()
    straight, a = _run(events, set())
    restored, b = _run(events, {333 * 5, 333 * 17, 333 * 26})
    models = [m for m in straight if isinstance(m, Candidate)]
    assert len(models) >= 10  # several publish points on each side of every restore
    assert restored == straight
    assert b.learner.model_bytes() == a.learner.model_bytes()
    assert (b.version, b.n_learned_total, b.model_version) == (
        a.version,
        a.n_learned_total,
        a.model_version,
    )


def test_a_snapshot_leaves_out_the_live_scorers_and_the_challenger_factory():
    core = _core()
    core.apply(_events()[:500])
    state = core.__getstate__()
    assert state["_champion"] is None and state["_challengers"] is None
    assert not state["arms"].active and not state["_window"]
    assert core._challengers is not None  # the core itself is untouched


def test_the_build_id_is_stable_within_a_build():
    assert build_id() == build_id() and len(build_id()) == 16
