"""Chaos, the broker's part: the broker dies while the trainer is behind and comes back empty.

The four services run as processes on SQLite and the embedded broker. The trainer is paused
(SIGSTOP) while 1,000 rows are served and labelled, so their events are on the broker and nowhere
else downstream; then the broker is stopped and started again on the same address, with nothing in
it, and the trainer resumes. Nobody runs `continuo replay`. Every label stored must be learned,
exactly once; serving must answer every request before and after.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

from continuo.caller import stream_through_serving, wait_until_learned
from continuo.demo import FEATURES, find_elec, read_rows
from continuo.simulate import Timing
from continuo.stack import Stack
from shared.store.sql import open_event_store

PARTS = (1000, 1000, 1000)  # before, while the trainer is paused, after the broker came back


async def test_a_broker_lost_while_the_trainer_was_behind_loses_no_label_and_learns_none_twice(
    tmp_path: Path,
):
    rows = read_rows(find_elec(), limit=sum(PARTS))
    features = [{f: r[f] for f in FEATURES} for r in rows]
    labels = [r["class"] for r in rows]
    store_url = f"sqlite+aiosqlite:///{tmp_path / 'events.db'}"
    stack = Stack(tmp_path, store_url=store_url)
    await stack.start()
    urls = {name: stack.url(name) for name in ("serving", "ingest")}
    trainer = stack.processes["trainer"].pid
    unanswered = 0

    async def stream(start: int, end: int) -> None:
        nonlocal unanswered
        served = await stream_through_serving(
            urls, "elec", features[start:end], labels[start:end], Timing(20, 1), progress=False
        )
        unanswered += served.unanswered if start else 0  # the first rows precede any model

    try:
        await stream(0, PARTS[0])
        await wait_until_learned(stack.url("trainer"), "elec", PARTS[0], timeout=60)
        os.kill(trainer, signal.SIGSTOP)
        try:
            await stream(PARTS[0], PARTS[0] + PARTS[1])
            await asyncio.sleep(1.0)  # the relays publish them: on the broker, not yet learned
            await stack.restart_broker()
        finally:
            os.kill(trainer, signal.SIGCONT)
        back = time.monotonic()
        await stream(PARTS[0] + PARTS[1], sum(PARTS))
        status = await wait_until_learned(stack.url("trainer"), "elec", sum(PARTS), timeout=120)
        recovered = time.monotonic() - back
    finally:
        stack.stop()

    store = open_event_store(store_url)
    stored = await store.read_all(limit=100_000, types=["LabelRecorded"])
    await store.close()
    assert len(stored) == sum(PARTS)  # every label posted was stored once
    assert status["learned"] == len(stored)  # ...and learned once: none lost, none twice
    assert unanswered == 0  # serving answered every request once the first model was out
    logs = "".join(p.read_text() for p in (tmp_path / "logs").glob("*.log"))
    assert logs.count('"relay.broker_lost"') >= 4  # each service's relay refilled the broker
    print(f"all {len(stored)} labels learned {recovered:.1f} s after the broker came back")
