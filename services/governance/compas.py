"""COMPAS (ProPublica, "Machine Bias", 2016): load the two-year file and audit the COMPAS score.

ProPublica counted a `score_text` of Medium or High as "high risk" and compared it with two-year
recidivism over all 7,214 rows; `compas_score_audit` does the same, so its African-American and
Caucasian rows reproduce the published false positive rates (44.85% vs 23.45%) and false negative
rates (27.99% vs 47.72%).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from services.governance.audit import AuditReport, audit
from shared.tasks import AuditThresholds

SENSITIVE = ("race", "sex")
TARGET = "two_year_recid"
HIGH_RISK = frozenset({"Medium", "High"})
_REQUIRED = (*SENSITIVE, TARGET, "score_text")


def load_compas(path: str | Path) -> pd.DataFrame:
    """Read compas-scores-two-years.csv, plain or gzipped, and check the audit's columns exist."""
    frame = pd.read_csv(path)
    missing = [c for c in _REQUIRED if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: not the COMPAS two-year file, missing {', '.join(missing)}")
    return frame


def compas_score_predictions(frame: pd.DataFrame) -> pd.Series:
    """ProPublica's reading of the score: Medium or High is predicted recidivism (1), Low is 0."""
    return frame["score_text"].isin(HIGH_RISK).astype(int)


def compas_score_audit(
    frame: pd.DataFrame, thresholds: AuditThresholds | None = None
) -> AuditReport:
    """Audit the COMPAS score itself against two-year recidivism, by race and by sex, all rows."""
    return audit(
        y_true=frame[TARGET].tolist(),
        y_pred=compas_score_predictions(frame).tolist(),
        sensitive={name: frame[name].tolist() for name in SENSITIVE},
        thresholds=thresholds if thresholds is not None else AuditThresholds(),
    )


def compas_report(data: str | Path, spec_path: str | Path | None = None) -> AuditReport:
    """The COMPAS score audit with the limits of a task spec (default: no limits)."""
    from shared.tasks import load_spec

    limits = load_spec(spec_path).promotion.audit if spec_path else None
    return compas_score_audit(load_compas(data), limits)


def main(argv: list[str] | None = None) -> int:
    """`python -m services.governance.compas [FILE]`: print the COMPAS score audit table."""
    import argparse

    from services.governance.audit import render_audit
    from shared.settings import REPO_ROOT

    parser = argparse.ArgumentParser(prog="python -m services.governance.compas")
    parser.add_argument(
        "file", nargs="?", default=REPO_ROOT / "data" / "compas-scores-two-years.csv.gz"
    )
    parser.add_argument("--spec", default=REPO_ROOT / "tasks" / "compas.yaml")
    args = parser.parse_args(argv)
    print(render_audit(compas_report(args.file, args.spec)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
