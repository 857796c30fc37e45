"""Every service's `GET /metrics` on the four services as processes: the families docs/metrics.md
lists are there, and their values agree with what the client did and what it was answered.

A short elec stream goes through serving with log and wait (each request's labels posted to
ingest by prediction id at once), and COMPAS rows (the task with sensitive attributes, so its
models are audited) go to ingest labelled; a few requests are refused on purpose. The client keeps
which model version answered each row, so the served counts and the newest served-accuracy window
can be recomputed here and compared exactly; governance's decisions and audits are compared with
the events the store holds.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from continuo.caller import ENTITY, wait_until_learned
from continuo.demo import FEATURES, find_elec, read_rows
from continuo.stack import Stack
from services.governance.compas import load_compas
from services.trainer.core import SERVED_WINDOW
from shared.events.types import deployment_stream, governance_stream
from shared.settings import REPO_ROOT
from shared.store.port import EventStore
from shared.store.sql import open_event_store
from shared.tasks import load_spec
from tests.support import eventually

ROWS = 600
COMPAS_ROWS = 600
PROJECTED = "continuo_governance_events_projected_total"
DECISIONS = "continuo_governance_decisions_total"
BATCH = 20
TASK = "elec"


@dataclass
class Scrape:
    """One /metrics answer, parsed with prometheus_client's own parser."""

    families: set[str]
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]

    def value(self, name: str, **labels: str) -> float | None:
        return self.samples.get((name, frozenset(labels.items())))

    def total(self, name: str, **labels: str) -> float:
        """The sum over every series of `name` whose labels include `labels`."""
        wanted = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and wanted <= ls)

    def by(self, name: str, label: str, **labels: str) -> dict[str, float]:
        """The series of `name` with `labels`, by the value of `label`."""
        wanted = set(labels.items())
        return {
            dict(ls)[label]: v
            for (n, ls), v in self.samples.items()
            if n == name and wanted <= ls and v
        }


async def _scrape(client: httpx.AsyncClient, url: str) -> Scrape:
    response = await client.get(f"{url}/metrics")  # no key, on every service
    assert response.status_code == 200, (url, response.text[:300])
    assert response.headers["content-type"].startswith("text/plain")
    families = list(text_string_to_metric_families(response.text))
    return Scrape(
        {f.name for f in families},
        {(s.name, frozenset(s.labels.items())): s.value for f in families for s in f.samples},
    )


class Client:
    """Streams rows through serving (recorded) and posts each request's labels at once."""

    def __init__(self, http: httpx.AsyncClient, stack: Stack) -> None:
        self.http, self.stack = http, stack
        self.position = 0
        self.requests = 0
        self.answers: list[tuple[int | None, str, bool]] = []  # (version, role, right) per row

    async def predict(self, rows: list[dict[str, Any]], record: bool) -> list[dict[str, Any]]:
        body = {
            "records": [
                {"features": {f: r[f] for f in FEATURES}, "entity_id": ENTITY} for r in rows
            ],
            "record": record,
            "after_position": self.position,
        }
        url = f"{self.stack.url('serving')}/v1/tasks/{TASK}/predict"
        response = await self.http.post(url, json=body)
        assert response.status_code == 200, response.text[:300]
        self.requests += 1
        return response.json()["predictions"]

    async def stream(self, rows: list[dict[str, Any]]) -> None:
        for start in range(0, len(rows), BATCH):
            chunk = rows[start : start + BATCH]
            predictions = await self.predict(chunk, record=True)
            labels = []
            for row, p in zip(chunk, predictions, strict=True):
                self.answers.append((p["model_version"], p["role"], p["label"] == row["class"]))
                labels.append({"prediction_id": p["prediction_id"], "label": row["class"]})
            url = f"{self.stack.url('ingest')}/v1/tasks/{TASK}/labels"
            accepted = (await self.http.post(url, json=labels)).json()
            self.position = max(self.position, *accepted["positions"])

    def newest_window(self) -> dict[tuple[str, str], tuple[int, int]]:
        """(model version, role) -> (rows, right) in the newest complete ServedScored window:
        answered rows, in the order their labels were posted (the trainer learns them so)."""
        answered = [(str(v), role, right) for v, role, right in self.answers if v is not None]
        windows = len(answered) // SERVED_WINDOW
        assert windows >= 1
        window = answered[(windows - 1) * SERVED_WINDOW : windows * SERVED_WINDOW]
        counts: dict[tuple[str, str], tuple[int, int]] = {}
        for version, role, right in window:
            n, correct = counts.get((version, role), (0, 0))
            counts[(version, role)] = (n + 1, correct + right)
        return counts


async def _refused(http: httpx.AsyncClient, stack: Stack) -> None:
    """One request of each kind ingest must count as refused: 2 invalid records, a malformed
    body, an unknown task."""
    ingest = stack.url("ingest")
    bad = [{"entity_id": "x", "features": {"period": "soon"}}] * 2
    response = await http.post(f"{ingest}/v1/tasks/{TASK}/observations", json=bad)
    assert response.status_code == 422
    response = await http.post(
        f"{ingest}/v1/tasks/{TASK}/labels",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    response = await http.post(f"{ingest}/v1/tasks/no-such-task/labels", json=[{"label": 1}])
    assert response.status_code == 404


def _compas_rows() -> list[dict[str, Any]]:
    """The first COMPAS rows by screening date, each labelled with its two-year outcome."""
    spec = load_spec(REPO_ROOT / "tasks" / "compas.yaml")
    frame = load_compas(REPO_ROOT / "data" / "compas-scores-two-years.csv.gz")
    frame = frame.sort_values(["compas_screening_date", "id"], kind="stable").head(COMPAS_ROWS)
    names = [f.name for f in spec.input_features]
    return [
        {
            "entity_id": str(row["id"]),
            "features": {n: row[n] for n in names},
            "label": int(row["two_year_recid"]),
        }
        for row in frame.to_dict("records")
    ]


async def _decided(store: EventStore, task: str) -> tuple[Counter[str], Counter[str]]:
    """What the store holds of governance's work on a task: decisions by type, audits by
    scope/result."""
    decisions = Counter(e.type for e in await store.read_stream(deployment_stream(task)))
    audits = Counter(
        f"{e.payload['scope']}/{'pass' if e.payload['passed'] else 'fail'}"
        for e in await store.read_stream(governance_stream(task))
        if e.type == "AuditCompleted"
    )
    return decisions, audits


def _audits(scrape: Scrape, task: str) -> dict[str, float]:
    return {
        f"{dict(ls)['scope']}/{dict(ls)['result']}": v
        for (n, ls), v in scrape.samples.items()
        if n == "continuo_governance_audits_total" and dict(ls)["task"] == task
    }


async def test_every_service_exposes_its_metrics_and_they_agree_with_what_happened(
    pg_url: str, tmp_path: Path
):
    rows = read_rows(find_elec(), limit=ROWS + BATCH)
    stream, last = rows[:ROWS], rows[ROWS:]
    stack = Stack(tmp_path, store_url=pg_url)
    store = open_event_store(pg_url)
    await stack.start()
    started = time.monotonic()
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            client = Client(http, stack)
            await client.stream(stream)
            compas = await http.post(
                f"{stack.url('ingest')}/v1/tasks/compas/observations", json=_compas_rows()
            )
            assert compas.status_code == 202, compas.text[:300]
            await _refused(http, stack)
            status = await wait_until_learned(stack.url("trainer"), TASK, ROWS, timeout=90)
            await wait_until_learned(stack.url("trainer"), "compas", COMPAS_ROWS, timeout=90)
            # Not recorded: with `after_position`, serving's fold holds every label first, so
            # this answer is by models that learned them all (freshness observes each one).
            final = await client.predict(last, record=False)

            async def settled() -> Scrape | None:
                """Governance's scrape once it projected every elec model and audited COMPAS
                ones, and its counts match the store (read first: a decision stored meanwhile
                makes them differ, and it is asked again)."""
                elec, compas = await _decided(store, TASK), await _decided(store, "compas")
                scrape = await _scrape(http, stack.url("governance"))
                trained = scrape.value(PROJECTED, task=TASK, type="ModelTrained")
                agree = all(
                    scrape.by(DECISIONS, "decision", task=task) == decisions
                    and _audits(scrape, task) == audits
                    for task, (decisions, audits) in ((TASK, elec), ("compas", compas))
                )
                done = trained == status["model_version"] and elec[0] and compas[1]
                return scrape if done and agree else None

            governance = await eventually(settled, timeout=120)
            ingest = await _scrape(http, stack.url("ingest"))
            trainer = await _scrape(http, stack.url("trainer"))
            serving = await _scrape(http, stack.url("serving"))
    finally:
        stack.stop()
        await store.close()
    elapsed = time.monotonic() - started

    # ingest: every label posted, accepted once; the refusals under their reasons.
    accepted = "continuo_ingest_records_accepted_total"
    assert ingest.value(accepted, task=TASK, kind="label") == ROWS
    assert ingest.value(accepted, task=TASK, kind="observation") == 0  # serving records rows
    assert ingest.value(accepted, task="compas", kind="observation") == COMPAS_ROWS
    assert ingest.value("continuo_ingest_records_duplicate_total", task=TASK, kind="label") == 0
    refused = "continuo_ingest_requests_refused_total"
    assert ingest.value(refused, task=TASK, reason="invalid") == 1
    assert ingest.value(refused, task=TASK, reason="malformed") == 1
    assert ingest.value(refused, task="", reason="unknown_task") == 1
    assert ingest.value(refused, task=TASK, reason="store_unavailable") == 0
    assert ingest.value("continuo_ingest_records_refused_total", task=TASK, reason="invalid") == 2

    # Every service's relay published its events (ingest: at least the labels) and caught up.
    for scrape, least in ((ingest, ROWS), (trainer, 1), (governance, 1), (serving, ROWS)):
        assert (scrape.value("continuo_relay_events_published_total") or 0) >= least
        assert scrape.value("continuo_relay_lag_events") is not None
    assert ingest.value("continuo_relay_lag_events") == 0

    # trainer: the labels, the models it stored, served accuracy as recomputed by the client.
    assert trainer.value("continuo_trainer_labels_learned_total", task=TASK) == ROWS
    assert trainer.value("continuo_trainer_labels_learned_total", task="compas") == COMPAS_ROWS
    published = trainer.total("continuo_trainer_models_published_total", task=TASK)
    assert published == status["model_version"] >= 3
    assert trainer.value("continuo_dead_letters_total") == 0
    window = client.newest_window()
    for (version, role), (n, correct) in window.items():
        arm = {"task": TASK, "model_version": version, "role": role}
        assert trainer.value("continuo_served_accuracy", **arm) == pytest.approx(correct / n)
        assert trainer.value("continuo_served_scored_rows", **arm) == n
    assert len(trainer.by("continuo_served_accuracy", "model_version", task=TASK)) == len(window)

    # serving: each answered row by the version that answered it, each request timed, and each
    # label's freshness observed once, at the last answer at the latest.
    answered = Counter(str(v) for v, _, _ in client.answers if v is not None)
    answered.update(str(p["model_version"]) for p in final)
    served = "continuo_predictions_served_total"
    assert serving.by(served, "model_version", task=TASK, role="champion") == answered
    duration = "continuo_predict_duration_seconds"
    assert serving.value(f"{duration}_count", task=TASK) == client.requests
    assert serving.value(f"{duration}_bucket", task=TASK, le="+Inf") == client.requests
    freshness = "continuo_label_freshness_seconds"
    assert serving.value(f"{freshness}_count", task=TASK) == ROWS
    assert 0 < (serving.value(f"{freshness}_sum", task=TASK) or 0) / ROWS < elapsed
    assert serving.value("continuo_recorder_waiting_predictions") is not None
    assert serving.value("continuo_predictions_dropped_total") == 0
    assert "continuo_dead_letters" not in serving.families  # serving dead-letters nothing

    # governance: what it projected (its decisions and audits matched the store's events above:
    # decisions for elec, audits for COMPAS, the task with sensitive attributes).
    assert governance.total(PROJECTED, type="LabelRecorded") == 0  # data is not its topic
    assert governance.total(DECISIONS, task=TASK) >= 1
    assert governance.total("continuo_governance_audits_total", task="compas") >= 1
    assert governance.value("continuo_dead_letters_total") == 0
