"""Chaos: labelled rows stream through the running system while, in turn, each service is killed
with SIGKILL and restarted and the embedded broker is lost (it comes back empty); then every
promise is checked against the store. The stream is elec (a binary task) unless another task's
rows are given (`ChaosStream`: a regression or multiclass task, say).

The four services run as processes (two serving replicas behind the caller, which fails over from
one to the other as any HTTP load balancer does). The caller asks serving for each request's
predictions (recording the rows: log and wait) and posts each request's labels to ingest by
prediction id one request later, retrying what fails (label ids are derived from the row, so a
retry is idempotent). The faults fire one after another while the stream runs, each once the
previous one has recovered; a fault's recovery time is measured twice: until the faulted part
answers again (`ready`), and until the trainer has learned every label accepted before the fault
(`caught_up`).

Checked at the end (`ChaosResult.problems` lists any that failed):
- every prediction the caller was answered is stored, as its observation, exactly once; every label
  ingest accepted is stored exactly once;
- the trainer learned each stored label exactly once (its count equals the stored labels);
- the trainer's models equal, byte for byte, those a fault-free trainer makes of the same stored
  events in process (`services.trainer.service.replay_models`);
- serving kept answering: no request failed on every replica.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from continuo.caller import trainer_status
from continuo.demo import FEATURES, find_elec, read_rows
from continuo.stack import Stack, write_task_specs
from services.trainer.service import replay_models
from shared.artifacts import sha256
from shared.events.types import ModelTrained, data_stream, model_stream
from shared.store.sql import open_event_store
from shared.tasks import TaskSpec

BATCH = 20  # rows per predict request; each request's labels go after the next one
FAULTS = ("ingest", "trainer", "serving", "governance", "broker")
# Small enough that the trainer restarts from a snapshot in a short run, not from the start.
SNAPSHOT_EVERY = 2000


@dataclass(frozen=True)
class ChaosStream:
    """A task's labelled rows for the chaos run: each row's features, label and entity; `spec`
    registers the task (None: elec, which every stack registers)."""

    task: str
    features: list[dict[str, Any]]
    labels: list[Any]
    entities: list[str]
    spec: TaskSpec | None = None

    def __post_init__(self) -> None:
        if not len(self.features) == len(self.labels) == len(self.entities):
            raise ValueError(
                f"a chaos stream needs one features, label and entity per row: "
                f"{len(self.features)}, {len(self.labels)}, {len(self.entities)}"
            )


def elec_stream(rows: int) -> ChaosStream:
    """The first `rows` rows of elec, one entity (New South Wales)."""
    data = read_rows(find_elec(), limit=rows)
    return ChaosStream(
        "elec",
        [{f: r[f] for f in FEATURES} for r in data],
        [r["class"] for r in data],
        ["nsw"] * len(data),
    )


@dataclass
class Fault:
    name: str  # a service process name, or "broker"
    at_row: int  # planned; once fired, the row the stream had reached
    labels_before: int = 0  # labels accepted when it fired
    ready: float = 0.0  # seconds until the faulted part answered again
    caught_up: float = 0.0  # seconds until every label accepted before it was learned
    restored_from: int | None = None  # for the trainer: the snapshot it restarted from


@dataclass
class ChaosResult:
    rows: int
    store: str
    faults: list[Fault]
    seconds: float
    answered: int  # prediction ids the caller got
    labels: int  # labels ingest accepted
    failovers: int  # predict attempts that failed on one replica and were answered by another
    unanswered_requests: int  # predict requests that failed on every replica
    label_retries: int  # label posts retried (ingest or the store away)
    stored_observations: int
    stored_labels: int
    lost: int  # observations answered or labels accepted that are not stored exactly once
    unacknowledged: int  # rows stored by a replica killed before it answered (never labelled)
    learned: int
    models: int
    models_equal: bool
    problems: list[str] = field(default_factory=list)


class Caller:
    """A client of the running system that survives its faults: predictions fail over across the
    serving replicas; labels are retried until accepted."""

    def __init__(self, stack: Stack, servings: Sequence[str], task: str) -> None:
        self.stack = stack
        self.task = task
        self.servings = list(servings)
        self.next = 0
        self.prediction_ids: list[uuid.UUID] = []
        self.labelled: list[uuid.UUID] = []  # the prediction ids whose label was accepted
        self.failovers = self.unanswered_requests = self.label_retries = 0
        self.position = 0

    async def predict(
        self, client: httpx.AsyncClient, rows: list[dict[str, Any]], entities: list[str]
    ) -> list[str]:
        body = {
            "records": [
                {"features": r, "entity_id": e} for r, e in zip(rows, entities, strict=True)
            ],
            "record": True,
            "after_position": self.position,
        }
        deadline = time.monotonic() + 60
        failed_everywhere = False
        while True:
            for _ in self.servings:
                name = self.servings[self.next % len(self.servings)]
                self.next += 1
                try:
                    response = await client.post(
                        f"{self.stack.url(name)}/v1/tasks/{self.task}/predict", json=body
                    )
                    if response.status_code == 200:
                        self.unanswered_requests += failed_everywhere
                        ids = [p["prediction_id"] for p in response.json()["predictions"]]
                        self.prediction_ids += [uuid.UUID(i) for i in ids]
                        return ids
                    if response.status_code < 500:
                        raise RuntimeError(
                            f"predict refused: {response.status_code} {response.text}"
                        )
                except httpx.TransportError:
                    pass
                self.failovers += 1
            failed_everywhere = True
            if time.monotonic() > deadline:
                raise RuntimeError("no serving replica answered for 60 s")
            await asyncio.sleep(0.1)

    async def post_labels(self, client: httpx.AsyncClient, labels: list[dict[str, Any]]) -> None:
        deadline = time.monotonic() + 120
        while True:
            try:
                response = await client.post(
                    f"{self.stack.url('ingest')}/v1/tasks/{self.task}/labels", json=labels
                )
                if response.status_code == 202:
                    self.position = max(self.position, *response.json()["positions"])
                    self.labelled += [uuid.UUID(label["prediction_id"]) for label in labels]
                    return
                if response.status_code < 500:
                    raise RuntimeError(f"labels refused: {response.status_code} {response.text}")
            except httpx.TransportError:
                pass
            self.label_retries += 1
            if time.monotonic() > deadline:
                raise RuntimeError("ingest did not accept labels for 120 s")
            await asyncio.sleep(0.1)


async def _learned(stack: Stack, task: str) -> int:
    try:
        return int((await trainer_status(stack.url("trainer"), task)).get("learned", 0))
    except (httpx.HTTPError, ValueError):
        return -1  # the trainer is away


async def _inject(stack: Stack, caller: Caller, fault: Fault) -> None:
    fault.labels_before = len(caller.labelled)
    started = time.monotonic()
    if fault.name == "broker":
        await stack.restart_broker()
    else:
        stack.kill(fault.name, signal.SIGKILL)
        await stack.restart(fault.name)
    fault.ready = time.monotonic() - started
    deadline = started + 180
    while await _learned(stack, caller.task) < fault.labels_before:
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"the trainer did not catch up within 180 s of the {fault.name} fault"
            )
        await asyncio.sleep(0.05)
    fault.caught_up = time.monotonic() - started
    if fault.name == "trainer":
        status = await trainer_status(stack.url("trainer"), caller.task)
        fault.restored_from = int(status.get("restored_from", 0))


async def run_chaos(
    workdir: Path,
    store_url: str,
    rows: int,
    *,
    faults: Sequence[str] = FAULTS,
    rate: float = 300.0,
    progress: Callable[[str], None] | None = None,
    stream: ChaosStream | None = None,
) -> ChaosResult:
    """Stream `rows` rows (of elec, or of `stream`) at about `rate` rows/s through a stack on
    `store_url`, firing each fault in turn (evenly spaced over the stream, each after the
    previous one recovered)."""
    say = progress or (lambda _: None)
    stream = stream or elec_stream(rows)
    rows = min(rows, len(stream.labels))
    env = {"TRAINER_SNAPSHOT_EVERY": str(SNAPSHOT_EVERY)}
    if stream.spec is not None:
        env |= write_task_specs(workdir / "tasks", [stream.spec])
    stack = Stack(workdir, store_url=store_url, env_overrides=env)
    await stack.start()
    task = stream.task
    try:
        second = await stack.add_replica("serving")
        caller = Caller(stack, ["serving", second], task)
        planned = [
            Fault(name if name != "serving" else second, rows * (i + 1) // (len(faults) + 1))
            for i, name in enumerate(faults)
        ]
        started = time.monotonic()
        fired: asyncio.Task[None] | None = None
        done: list[Fault] = []
        waiting: deque[list[dict[str, Any]]] = deque()
        async with httpx.AsyncClient(timeout=30) as client:
            for start in range(0, rows, BATCH):
                if planned and start >= planned[0].at_row and (fired is None or fired.done()):
                    if fired is not None:
                        fired.result()
                    fault = planned.pop(0)
                    fault.at_row = start
                    say(f"  row {start:,}: {fault.name} fault")
                    fired = asyncio.create_task(_inject(stack, caller, fault))
                    done.append(fault)
                chunk = slice(start, min(rows, start + BATCH))
                ids = await caller.predict(client, stream.features[chunk], stream.entities[chunk])
                waiting.append(
                    [
                        {"prediction_id": i, "label": label}
                        for i, label in zip(ids, stream.labels[chunk], strict=True)
                    ]
                )
                if len(waiting) > 1:
                    await caller.post_labels(client, waiting.popleft())
                ahead = chunk.stop / rate - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
            while waiting:
                await caller.post_labels(client, waiting.popleft())
            if fired is not None:
                await fired
            for fault in planned:  # the stream ended first: fire the rest now
                fault.at_row = rows
                say(f"  after the stream: {fault.name} fault")
                await _inject(stack, caller, fault)
                done.append(fault)
            deadline = time.monotonic() + 300
            while True:
                status = await trainer_status(stack.url("trainer"), task)
                if status.get("learned", 0) >= len(caller.labelled) and status.get("settled"):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the trainer learned {status.get('learned')} of {len(caller.labelled)}"
                    )
                await asyncio.sleep(0.2)
        seconds = time.monotonic() - started
    finally:
        stack.stop()
    return await _check(store_url, rows, done, seconds, caller, int(status["learned"]))


async def _check(
    store_url: str, rows: int, faults: list[Fault], seconds: float, caller: Caller, learned: int
) -> ChaosResult:
    task = caller.task
    store = open_event_store(store_url)
    try:
        observations: Counter[uuid.UUID] = Counter()
        labels: Counter[uuid.UUID] = Counter()  # by the observation they label
        after = 0
        while page := await store.read_stream(data_stream(task), after_version=after, limit=5000):
            for event in page:
                if event.type == "ObservationRecorded":
                    observations[event.event_id] += 1
                elif event.type == "LabelRecorded":
                    labels[uuid.UUID(str(event.payload["observation_id"]))] += 1
            after = page[-1].stream_version or after
        stored = [e.data() for e in await store.read_stream(model_stream(task))]
        models = [
            (m.model_version, m.artifact_sha256) for m in stored if isinstance(m, ModelTrained)
        ]
        _, made = await replay_models(store, task)
    finally:
        await store.close()
    replayed = [(c.model_version, sha256(c.model_bytes)) for c in made]
    problems = []
    missing = [i for i in caller.prediction_ids if observations[i] != 1]
    if missing:
        problems.append(f"{len(missing)} answered predictions not stored exactly once")
    unlabelled = [i for i in caller.labelled if labels[i] != 1]
    if unlabelled or sum(labels.values()) != len(caller.labelled):
        problems.append(
            f"labels: {len(caller.labelled)} accepted, {sum(labels.values())} stored, "
            f"{len(unlabelled)} accepted but not stored exactly once"
        )
    if learned != sum(labels.values()):
        problems.append(f"the trainer learned {learned} labels; {sum(labels.values())} are stored")
    if models != replayed:
        problems.append(f"{len(models)} models stored, {len(replayed)} replayed: they differ")
    if caller.unanswered_requests:
        problems.append(f"{caller.unanswered_requests} predict requests failed on every replica")
    return ChaosResult(
        rows=rows,
        store=store_url.split(":", 1)[0],
        faults=faults,
        seconds=seconds,
        answered=len(caller.prediction_ids),
        labels=len(caller.labelled),
        failovers=caller.failovers,
        unanswered_requests=caller.unanswered_requests,
        label_retries=caller.label_retries,
        stored_observations=sum(observations.values()),
        stored_labels=sum(labels.values()),
        lost=len(missing) + len(unlabelled),
        unacknowledged=len(set(observations) - set(caller.prediction_ids)),
        learned=learned,
        models=len(models),
        models_equal=models == replayed,
        problems=problems,
    )
