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
    ],
)
def test_bad_input_exits_2_with_a_message_and_no_traceback(tmp_path: Path, capsys, args, message):
    csv = _csv(tmp_path / "s.csv")
    csv3 = _csv(tmp_path / "s3.csv", rows=30, target=np.arange(30) % 3)
    argv = [a.format(csv=csv, csv3=csv3) for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
