"""`continuo evaluate`: a CSV stream in, prequential figures out; bad input is a clear exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from continuo.evaluate import main


def _csv(path: Path, rows: int = 1500, target=None) -> Path:
    rng = np.random.default_rng(3)
    x = rng.random((rows, 2))
    y = (x[:, 0] > 0.5).astype(int) if target is None else target
    lines = ["a,b,note,label"] + [
        f"{a},{b},n{i},{t}" for i, ((a, b), t) in enumerate(zip(x, y, strict=True))
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_learnable_stream_scores_well_and_reports_json(tmp_path: Path, capsys):
    assert main([str(_csv(tmp_path / "s.csv")), "--target", "label", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["accuracy"] > 0.8 and result["events_per_s"] > 0
    assert {"log_loss", "recent_accuracy"} <= set(result)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.csv", "--target", "label"], "missing.csv"),
        (["{csv}", "--target", "nope"], "nope"),
        (["{csv3}", "--target", "label"], "binary"),
        (["{csv1}", "--target", "label"], "has one value (7): nothing to tell apart"),
    ],
)
def test_bad_input_exits_2_with_a_message_and_no_traceback(tmp_path: Path, capsys, args, message):
    csv = _csv(tmp_path / "s.csv")
    csv3 = _csv(tmp_path / "s3.csv", rows=30, target=np.arange(30) % 3)
    csv1 = _csv(tmp_path / "s1.csv", rows=30, target=np.full(30, 7))
    argv = [a.format(csv=csv, csv3=csv3, csv1=csv1) for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_numeric_target_is_evaluated_as_a_regression(tmp_path: Path, capsys):
    x = np.random.default_rng(3).random((1500, 2))  # the features `_csv` writes
    target = 10 * x[:, 0] + 5 * np.sin(6 * x[:, 1]) + np.random.default_rng(4).normal(0, 0.1, 1500)
    csv = _csv(tmp_path / "r.csv", target=np.round(target, 4))
    argv = [str(csv), "--target", "label", "--kind", "regression", "--batch", "20"]
    assert main([*argv, "--label-delay", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["kind"] == "regression" and result["rows"] == 1500
    # Far better than answering each row with the last label known (the target is not a walk).
    assert result["MAE"] < 0.5 * result["previous_label"]["MAE"] and result["R^2"] > 0.8
    # What serving would have answered, beside the learner's own (fresher) figure.
    assert result["MAE"] == pytest.approx(result["trainer"]["MAE"], rel=0.2)
    assert result["unanswered"] == 0 and result["models_promoted"] >= 1
    assert result["interval_rows"] > 1000 and 0.8 < result["interval_coverage"] <= 1.0
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "what serving would have answered" in text and "trainer's own" in text
    assert "90% intervals       held" in text


def test_a_target_that_never_varies_has_no_r2_and_valid_json(tmp_path: Path, capsys):
    """R^2 = 1 - SSE / SST is undefined when SST is 0: n/a in the text, null in the JSON (which
    has no NaN), not a 0 that reads as "no better than the mean"."""
    csv = _csv(tmp_path / "c.csv", rows=300, target=np.full(300, 5.0))
    argv = [str(csv), "--target", "label", "--kind", "regression"]
    assert main([*argv, "--json"]) == 0
    result = json.loads(capsys.readouterr().out, parse_constant=pytest.fail)
    assert result["R^2"] is None and result["previous_label"]["R^2"] is None
    assert result["MAE"] < 0.1
    assert main(argv) == 0
    assert "R^2                 n/a" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("target", "extra", "message"),
    [
        (np.array([1.0, np.nan] * 15), [], "row 2: nan is not a finite number"),
        (np.array(["a", "b"] * 15), [], "row 1: a is not a finite number"),
        (np.arange(30) % 3, ["--kind", "binary"], "--kind multiclass"),
        (np.arange(30) % 2, ["--kind", "multiclass"], "2 classes: not multiclass"),
        (
            np.arange(300) % 150,
            ["--kind", "multiclass"],
            "150 classes; a multiclass target has at most 100",
        ),
    ],
)
def test_a_target_that_does_not_fit_its_kind_exits_2(
    tmp_path: Path, capsys, target, extra, message
):
    csv = _csv(tmp_path / "r.csv", rows=len(target), target=target)
    kind = extra or ["--kind", "regression"]
    assert main([str(csv), "--target", "label", *kind]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_target_of_several_classes_is_evaluated_as_multiclass(tmp_path: Path, capsys):
    x = np.random.default_rng(3).random((1500, 2))  # the features `_csv` writes
    names = np.array(["low", "mid", "high", "top"])
    target = names[np.minimum((x[:, 0] * 4).astype(int), 3)]
    csv = _csv(tmp_path / "m.csv", target=target)
    argv = [str(csv), "--target", "label", "--kind", "multiclass", "--batch", "20"]
    assert main([*argv, "--label-delay", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["kind"] == "multiclass" and result["rows"] == 1500
    assert result["accuracy"] > 0.85 > result["previous_label"]["accuracy"]
    assert result["macro-F1"] > 0.85
    assert result["trainer"]["accuracy"] > 0.85 and result["unanswered"] == 0
    assert main(argv) == 0
    assert "what serving would have answered" in capsys.readouterr().out


def test_a_regression_with_entity_scoped_online_features_is_evaluated(tmp_path: Path, capsys):
    """Each entity's level is its own (a global mean would mislead): the spec's entity-scoped
    label mean tells them apart, as serving computes it, only from labels already posted."""
    rng = np.random.default_rng(8)
    entities = rng.integers(0, 40, 3000)
    level = rng.normal(0, 10, 40)[entities]
    x = rng.random(3000)
    y = level + 2 * x + rng.normal(0, 0.2, 3000)
    csv = tmp_path / "e.csv"
    csv.write_text(
        "customer,x,y\n"
        + "".join(f"c{e},{a:.5f},{t:.5f}\n" for e, a, t in zip(entities, x, y, strict=True))
    )
    spec = {
        "name": "levels",
        "features": [{"name": "x"}],
        "target": {"name": "y", "kind": "regression"},
    }
    figures = {}
    for name, online in (
        ("none", []),
        ("entity", [{"name": "mean_y", "kind": "label_mean", "window": 20}]),
    ):
        path = tmp_path / f"{name}.yaml"
        path.write_text(json.dumps(spec | {"online_features": online}))
        argv = [str(csv), "--target", "y", "--spec", str(path), "--entity", "customer"]
        assert main([*argv, "--batch", "20", "--label-delay", "1", "--json"]) == 0
        figures[name] = json.loads(capsys.readouterr().out)["MAE"]
    assert figures["entity"] < 0.3 * figures["none"], figures


def test_a_regression_in_tiny_or_huge_units_reads_and_scores_right(tmp_path: Path, capsys):
    """An attacker's pass: a target near 1e-300 had RMSE 0 (below its MAE) and R^2 null (its
    squares underflowed), and figures printed to 4 places read 0.0000 or ran to 100 digits."""
    x = np.random.default_rng(3).random((600, 2))
    base = 10 * x[:, 0] + 5 * np.sin(6 * x[:, 1])
    for unit, shown in ((1e-300, "e-30"), (1e-6, "e-0"), (1e90, "e+9")):
        csv = _csv(tmp_path / "u.csv", rows=600, target=[repr(float(v)) for v in base * unit])
        argv = [str(csv), "--target", "label", "--kind", "regression"]
        assert main([*argv, "--json"]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["RMSE"] >= result["MAE"] > 0 and result["R^2"] > 0.5, (unit, result)
        assert main(argv) == 0
        text = capsys.readouterr().out
        mae = next(line for line in text.splitlines() if line.strip().startswith("MAE"))
        assert shown in mae and len(mae) < 100, mae


def test_booleans_are_not_a_regression_target_and_unknown_classes_are_shown_as_values(
    tmp_path: Path, capsys
):
    booly = _csv(tmp_path / "b.csv", rows=30, target=np.array(["True", "False"] * 15))
    assert main([str(booly), "--target", "label", "--kind", "regression"]) == 2
    assert "holds booleans, not numbers" in capsys.readouterr().err
    numbers = _csv(tmp_path / "n.csv", rows=300, target=np.arange(300) % 3 + 1)
    spec = tmp_path / "s.yaml"
    spec.write_text(
        json.dumps(
            {
                "name": "t",
                "features": [{"name": "a"}, {"name": "b"}],
                "target": {"name": "label", "kind": "multiclass", "classes": ["1", "2", "3"]},
            }
        )
    )
    assert main([str(numbers), "--target", "label", "--spec", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "not the spec's classes ('1', '2', '3'): 1, 2, 3" in err and "np." not in err
    many = _csv(tmp_path / "m.csv", rows=300, target=np.arange(300) * 0.5)
    assert main([str(many), "--target", "label", "--spec", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "and 290 more" in err and len(err) < 400
