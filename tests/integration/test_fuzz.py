"""Property-based fuzzing of every service's HTTP API, generated from its own OpenAPI document.

Each FastAPI service runs in process on a SQLite store and the embedded broker. Schemathesis loads
/openapi.json from the running app (its ASGI client starts the app's lifespan and serves every
request on that lifespan's event loop) and Hypothesis generates requests for every operation,
valid and invalid ones, from a fixed seed, a bounded number per operation. An elec task is
registered with labelled rows, two trained models (one promoted) and a served prediction, and
each path or query parameter and body field named like one of them (task, version,
model_version, prediction_id, features, label, ...) is, independently, either generated or one
that exists: requests get past the 404s and 422s into the code behind them. The trainer is a
Faust worker, not an ASGI app: it runs as a process, and is fuzzed over HTTP.

Two families of checks, in two tests:
- no generated request is answered with a server error (5xx): a hard assertion, and the failing
  request of each operation is shrunk to a minimal one;
- every response conforms to the document (status code, content type, body schema, headers).

A failure is reported once per (check, operation, status, kind), with the smallest request seen
to cause it: method, path and query as sent, and the body's exact bytes. Governance requests also
carry an admin key (`Authorization: Bearer <key>`), left out of the report. `-s` prints each
service's report, with how often each operation answered each status.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import subprocess
import sys
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import lightgbm as lgb
import numpy as np
import pytest
import schemathesis
import structlog
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core import NotSet
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.python import asgi

from services.governance.app import create_app as governance_app
from services.governance.settings import GovernanceSettings
from services.ingest.app import create_app as ingest_app
from services.ingest.settings import IngestSettings
from services.serving.app import create_app as serving_app
from services.serving.settings import ServingSettings
from shared import model_codec
from shared.artifacts import FileArtifactStore
from shared.broker import free_port
from shared.bus import KafkaPublisher, ensure_topics
from shared.deployments import KILL_SWITCH
from shared.events.envelope import Envelope, Payload, new_event
from shared.events.types import (
    ModelPromoted,
    ModelTrained,
    ObservationRecorded,
    PredictionServed,
    data_stream,
    deployment_stream,
    model_stream,
    prediction_stream,
)
from shared.registry import register_tasks
from shared.relay import Relay
from shared.settings import REPO_ROOT
from shared.store.sql import open_event_store
from shared.tasks import TaskSpec, load_spec
from tests.support import TEST_PRODUCER

SEED = 20_240_611
# Generated requests per operation and generation mode (valid inputs, then invalid ones).
EXAMPLES = 25
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
# Operations whose every call is costly get fewer: the COMPAS audit recomputes a report over the
# whole file (~0.7 s) and takes nothing but `format`.
FEWER = {"GET /v1/compas/audit": 4}
SERVICES = ("ingest", "serving", "governance", "trainer")

SERVER_ERRORS = [not_a_server_error]
# 5xx answers that are what the operation is for: a readiness probe says "not ready" with a 503.
BY_DESIGN = {("GET /readyz", 503)}
# Checked in a test of their own.
CONFORMANCE = [
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]

ELEC = load_spec(REPO_ROOT / "tasks" / "elec.yaml")
ROWS = 60
FEATURES = {
    "period": 0.5,
    "nswprice": 0.06,
    "nswdemand": 0.4,
    "vicprice": 0.003,
    "vicdemand": 0.42,
    "transfer": 0.41,
}


# -- the services, running --------------------------------------------------------------------


@dataclass
class Target:
    """A service's app (or, for one that is not ASGI, the URL of its running process) and what
    generated requests need to get past its 401s and 404s."""

    app: FastAPI | None
    headers: dict[str, str] = field(default_factory=dict)
    # Name (of a path or query parameter, or a key anywhere in a body) -> values that exist.
    known: dict[str, list[Any]] = field(default_factory=dict)
    url: str | None = None
    process: subprocess.Popen[bytes] | None = None


def elec_model(flip: bool = False) -> bytes:
    """A tiny LightGBM on elec's model and online features (its input_names), in serving's codec."""
    rng = np.random.default_rng(7)
    X = rng.normal(size=(300, len(ELEC.input_names)))
    y = (X[:, 1] > 0).astype(int)
    booster = lgb.train(
        {"objective": "binary", "num_leaves": 4, "min_data_in_leaf": 5, "verbose": -1},
        lgb.Dataset(X, 1 - y if flip else y),
        num_boost_round=4,
    )
    return model_codec.encode(
        n_features=X.shape[1],
        members=[(1.0, booster.model_to_string())],
        bias=0.0,
        feature_names=list(ELEC.input_names),
    )


def event(payload: Payload, stream: str) -> Envelope:
    return new_event(payload, stream_id=stream, producer=TEST_PRODUCER)


def elec_task() -> TaskSpec:
    """elec's spec under a name of its own: serving and governance read the session's broker,
    where other tests' elec events would be theirs too."""
    shipped = load_spec(REPO_ROOT / "tasks" / "elec.yaml")
    return shipped.model_copy(update={"name": f"elec{uuid.uuid4().hex[:8]}"})


def history(spec: TaskSpec, artifacts: Path) -> tuple[list[Envelope], dict[str, list[Any]]]:
    """What the other services would have stored for an elec task: labelled rows, two trained
    models (version 1 promoted) and a served prediction; and the names and values that exist."""
    store = FileArtifactStore(artifacts)
    digests = [store.put(elec_model()), store.put(elec_model(flip=True))]
    rows = [
        event(
            ObservationRecorded(
                task=spec.name,
                pipeline_version=spec.version,
                entity_id="nsw",
                features={**FEATURES, "nswprice": 0.05 + i / 1000},
                label=i % 2,
            ),
            data_stream(spec.name),
        )
        for i in range(ROWS)
    ]
    trained = [
        event(
            ModelTrained(
                task=spec.name,
                model_version=version,
                parent_version=version - 1 or None,
                pipeline_version=spec.version,
                artifact_sha256=digest,
                config="fuzz",
                params={},
                metrics={"recent_accuracy": 0.5},
                first_position=None,
                last_position=ROWS // 2,
                n_learned=ROWS // 2,
                n_learned_total=ROWS // 2,
            ),
            model_stream(spec.name),
        )
        for version, digest in enumerate(digests, start=1)
    ]
    promoted = ModelPromoted(
        task=spec.name,
        model_version=1,
        artifact_sha256=digests[0],
        previous_version=None,
        reason="fuzz",
        decided_by="tests",
    )
    prediction_id = uuid.uuid4()
    served = PredictionServed.one(
        spec.name,
        prediction_id=prediction_id,
        model_version=1,
        entity_id="nsw",
        features=FEATURES,
        probability=0.7,
        label=1,
    )
    events = [
        *rows,
        *trained,
        event(promoted, deployment_stream(spec.name)),
        event(served, prediction_stream(spec.name)),
    ]
    observation = str(rows[0].event_id)
    known: dict[str, list[Any]] = {
        "task": [spec.name],
        "version": [1, 2],
        "model_version": [1, 2],
        "prediction_id": [str(prediction_id)],
        "observation_id": [observation],
        "event_id": [observation],
        "key": [KILL_SWITCH],
        "flag": [{"type": "boolean", "value": True}],
        "features": [FEATURES],
        "label": [1],
        "entity_id": ["nsw"],
    }
    return events, known


async def seed_store(
    store_url: str, kafka: str, spec: TaskSpec, events: list[Envelope], *, relay: bool
) -> list[int]:
    """Register the task and append the events as their producers would (one at a time, so
    each stream's version follows), relayed to Kafka with `relay`; return their positions."""
    await ensure_topics(kafka)
    store = open_event_store(store_url)
    publisher = KafkaPublisher(kafka)
    await publisher.start()
    try:
        await register_tasks(store, [spec], TEST_PRODUCER)
        positions = []
        for envelope in events:
            [appended] = await store.append([envelope])
            positions.append(appended.position)
        while relay and await Relay(store, publisher, producer="tests").publish_once():
            pass
        return positions
    finally:
        await publisher.stop()
        await store.close()


def with_history(
    store_url: str, kafka: str, spec: TaskSpec, artifacts: Path, *, relay: bool = True
) -> dict[str, list[Any]]:
    events, known = history(spec, artifacts)
    positions = asyncio.run(seed_store(store_url, kafka, spec, events, relay=relay))
    known["first_position"] = [positions[0]]
    known["last_position"] = [positions[ROWS - 1]]
    known["after_position"] = [positions[-1]]
    return known


def start_ingest(store_url: str, kafka: str, tmp_path: Path) -> Target:
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    shutil.copy(REPO_ROOT / "tasks" / "elec.yaml", tasks)
    settings = IngestSettings(
        environment="test",
        store_url=store_url,
        kafka_bootstrap_servers=kafka,
        tasks_dir=tasks,
        artifacts_dir=tmp_path / "artifacts",
        max_records=200,
        max_body_bytes=64 * 1024,
    )
    # Ingest takes elec from its tasks directory, and publishes only what it stores itself.
    known = with_history(store_url, kafka, ELEC, settings.artifacts_dir, relay=False)
    return Target(ingest_app(settings), known=known)


def start_serving(store_url: str, kafka: str, tmp_path: Path) -> Target:
    """Serving with an elec task's champion (version 1), so its predictions are answered."""
    settings = ServingSettings(
        environment="test",
        store_url=store_url,
        kafka_bootstrap_servers=kafka,
        artifacts_dir=tmp_path / "artifacts",
        redis_url="",
        record_interval=0.05,
    )
    known = with_history(store_url, kafka, elec_task(), settings.artifacts_dir)
    return Target(serving_app(settings), known=known)


def start_governance(store_url: str, kafka: str, tmp_path: Path) -> Target:
    """Governance with an admin key, which every generated request carries."""
    key = f"cnt_{uuid.uuid4().hex[:12]}_{uuid.uuid4().hex}"
    settings = GovernanceSettings(
        environment="test",
        store_url=store_url,
        kafka_bootstrap_servers=kafka,
        artifacts_dir=tmp_path / "artifacts",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'governance.db'}",
        consumer_group=f"gov-{uuid.uuid4().hex[:8]}",
        bootstrap_keys=f"root:admin:{key}",
        live_audit_interval=0,
        relay_interval=0.02,
        redis_url="",
    )
    known = with_history(store_url, kafka, elec_task(), settings.artifacts_dir)
    return Target(governance_app(settings), headers={"Authorization": f"Bearer {key}"}, known=known)


def start_trainer(store_url: str, kafka: str, tmp_path: Path) -> Target:
    """The trainer is a Faust worker, not an ASGI app: it runs as its own process, over HTTP."""
    port = free_port()
    env = {
        **os.environ,
        "CONTINUO_STORE_URL": store_url,
        "KAFKA_BOOTSTRAP_SERVERS": kafka,
        "CONTINUO_ARTIFACTS_DIR": str(tmp_path / "artifacts"),
        "TRAINER_DATADIR": str(tmp_path / "trainer"),
        "TRAINER_APP_ID": f"fuzz-{uuid.uuid4().hex[:8]}",
        "TRAINER_PORT": str(port),
    }
    log = open(tmp_path / "trainer.log", "ab")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen(
        [sys.executable, "-m", "services.trainer"], env=env, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"the trainer did not start; see {tmp_path / 'trainer.log'}")
        time.sleep(0.2)
    return Target(None, url=url, process=process)


def realistic(value: Any, known: dict[str, list[Any]]) -> st.SearchStrategy[Any]:
    """The generated value with, independently, each known name's value either kept or replaced
    by one that exists (at any depth of a body); shrinks towards the existing ones."""
    if isinstance(value, dict):
        return st.fixed_dictionaries(
            {
                name: st.sampled_from([*known[name], item])
                if name in known
                else realistic(item, known)
                for name, item in value.items()
            }
        )
    if isinstance(value, list):
        return st.tuples(*(realistic(item, known) for item in value)).map(list)
    return st.just(value)


STARTERS: dict[str, Callable[[str, str, Path], Target]] = {
    "ingest": start_ingest,
    "serving": start_serving,
    "governance": start_governance,
    "trainer": start_trainer,
}


@contextmanager
def quiet_logs() -> Iterator[None]:
    """Warnings and errors only, tracebacks as plain text: structlog's default renders each 500's
    traceback with every frame's locals, seconds a request while Hypothesis shrinks one."""
    before = structlog.get_config()
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.dev.ConsoleRenderer(
                colors=False, exception_formatter=structlog.dev.plain_traceback
            ),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
    )
    try:
        yield
    finally:
        structlog.configure(**before)


@contextmanager
def running(service: str, store_url: str, kafka: str, tmp_path: Path) -> Iterator[Any]:
    """The service's schema, loaded from its running app; generated parameters and bodies often
    name what exists (`realistic`)."""
    target = STARTERS[service](store_url, kafka, tmp_path)
    try:
        # Loading the document starts the app's lifespan; requests then run on its event loop.
        # Every request carries the service's credentials (if any): no generated auth headers.
        config = schemathesis.Config.from_dict({"generation": {"with-security-parameters": False}})
        if target.app is not None:
            schema = schemathesis.openapi.from_asgi("/openapi.json", target.app, config=config)
        else:
            schema = schemathesis.openapi.from_url(f"{target.url}/openapi.json", config=config)

        @schema.hook
        def flatmap_path_parameters(context: Any, path_parameters: Any) -> Any:
            return realistic(path_parameters, target.known)

        @schema.hook
        def flatmap_query(context: Any, query: Any) -> Any:
            return realistic(query, target.known)

        @schema.hook
        def flatmap_body(context: Any, body: Any) -> Any:
            return realistic(body, target.known)

        yield schema, target.headers
    finally:
        asgi.shutdown_lifespans()
        if target.process is not None:
            target.process.terminate()
            target.process.wait(30)


# -- fuzzing ------------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Finding:
    """One distinct failure (check, operation, status, kind) and the smallest request seen to
    cause it, with what the check said about that request."""

    check: str
    operation: str
    status: int
    # The failure's title, or for an exception the app raised, its type and where.
    kind: str
    detail: str = field(compare=False)
    request: str = field(compare=False)

    def __str__(self) -> str:
        return (
            f"[{self.check}] {self.operation} -> {self.status} {self.kind}: {self.detail}\n"
            f"    {self.request}"
        )


class Failed(Exception):
    """Raised inside a Hypothesis example so it shrinks the failing request."""


def _app_frame(exc: BaseException) -> str:
    """Where in the project's code an exception was raised (its innermost project frame)."""
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if f.filename.startswith(str(REPO_ROOT)) and "/.venv/" not in f.filename
    ]
    if not frames:
        return "outside the project"
    frame = frames[-1]
    return f"{Path(frame.filename).relative_to(REPO_ROOT)}:{frame.lineno} in {frame.name}"


def _first_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def describe(case: Any, body: Any) -> str:
    """The request, exactly: method, path and query as sent, content type and body bytes."""
    query = case.query or {}
    request = f"{case.method} {case.formatted_path}"
    if query:
        request += f"?{urlencode(query, doseq=True)}"
    if not isinstance(body, NotSet) and body is not None:
        if isinstance(body, str):
            body = body.encode("utf-8", "surrogatepass")
        elif not isinstance(body, bytes):  # not sent: the app raised before it was encoded here
            body = json.dumps(body).encode()
        request += f" [{case.media_type}] body={body!r}"
    return request


def probe(
    case: Any, headers: dict[str, str], checks: list[Any], answered: Counter[tuple[str, int]]
) -> list[Finding]:
    """Send one generated case and return what the checks found wrong with the answer."""
    operation = case.operation.label
    try:
        response = case.call(headers=headers)
    except Exception as exc:  # noqa: BLE001 - the app raised: answered 500 by its error handler
        answered[operation, 500] += 1
        if not_a_server_error not in checks:
            return []
        kind = f"{type(exc).__name__} at {_app_frame(exc)}"
        detail = _first_line(str(exc), 200)
        request = describe(case, case.body)
        return [Finding("not_a_server_error", operation, 500, kind, detail, request)]
    answered[operation, response.status_code] += 1
    if (operation, response.status_code) in BY_DESIGN:
        return []
    try:
        case.validate_response(response, checks=checks, headers=headers)
    except (Failure, FailureGroup) as exc:
        failures = exc.exceptions if isinstance(exc, FailureGroup) else (exc,)
        body = _first_line(response.text or "", 200)
        request = describe(case, response.request.body)
        return [
            Finding(
                _check_name(failure),
                operation,
                response.status_code,
                failure.title,
                _first_line(failure.message)
                + (f" | body: {body}" if response.status_code >= 500 else ""),
                request,
            )
            for failure in failures
        ]
    return []


def _check_name(failure: Failure) -> str:
    return failure.checks[0] if failure.checks else type(failure).__name__


@dataclass
class Outcome:
    findings: list[Finding]
    # (operation, status) -> how many generated requests were answered so: how deep they got.
    answered: Counter[tuple[str, int]]
    # operation -> seconds spent on it (generating, sending, checking, shrinking).
    seconds: dict[str, float]

    def report(self, service: str) -> str:
        lines = [f"{service}: {len(self.findings)} distinct failures (seed {SEED})"]
        lines += [str(f) for f in self.findings]
        by_operation: dict[str, list[str]] = {}
        for (operation, status), count in sorted(self.answered.items()):
            by_operation.setdefault(operation, []).append(f"{status} x{count}")
        lines.append("statuses answered:")
        lines += [
            f"  {op}: {', '.join(statuses)} ({self.seconds.get(op, 0.0):.1f}s)"
            for op, statuses in by_operation.items()
        ]
        return "\n".join(lines)


def fuzz(schema: Any, headers: dict[str, str], checks: list[Any], *, shrink: bool) -> Outcome:
    """Every operation in every generation mode: each distinct finding, and the smallest request
    that showed it (with `shrink`, Hypothesis also shrinks the first one of each operation)."""
    phases = [Phase.explicit, Phase.generate] + ([Phase.shrink] if shrink else [])
    found: dict[Finding, Finding] = {}
    answered: Counter[tuple[str, int]] = Counter()
    seconds: dict[str, float] = {}

    def keep(findings: list[Finding]) -> None:
        for finding in findings:
            seen = found.get(finding)
            if seen is None or len(finding.request) < len(seen.request):
                found[finding] = finding

    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in MODES:

            @seed(SEED)
            @settings(
                max_examples=FEWER.get(operation.label, EXAMPLES),
                derandomize=True,
                database=None,
                phases=phases,
                deadline=None,
                report_multiple_bugs=False,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case: Any) -> None:
                findings = probe(case, headers, checks, answered)
                keep(findings)
                if findings:
                    raise Failed(findings[0])

            started = time.perf_counter()
            try:
                run()
            except Failed:
                pass
            except Unsatisfiable:  # nothing to make invalid (no parameters, no body)
                assert mode is GenerationMode.NEGATIVE, operation.label
            finally:
                spent = time.perf_counter() - started
                seconds[operation.label] = seconds.get(operation.label, 0.0) + spent
    return Outcome(sorted(found.values()), answered, seconds)


# -- the tests ------------------------------------------------------------------------------------


pytestmark = pytest.mark.filterwarnings(
    # Schemathesis's own strategies draw from `random` (seeded by Hypothesis for each example).
    "ignore:Do not use the `random` module inside strategies"
)


@pytest.mark.parametrize("service", SERVICES)
def test_no_generated_request_gets_a_server_error(
    service: str, sqlite_url: str, kafka: str, tmp_path: Path
) -> None:
    with quiet_logs(), running(service, sqlite_url, kafka, tmp_path) as (schema, headers):
        outcome = fuzz(schema, headers, SERVER_ERRORS, shrink=True)
    print(outcome.report(service))
    assert not outcome.findings, outcome.report(service)


@pytest.mark.parametrize("service", SERVICES)
def test_every_response_conforms_to_the_openapi_document(
    service: str, sqlite_url: str, kafka: str, tmp_path: Path
) -> None:
    with quiet_logs(), running(service, sqlite_url, kafka, tmp_path) as (schema, headers):
        outcome = fuzz(schema, headers, CONFORMANCE, shrink=False)
    print(outcome.report(service))
    assert not outcome.findings, outcome.report(service)
