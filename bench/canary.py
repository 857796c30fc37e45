"""The canary analysis on streams whose truth is known: how often and how fast it promotes, rolls
back or stops, against a fixed-horizon test. Runs the rule governance runs
(`services/governance/canary.py`), looked at after every 50 labels per arm as governance does
(the trainer's `ArmsScored` cadence), seeded.

    .venv/bin/python bench/canary.py [--runs 1000] [--no-write]

Canaries: the champion answers right with probability 0.80; the canary with 0.85 (truly better),
0.75 (truly worse), 0.80 (identical: A/A) or 0.82 (a small gain); each arm gets its own rows
(two samples). Shadows: the same rows scored by both (paired), the challenger right where the
champion is with the given agreement. The fixed-horizon comparison: a two-sample z-test at the
same alpha sized for 80% power at the true difference, looked at once at that size.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
from scipy.stats import norm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import write_section  # noqa: E402
from services.governance.canary import (  # noqa: E402
    Arm,
    Paired,
    Verdict,
    canary_analysis,
    shadow_analysis,
)
from shared.tasks import CanaryPolicy  # noqa: E402

SECTION = "Canary analysis (bench/canary.py)"
BATCH = 50
POLICY = CanaryPolicy()  # the defaults every task gets
CHAMPION = 0.80
CASES = (
    ("truly better", 0.85),
    ("a small gain", 0.82),
    ("identical (A/A)", 0.80),
    ("truly worse", 0.75),
)


@dataclass
class Outcome:
    verdict: Verdict
    labels: int  # per arm, when decided


def canary_run(p_canary: float, seed: int) -> Outcome:
    rng = np.random.default_rng(seed)
    a = b = n = 0
    p = 1.0
    while True:
        a += int(rng.binomial(BATCH, CHAMPION))
        b += int(rng.binomial(BATCH, p_canary))
        n += BATCH
        result = canary_analysis(Arm(n, a), Arm(n, b), POLICY, previous_p=p)
        p = result.p_value
        if result.verdict is not Verdict.CONTINUE:
            return Outcome(result.verdict, n)


def _discordant(p_shadow: float) -> tuple[float, float]:
    """Shares of rows only the shadow gets right and only the champion does: both models get
    most rows right together (their errors are correlated, as two models of one stream's are)."""
    both = min(CHAMPION, p_shadow) - 0.05
    return p_shadow - both, CHAMPION - both


def shadow_run(p_shadow: float, seed: int) -> Outcome:
    """Paired rows: the champion right with CHAMPION, the shadow with p_shadow."""
    rng = np.random.default_rng(seed)
    only_mine, only_theirs = _discordant(p_shadow)
    mine = theirs = n = 0
    p = 1.0
    while True:
        draws = rng.random(BATCH)
        mine += int((draws < only_mine).sum())
        theirs += int(((draws >= only_mine) & (draws < only_mine + only_theirs)).sum())
        n += BATCH
        result = shadow_analysis(Paired(n, mine, theirs), POLICY, previous_p=p)
        p = result.p_value
        if result.verdict is not Verdict.CONTINUE:
            return Outcome(result.verdict, n)


def _z(diff: np.ndarray, variance: np.ndarray, n: int) -> np.ndarray:
    se = np.sqrt(variance / n)
    return np.where(se > 0, diff / np.where(se > 0, se, 1.0), 0.0)


def fixed_two_sample(p2: float, n: int, runs: int) -> np.ndarray:
    rng = np.random.default_rng(12345)
    a = rng.binomial(n, CHAMPION, size=runs) / n
    b = rng.binomial(n, p2, size=runs) / n
    return _z(b - a, a * (1 - a) + b * (1 - b), n)


def fixed_paired(p2: float, n: int, runs: int) -> np.ndarray:
    rng = np.random.default_rng(12345)
    only_mine, only_theirs = _discordant(p2)
    counts = rng.multinomial(n, [only_mine, only_theirs, 1 - only_mine - only_theirs], size=runs)
    plus, minus = counts[:, 0] / n, counts[:, 1] / n
    return _z(plus - minus, plus + minus - (plus - minus) ** 2, n)


def per_row_variance(p2: float, paired: bool) -> float:
    if paired:
        only_mine, only_theirs = _discordant(p2)
        return only_mine + only_theirs - (only_mine - only_theirs) ** 2
    return CHAMPION * (1 - CHAMPION) + p2 * (1 - p2)


def table(name: str, paired: bool, runs: int) -> list[str]:
    run = shadow_run if paired else canary_run
    fixed = fixed_paired if paired else fixed_two_sample
    cut = norm.ppf(1 - POLICY.alpha / 2)
    lines = [
        f"**{name}** ({runs:,} seeded runs per case; champion right {CHAMPION:.0%})",
        "",
        "| truth | promoted | rolled back | inconclusive | labels per arm to decide (median, p90) "
        "| fixed-horizon n per arm (80% power) | fixed-horizon at n: promoted / rolled back |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, p in CASES:
        outcomes = [run(p, seed) for seed in range(runs)]
        count = {v: sum(o.verdict is v for o in outcomes) / runs for v in Verdict}
        decided = [o.labels for o in outcomes if o.verdict in (Verdict.PROMOTE, Verdict.ROLL_BACK)]
        speed = (
            f"{statistics.median(decided):,.0f}, {np.percentile(decided, 90):,.0f}"
            if decided
            else "-"
        )
        if p == CHAMPION:
            n, shown = 2000, "- (looked at once at 2,000)"
        else:
            z = norm.ppf(1 - POLICY.alpha / 2) + norm.ppf(0.8)
            n = int(np.ceil(z**2 * per_row_variance(p, paired) / (p - CHAMPION) ** 2))
            shown = f"{n:,}"
        zs = fixed(p, n, runs)
        up, down = 100 * (zs > cut).mean(), 100 * (zs < -cut).mean()
        lines.append(
            f"| {label} ({p:.0%}) | {100 * count[Verdict.PROMOTE]:.1f}% | "
            f"{100 * count[Verdict.ROLL_BACK]:.1f}% | {100 * count[Verdict.INCONCLUSIVE]:.1f}% | "
            f"{speed} | {shown} | {up:.1f}% / {down:.1f}% |"
        )
    return lines + [""]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    command = ("python bench/canary.py " + " ".join(argv)).strip()
    lines = [
        f"Command: `{command}` ({date.today().isoformat()}). The default policy: alpha "
        f"{POLICY.alpha}, tau {POLICY.tau}, at least {POLICY.min_labels} labels per arm, at most "
        f"{POLICY.max_labels:,} (then inconclusive); looked at every {BATCH} labels per arm. "
        "The A/A rows are the false-decision rate: at most alpha is the goal, however often the "
        "analysis looks.",
        "",
        *table("Canary vs champion, each on its own traffic", False, args.runs),
        *table("Shadow vs champion, paired on the same rows", True, args.runs),
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section(SECTION, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
