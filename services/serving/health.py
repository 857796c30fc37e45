"""How each arm answered on this replica, reported for the canary's guardrails (`ArmsServed`).

A request is counted once for each arm that answered some of its rows, with the request's latency
in serving (decoded to answer built) and whether the arm failed (a canary that fails has its rows
answered by the champion); requests are counted only while the task runs a canary, the one
thing that reads them. Every `interval` seconds the counts of each task that runs a canary are
appended as one `ArmsServed` event and reset: governance adds every replica's reports since the
canary started (counts of a canary stopped meanwhile are dropped). A report that cannot be
stored is kept and added to the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections import defaultdict
from collections.abc import Callable, Iterable

import structlog

from shared.arm_health import ArmHealth
from shared.events.envelope import Producer, new_event
from shared.events.types import ArmsServed, governance_stream
from shared.store.port import EventStore

log = structlog.get_logger(__name__)

Arm = tuple[str, int]  # (role, model version)


class ArmsHealth:
    def __init__(
        self,
        store: EventStore,
        producer: Producer,
        canary_running: Callable[[str], bool],
        *,
        interval: float = 5.0,
    ) -> None:
        self._store = store
        self._producer = producer
        self._canary_running = canary_running
        self._interval = interval
        self._counts: defaultdict[str, dict[Arm, ArmHealth]] = defaultdict(dict)
        self._since = asyncio.get_running_loop().time()
        self._task: asyncio.Task[None] | None = None
        self.replica = f"{socket.gethostname()}:{os.getpid()}"
        self.reported = 0

    def observe(
        self, task: str, arms: Iterable[Arm], ms: float, failed: Iterable[Arm] = ()
    ) -> None:
        """One request: each arm that answered (or failed) rows of it, and its latency."""
        counts = self._counts[task]
        broken = set(failed)
        for arm in {*arms, *broken}:
            health = counts.get(arm)
            if health is None:
                health = counts[arm] = ArmHealth()
            health.observe(ms, failed=arm in broken)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="serving:arms-health")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.report()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.report()

    async def report(self) -> None:
        """Append one `ArmsServed` per task that runs a canary and answered since the last."""
        now = asyncio.get_running_loop().time()
        seconds, self._since = now - self._since, now
        taken, self._counts = self._counts, defaultdict(dict)
        for task, arms in taken.items():
            if not arms or not self._canary_running(task):
                continue
            payload = ArmsServed(
                task=task,
                replica=self.replica,
                seconds=round(seconds, 3),
                arms=[
                    {"role": role, "model_version": version, **health.as_dict()}
                    for (role, version), health in sorted(arms.items())
                ],
            )
            event = new_event(payload, stream_id=governance_stream(task), producer=self._producer)
            try:
                await self._store.append([event])
                self.reported += 1
            except Exception as exc:  # noqa: BLE001 - kept for the next report
                log.warning("serving.arms_health_not_recorded", task=task, error=str(exc))
                mine = self._counts[task]
                for arm, health in arms.items():
                    mine.setdefault(arm, ArmHealth()).add(health)
