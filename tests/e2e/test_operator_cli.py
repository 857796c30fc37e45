"""The operator's CLI against the four services as processes, run as a user runs it (the
`continuo` entry point, so exit codes are real): a short labelled stream through serving (log and
wait) gives a task several audited model versions and served-accuracy windows, then the commands
read and decide through governance's API.

Exit codes under test: 0 done, 1 governance said no (a refusal by policy, with its reasons; any
other 4xx), 2 usage, 3 governance unreachable.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from continuo.caller import stream_through_serving, wait_until_learned
from continuo.loop import drift_stream, loop_spec
from continuo.simulate import Timing
from continuo.stack import Stack, write_task_specs
from shared.tasks import AuditThresholds, PromotionPolicy

CONTINUO = str(Path(sys.executable).parent / "continuo")
ROWS = 1400  # versions at rows 1, 50, 100, 200, 250, ..., 1250; the last audited on 150 rows
# Audited (a sensitive `group`), promoted whenever the audit passes: the metric check never
# refuses (tolerance 1), so several versions are promoted in turn and can be rolled back to.
SPEC = loop_spec(name=f"ops-{uuid.uuid4().hex[:6]}", publish_every=250).model_copy(
    update={
        "promotion": PromotionPolicy(
            require_audit=True, tolerance=1.0, audit=AuditThresholds(min_rows=100)
        )
    }
)
TASK = SPEC.name


@dataclass
class System:
    stack: Stack
    env: dict[str, str]  # the CLI's environment: service URLs and the operator's key
    viewer_key: str

    def admin(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.stack.url("governance"),
            headers=self.stack.governance_headers(),
            timeout=30,
        )


def continuo(system: System, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `continuo ARGS` as a process with the operator's environment (overridden by `env`)."""
    return subprocess.run(
        [CONTINUO, *args],
        env={**system.env, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def as_json(result: subprocess.CompletedProcess[str]) -> dict:
    return json.loads(ok(result))


def new_key(stack: Stack, name: str, role: str) -> str:
    """A key made as an operator makes one: `continuo keys create`, on governance's database."""
    made = subprocess.run(
        [CONTINUO, "keys", "create", "--name", name, "--role", role],
        env={**stack.environment()},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return next(line.strip() for line in made.stdout.splitlines() if "cnt_" in line)


async def stream_and_settle(stack: Stack) -> None:
    """Ask serving for each request's predictions, recording the rows (log and wait), and post
    their labels: half the rows, then, once governance promoted a first audited version, the
    rest (answered by a champion, so the trainer scores them: a served-accuracy window every 200
    rows). Wait until the trainer learned every label and governance decided on every version."""
    features, labels, entities = drift_stream(ROWS, drift_at=ROWS, entities=50)
    urls = {name: stack.url(name) for name in ("serving", "ingest")}
    half = ROWS // 2
    async with httpx.AsyncClient(
        base_url=stack.url("governance"), headers=stack.governance_headers(), timeout=30
    ) as gov:
        for rows in (slice(0, half), slice(half, ROWS)):
            await stream_through_serving(
                urls,
                TASK,
                features[rows],
                labels[rows],
                Timing(50, 0),
                entities=entities[rows],
                progress=False,
            )
            deadline = time.monotonic() + 60
            while not (await gov.get(f"/v1/tasks/{TASK}/routing")).json()["champion"]:
                assert time.monotonic() < deadline, "no version was promoted"
                await asyncio.sleep(0.3)
        status = await wait_until_learned(stack.url("trainer"), TASK, ROWS, timeout=90)
        deadline = time.monotonic() + 60
        while True:
            models = (await gov.get(f"/v1/tasks/{TASK}/models")).json().get("models", [])
            windows = (await gov.get(f"/v1/tasks/{TASK}/served-accuracy")).json()["windows"]
            decided = all(m["status"] != "candidate" for m in models)
            if len(models) >= status["model_version"] and decided and windows:
                return
            states = [(m["model_version"], m["status"]) for m in models]
            assert time.monotonic() < deadline, (states, windows)
            await asyncio.sleep(0.3)


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    workdir = tmp_path_factory.mktemp("operator")
    stack = Stack(
        workdir,
        store_url=f"sqlite+aiosqlite:///{workdir / 'events.db'}",
        env_overrides=write_task_specs(workdir / "tasks", [SPEC]),
    )
    asyncio.run(stack.start())
    try:
        asyncio.run(stream_and_settle(stack))
        env = {
            **os.environ,
            "CONTINUO_GOVERNANCE_URL": stack.url("governance"),
            "CONTINUO_TRAINER_URL": stack.url("trainer"),
            "CONTINUO_SERVING_URL": stack.url("serving"),
            "CONTINUO_API_KEY": new_key(stack, "ops", "operator"),
        }
        yield System(stack, env, new_key(stack, "vera", "viewer"))
    finally:
        stack.stop()


def rows(text: str, first: str) -> list[list[str]]:
    """The cells of each table row whose first cell is `first`."""
    split = [[c.strip() for c in line.split("│")] for line in text.splitlines()]
    return [r for r in split if r[0] == first]


def cells(text: str, first: str) -> list[str]:
    [row] = rows(text, first)
    return row


def champion(system: System) -> int:
    [task] = [t for t in as_json(continuo(system, "status", TASK, "--json"))["tasks"]]
    return task["routing"]["champion"]["model_version"]


def promoted(system: System) -> list[int]:
    """Versions that were champion at some point (the ones a rollback may go back to)."""
    models = as_json(continuo(system, "models", TASK, "--json"))["models"]
    return [m["model_version"] for m in models if m["status"] in ("champion", "retired")]


def test_status_shows_the_champion_served_accuracy_and_the_trainer_s_lag(system: System):
    data = as_json(continuo(system, "status", "--json"))
    [task] = [t for t in data["tasks"] if t["task"] == TASK]
    newest = max(promoted(system))
    assert task["routing"]["champion"]["model_version"] == newest
    assert task["served"]["source"] == "governance's newest served window"
    assert 0.5 < task["served"]["accuracy"] <= 1 and task["served"]["rows"] > 0
    assert data["trainer_reachable"] is True
    assert task["trainer"]["learned"] == ROWS
    assert task["lag_positions"] in (None, 0)  # the trainer learned everything stored

    text = ok(continuo(system, "status"))
    row = cells(text, TASK)
    assert row[1] == f"v{newest}"
    assert row[5].endswith(f"{ROWS:,} labels")
    assert f"served accuracy of {TASK}: from governance's newest served window" in text
    assert row[4].endswith(" rows)")  # e.g. 0.9350 (200 rows)

    table = ok(continuo(system, "models", TASK))
    assert f"{TASK}: champion v{newest}" in table
    assert "refused" in table or "retired" in table


def test_a_rollback_and_a_promotion_show_in_status_and_a_refused_one_prints_the_reasons(
    system: System,
):
    versions = promoted(system)
    assert len(versions) >= 2, f"need two promoted versions, have {versions}"
    back, newest = versions[-2], versions[-1]

    done = continuo(system, "rollback", TASK, str(back), "--reason", "answers look wrong")
    assert f"rolled back to v{back} (from v{newest}) by ops" in ok(done)
    assert champion(system) == back
    assert cells(ok(continuo(system, "status", TASK)), TASK)[1] == f"v{back}"

    again = continuo(system, "promote", TASK, f"v{newest}", "--reason", "fixed upstream")
    assert f"{TASK}: v{newest} promoted (was v{back}) by ops; policy:" in ok(again)
    assert "bias audit passed" in again.stdout
    assert champion(system) == newest

    ok(continuo(system, "rollback", TASK, str(back), "--reason", "still wrong"))
    with system.admin() as admin:  # an approver says no to the newest version
        rejected = admin.post(
            f"/v1/tasks/{TASK}/models/{newest}/reject", json={"reason": "odd drift"}
        )
        assert rejected.status_code == 200, rejected.text
    refused = continuo(system, "promote", TASK, str(newest), "--reason", "ship it")
    assert refused.returncode == 1
    assert refused.stderr.splitlines() == [
        "continuo promote: refused (409)",
        "  - rejected by stack: odd drift",
    ]
    assert champion(system) == back

    older = continuo(system, "promote", TASK, str(versions[0]), "--reason", "x")
    if versions[0] < back:
        assert older.returncode == 1 and "roll back to it instead" in older.stderr

    trail = ok(
        continuo(system, "trail", TASK, "--type", "ModelRolledBack", "--type", "PromotionRefused")
    )
    assert "ModelRolledBack" in trail and "answers look wrong" in trail
    assert "rejected by stack: odd drift; requested by ops: ship it" in trail
    lines = continuo(system, "trail", TASK, "--json", "--last", "3").stdout.splitlines()
    assert len(lines) == 3 and all(json.loads(line)["type"] for line in lines)


def test_a_canary_starts_takes_a_new_weight_shows_in_status_and_stops(system: System):
    current = champion(system)
    # An older version that was champion once (a newer one may have been rejected meanwhile).
    others = [v for v in promoted(system) if v < current]
    assert others, "no version to run as a canary beside the champion"
    other = others[-1]
    started = continuo(
        system, "canary", TASK, "start", str(other), "--weight", "20", "--reason", "try"
    )
    assert f"canary v{other} on 20%" in ok(started)
    ok(continuo(system, "canary", TASK, "weight", "30", "--reason", "more"))
    assert f"canary v{other} (30%)" in ok(continuo(system, "canary", TASK))
    assert cells(ok(continuo(system, "status", TASK)), TASK)[2] == f"v{other} (30%)"
    twice = continuo(system, "canary", TASK, "start", str(other), "--weight", "5", "--reason", "x")
    assert twice.returncode == 1 and "a canary is already running" in twice.stderr
    assert f"canary v{other} stopped" in ok(
        continuo(system, "canary", TASK, "stop", "--reason", "ok")
    )
    assert "no canary running" in ok(continuo(system, "canary", TASK))


def test_flags_are_set_listed_and_removed_and_a_wrong_one_is_refused_with_governance_s_words(
    system: System,
):
    ok(continuo(system, "flags", TASK, "set", "checkout", "blue", "--reason", "a test"))
    ok(continuo(system, "flags", TASK, "set", "shadow_sample", "0.5", "--reason", "half"))
    flags = as_json(continuo(system, "flags", TASK, "--json"))
    assert flags["checkout"]["value"] == "blue" and flags["shadow_sample"]["value"] == 0.5
    assert "checkout" in ok(continuo(system, "flags", TASK))
    wrong = continuo(system, "flags", TASK, "set", "shadow_sample", "2", "--reason", "x")
    assert wrong.returncode == 1
    assert "invalid (422)" in wrong.stderr and "0 to 1" in wrong.stderr
    for key in ("checkout", "shadow_sample"):
        ok(continuo(system, "flags", TASK, "remove", key, "--reason", "done"))
    assert as_json(continuo(system, "flags", TASK, "--json")) == {}


def test_audits_show_each_version_s_verdict_and_one_version_s_groups(system: System):
    audits = as_json(continuo(system, "audit", TASK, "--json"))["audits"]
    assert audits and {a["scope"] for a in audits} >= {"candidate"}
    passed = next(a["model_version"] for a in audits if a["passed"])
    text = ok(continuo(system, "audit", TASK, str(passed)))
    assert "passed" in text and "per group" in text
    assert sorted(r[1] for r in rows(text, "group")) == ["a", "b"]


def test_usage_errors_exit_2_refusals_1_and_an_unreachable_governance_3(system: System):
    no_key = continuo(system, "status", CONTINUO_API_KEY="")
    assert no_key.returncode == 2 and "CONTINUO_API_KEY" in no_key.stderr
    assert continuo(system, "promote", TASK).returncode == 2  # no version, no reason
    assert continuo(system, "promote", TASK, "latest", "--reason", "x").returncode == 2
    too_much = continuo(system, "canary", TASK, "weight", "150", "--reason", "x")
    assert too_much.returncode == 2 and "0-100" in too_much.stderr
    assert continuo(system, "nonsense").returncode == 2

    viewer = continuo(
        system, "rollback", TASK, "1", "--reason", "x", CONTINUO_API_KEY=system.viewer_key
    )
    assert viewer.returncode == 1 and "not allowed (403)" in viewer.stderr
    assert "operator role" in viewer.stderr
    unknown = continuo(system, "models", "no-such-task")
    assert unknown.returncode == 1 and "not found (404)" in unknown.stderr
    bad_key = continuo(system, "status", CONTINUO_API_KEY="cnt_000000000000_" + "x" * 43)
    assert bad_key.returncode == 1 and "not authenticated (401)" in bad_key.stderr

    gone = continuo(system, "status", CONTINUO_GOVERNANCE_URL="http://127.0.0.1:9")
    assert gone.returncode == 3 and "unreachable" in gone.stderr


def test_a_prediction_without_the_sensitive_attribute_is_refused_saying_why(system: System):
    features, _, _ = drift_stream(1, drift_at=1)
    row = {k: v for k, v in features[0].items() if k != "group"}
    with httpx.Client(base_url=system.stack.url("serving"), timeout=30) as serving:
        refused = serving.post(f"/v1/tasks/{TASK}/predict", json={"features": row})
        answered = serving.post(f"/v1/tasks/{TASK}/predict", json={"features": features[0]})
    assert refused.status_code == 422
    [error] = refused.json()["detail"]
    assert error["index"] == 0
    assert error["msg"] == (
        "group: is required: a sensitive attribute the model does not use, kept with every row "
        "and prediction for the task's bias audits"
    )
    assert answered.status_code == 200, answered.text


def test_pipeline_versions_are_listed_registered_and_a_bad_start_says_why(
    system: System, tmp_path: Path
):
    listed = ok(continuo(system, "pipelines", TASK))
    assert SPEC.version[:12] in listed
    other = SPEC.model_copy(update={"description": "another pipeline version"})
    path = tmp_path / "other.yaml"
    path.write_text(yaml.safe_dump(other.model_dump(mode="json")))
    said = ok(continuo(system, "pipelines", TASK, "register", str(path), "--reason", "a test"))
    assert f"pipeline {other.version[:12]} registered" in said
    again = ok(continuo(system, "pipelines", TASK, "register", str(path), "--reason", "a test"))
    assert "already registered" in again
    assert other.version[:12] in ok(continuo(system, "pipelines", TASK))
    running = continuo(system, "pipelines", TASK, "start", SPEC.version[:12], "--reason", "x")
    assert running.returncode == 1 and "the one the task runs" in running.stderr
    unknown = continuo(system, "pipelines", TASK, "start", "ffff", "--reason", "x")
    assert unknown.returncode == 2 and "names 0" in unknown.stderr
    missing = continuo(
        system, "pipelines", TASK, "register", str(tmp_path / "no.yaml"), "--reason", "x"
    )
    assert missing.returncode == 2
