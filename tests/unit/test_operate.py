"""The operator CLI's pure parts: figures as tables show them, served accuracy from governance's
windows or the registry, the trainer's lag, trail rows, flag values, refusals; and the progress
helper drawing only when asked (a terminal), nothing otherwise."""

from __future__ import annotations

import io

import httpx
import pytest
from rich.console import Console

from continuo import cli
from continuo.operate import (
    COMMANDS,
    Context,
    Governance,
    OperatorSettings,
    Refused,
    UsageError,
    _detail,
    behind,
    flag_value,
    fmt,
    lag_cell,
    refusal,
    served_from_metrics,
    served_from_windows,
    status,
    trail_row,
)
from continuo.progress import progress, track


def test_figures_read_as_tables_show_them():
    assert fmt(None) == "-"
    assert fmt(0.91234) == "0.9123"
    assert fmt(12345) == "12,345"
    assert fmt(True) == "yes"
    assert fmt(0.5, 2) == "0.50"


def test_served_accuracy_is_the_newest_window_of_the_arms_that_answered():
    windows = [
        {"model_version": 3, "role": "champion", "n": 500, "correct": 400, "to_position": 10},
        {"model_version": 4, "role": "champion", "n": 400, "correct": 380, "to_position": 20},
        {"model_version": 5, "role": "canary", "n": 100, "correct": 90, "to_position": 20},
        {"model_version": 6, "role": "shadow", "n": 500, "correct": 0, "to_position": 20},
    ]
    served = served_from_windows(windows)
    assert served.accuracy == pytest.approx(470 / 500)
    assert served.rows == 500
    assert served.cell() == "0.9400 (500 rows)"
    assert served_from_windows([]).accuracy is None


def test_without_windows_the_champions_registry_metrics_are_used_and_say_so():
    served = served_from_metrics(7, {"served_accuracy": 0.8, "served_n_labelled": 1200.0})
    assert (served.accuracy, served.rows) == (0.8, 1200)
    assert "registry" in served.source and "v7" in served.source
    assert served_from_metrics(7, {}).cell() == "-"


def test_lag_is_serving_s_newest_data_position_minus_the_trainer_s():
    trainer = {"last_position": 900, "settled": True}
    assert behind(trainer, {"synced_position": 1000}) == 100
    assert behind(trainer, {"synced_position": 800}) == 0  # serving behind: no negative lag
    assert behind(trainer, None) is None
    assert behind(None, {"synced_position": 1000}) is None
    assert lag_cell(trainer, 100) == "100"
    assert lag_cell({**trainer, "settled": False}, 100) == "100 (busy)"
    assert lag_cell(None, None) == "-"


def test_a_trail_event_becomes_one_row_with_who_and_why():
    event = {
        "position": 1234,
        "occurred_at": "2026-11-27T21:00:01.5+00:00",
        "type": "PromotionRefused",
        "payload": {
            "model_version": 4,
            "decided_by": "ops",
            "reasons": ["rejected by ann: odd drift", "requested by ops: ship it"],
        },
    }
    assert trail_row(event) == (
        "1,234",
        "2026-11-27 21:00:01",
        "PromotionRefused",
        "v4",
        "ops",
        "rejected by ann: odd drift; requested by ops: ship it",
    )
    canary = {"type": "CanaryStarted", "payload": {"model_version": 2, "weight": 20.0}}
    assert "weight 20%" in trail_row(canary)[5]
    scored = {
        "type": "ServedScored",
        "payload": {"arms": [{"model_version": 3, "role": "champion", "n": 200, "correct": 190}]},
    }
    assert trail_row(scored)[5] == "v3 champion 190/200 right"
    # The race's events say what changed, a regression's model its MAE.
    dropped = {"type": "ConfigDropped", "payload": {"config": "lr-0.1", "at_labelled": 4000}}
    assert trail_row(dropped)[5] == "lr-0.1 dropped from the race; at 4,000 labels"
    switched = {
        "type": "ConfigSwitched",
        "payload": {"from_config": "blend-fast", "to_config": "linear", "at_labelled": 250},
    }
    assert trail_row(switched)[5] == "blend-fast -> linear; at 250 labels"
    trained = {
        "type": "ModelTrained",
        "payload": {"model_version": 3, "n_learned_total": 500, "metrics": {"mae": 1.25}},
    }
    assert trail_row(trained)[5] == "500 labels learned, MAE 1.2500"
    # A drift alarm says which way the error went: ADWIN also sees falls, which change nothing.
    fell = {
        "type": "DriftDetected",
        "payload": {
            "detector": "adwin",
            "at_labelled": 288,
            "evidence": {"error_before": 0.48, "error_after": 0.1, "rise": False},
        },
    }
    assert trail_row(fell)[5] == (
        "adwin, error 0.480 -> 0.100: a fall, nothing to adapt; at 288 labels"
    )
    rose = {
        "type": "DriftDetected",
        "payload": {"detector": "page-hinkley", "evidence": {"rise": True}},
    }
    assert trail_row(rose)[5] == "page-hinkley: a rise, the learner adapts"
    flag = {
        "type": "FlagChanged",
        "payload": {"key": "checkout", "flag": {"value": "new"}, "reason": "try the new page"},
    }
    assert trail_row(flag)[5] == 'checkout = "new"; try the new page'


def test_flag_values_are_typed_from_the_command_line():
    assert flag_value("true", None) == {"type": "boolean", "value": True}
    assert flag_value("0.25", None) == {"type": "number", "value": 0.25}
    assert flag_value("blue", None) == {"type": "string", "value": "blue"}
    assert flag_value("1", "string") == {"type": "string", "value": "1"}
    with pytest.raises(UsageError):
        flag_value("maybe", "boolean")
    with pytest.raises(UsageError):
        flag_value("lots", "number")


def test_a_refusal_prints_every_reason_governance_gave():
    text = refusal(Refused(409, "refused", ["rejected by ann: odd drift", "bias audit failed"]))
    assert text.splitlines() == [
        "refused (409)",
        "  - rejected by ann: odd drift",
        "  - bias audit failed",
    ]
    assert refusal(Refused(403, "this needs the operator role")).startswith("not allowed (403)")


def test_error_bodies_of_every_shape_give_a_message():
    problem = httpx.Response(409, json={"detail": "refused", "reasons": ["a", "b"]})
    assert _detail(problem) == ("refused", ["a", "b"])
    invalid = httpx.Response(
        422, json={"detail": [{"loc": ["body", "weight"], "msg": "too big", "type": "x"}]}
    )
    assert _detail(invalid) == ("weight: too big", [])
    assert _detail(httpx.Response(502, text="bad gateway"))[0] == "bad gateway"


def test_every_operator_command_is_a_continuo_command():
    assert set(COMMANDS) <= set(cli.COMMANDS)
    for name in COMMANDS:
        assert f"continuo {name}" in cli.__doc__


def test_bars_are_drawn_only_when_enabled():
    drawn = io.StringIO()
    terminal = Console(file=drawn, force_terminal=True, width=100)
    with progress("streaming", 10, unit="rows", enabled=True, console=terminal) as bar:
        bar.advance(4)
        bar.update(completed=10)
    assert "streaming" in drawn.getvalue() and "10/10" in drawn.getvalue()

    quiet = io.StringIO()
    with progress("streaming", 10, enabled=False, console=Console(file=quiet)) as bar:
        bar.advance(10)
    assert quiet.getvalue() == "" and not bar.drawn


def test_bars_are_not_drawn_when_stdout_is_not_a_terminal(capsys):
    assert list(track(range(3), "work")) == [0, 1, 2]  # pytest's stdout is no terminal
    assert capsys.readouterr().out == ""


def fake_governance(served_windows: list[dict] | None) -> httpx.MockTransport:
    """Governance's answers for one task `t` with champion v3 and a canary v2 on 20%; the
    served-accuracy endpoint only when `served_windows` is given (else FastAPI's 404)."""
    routes = {
        "/v1/tasks": {"tasks": [{"task": "t", "version": "abc"}]},
        "/v1/tasks/t/routing": {
            "task": "t",
            "champion": {"model_version": 3, "artifact_sha256": "x", "share": 100.0},
            "canary": {"model_version": 2, "artifact_sha256": "y", "share": 20.0},
            "shadows": [],
            "flags": {"kill_switch": {"type": "boolean", "value": False}},
            "killed": False,
        },
        "/v1/tasks/t/models/3": {"metrics": {"served_accuracy": 0.8125, "served_n_labelled": 640}},
    }
    if served_windows is not None:
        routes["/v1/tasks/t/served-accuracy"] = {"task": "t", "windows": served_windows}

    def answer(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == "Bearer cnt_key"
        if request.url.path in routes:
            return httpx.Response(200, json=routes[request.url.path])
        return httpx.Response(404, json={"detail": "Not Found"})

    return httpx.MockTransport(answer)


def run_status(transport: httpx.MockTransport, *argv: str) -> str:
    out = io.StringIO()
    settings = OperatorSettings(
        api_key="cnt_key",  # type: ignore[arg-type]
        trainer_url="http://127.0.0.1:9",
        serving_url="http://127.0.0.1:9",
        http_timeout=1,
    )
    gov = Governance.open(settings, transport)
    ctx = Context(settings, out=Console(file=out, width=300, markup=False), _gov=gov)
    assert status(ctx, list(argv)) == 0
    return out.getvalue()


def test_status_falls_back_to_the_champion_s_registry_metrics_and_says_so():
    text = run_status(fake_governance(None))
    row = [c.strip() for c in next(x for x in text.splitlines() if x.startswith("t ")).split("│")]
    assert row[:5] == ["t", "v3", "v2 (20%)", "-", "0.8125 (640 rows)"]
    assert row[-1] == "kill_switch"
    assert "served accuracy of t: from the registry (v3's metrics when it was published)" in text
    assert "trainer unreachable at http://127.0.0.1:9" in text


def test_status_uses_governance_s_served_windows_when_it_has_them():
    windows = [{"model_version": 3, "role": "champion", "n": 200, "correct": 190, "to_position": 9}]
    text = run_status(fake_governance(windows))
    assert "0.9500 (200 rows)" in text
    assert "served accuracy of t: from governance's newest served window" in text
