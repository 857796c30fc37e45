"""The chaos suite, short variant (bench/chaos.py runs the long one): a labelled stream through
the running system while each service in turn is killed with SIGKILL and restarted, and the
broker is lost; elec on the SQLite store and on PostgreSQL, a multiclass and a regression task
on SQLite. See continuo/chaos.py for what is checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from continuo.chaos import FAULTS, ChaosResult, ChaosStream, run_chaos
from tests.kinds import DEMAND, TRIAGE, demand_stream, triage_stream

ROWS = 4000


@pytest.mark.kafka
async def test_every_fault_in_turn_loses_nothing_learns_nothing_twice_and_changes_no_model(
    store_url: str, tmp_path: Path
):
    result = await run_chaos(tmp_path, store_url, ROWS, progress=print)
    _nothing_lost_nothing_learned_twice(result)


@pytest.mark.kafka
@pytest.mark.parametrize("kind", ["multiclass", "regression"])
async def test_a_multiclass_or_regression_task_survives_every_fault_as_well(
    kind: str, sqlite_url: str, tmp_path: Path
):
    spec, make = {"multiclass": (TRIAGE, triage_stream), "regression": (DEMAND, demand_stream)}[
        kind
    ]
    features, labels, entities = make(ROWS)
    stream = ChaosStream(spec.name, features, labels, entities, spec)
    # At 150 rows/s the trainer's restart (about 11 s) leaves stream for the faults after it.
    result = await run_chaos(tmp_path, sqlite_url, ROWS, rate=150, progress=print, stream=stream)
    _nothing_lost_nothing_learned_twice(result)


def _nothing_lost_nothing_learned_twice(result: ChaosResult) -> None:
    for fault in result.faults:
        print(
            f"{fault.name}: ready in {fault.ready:.1f} s, every earlier label learned in "
            f"{fault.caught_up:.1f} s"
            + (f" (snapshot at {fault.restored_from})" if fault.restored_from else "")
        )
    assert result.problems == []
    assert [f.name.split("-")[0] for f in result.faults] == list(FAULTS)
    assert result.answered == ROWS and result.labels == ROWS  # the caller got every answer
    assert result.stored_labels == result.learned == ROWS
    assert result.models >= 5 and result.models_equal
    trainer = next(f for f in result.faults if f.name == "trainer")
    assert trainer.restored_from  # it restarted from a snapshot, not from the start
