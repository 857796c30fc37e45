"""The chaos suite, short variant (bench/chaos.py runs the long one): a labelled stream through
the running system while each service in turn is killed with SIGKILL and restarted, and the
broker is lost; on the SQLite store and on PostgreSQL. See continuo/chaos.py for what is checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from continuo.chaos import FAULTS, run_chaos

ROWS = 4000


@pytest.mark.kafka
async def test_every_fault_in_turn_loses_nothing_learns_nothing_twice_and_changes_no_model(
    store_url: str, tmp_path: Path
):
    result = await run_chaos(tmp_path, store_url, ROWS, progress=print)
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
