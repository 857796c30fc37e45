"""Writing benchmark figures into docs/benchmarks.md, one section per benchmark."""

from __future__ import annotations

import re
from pathlib import Path

BENCHMARKS_MD = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = (
    "# Benchmarks\n\n"
    "Every figure here was printed by the command next to it, on the project's 2-core\n"
    "machine, with a baseline measured in the same run (these machines are noisy: read ratios,\n"
    "not absolutes).\n"
)


def write_section(heading: str, body: str, path: Path = BENCHMARKS_MD) -> None:
    """Replace (or add) the `## heading` section of the benchmarks page, leaving the others."""
    text = path.read_text(encoding="utf-8") if path.exists() else HEADER
    section = f"## {heading}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text)
    else:
        text = text.rstrip() + "\n\n" + section
    path.write_text(text.rstrip() + "\n", encoding="utf-8")
