"""Progress bars for long work: the one helper the CLI, the demo and the benchmarks use.

On a terminal, rich draws the bars on stdout; lines the work prints meanwhile (to stdout or
stderr) appear above them. When stdout is not a terminal (CI logs, a pipe, a file) nothing is
drawn at all: a log keeps the work's own lines and figures, not hundreds of redraws.

    with progress("streaming", total=len(rows), unit="rows") as bar:
        for chunk in chunks:
            ...
            bar.advance(len(chunk))

    for stream in track(streams, "streams"):
        ...
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

T = TypeVar("T")


def on_terminal() -> bool:
    """Whether bars are drawn by default: stdout is a terminal."""
    return sys.stdout.isatty()


class _Rate(ProgressColumn):
    """Items a second, in the bar's unit (`rows/s`); blank until rich has measured a speed."""

    def render(self, task: Task) -> Text:
        unit = task.fields.get("unit", "")
        if task.speed is None or not unit:
            return Text("")
        return Text(f"{task.speed:,.0f} {unit}/s", style="progress.data.speed")


class Bar:
    """One bar. Every method is a no-op when bars are not drawn, so callers never check."""

    def __init__(self, progress: Progress | None = None, task: TaskID | None = None) -> None:
        self._progress = progress
        self._task = task

    @property
    def drawn(self) -> bool:
        return self._progress is not None

    def advance(self, n: float = 1) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, n)

    def update(
        self,
        *,
        completed: float | None = None,
        total: float | None = None,
        description: str | None = None,
    ) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(
                self._task, completed=completed, total=total, description=description
            )


class Bars:
    """Bars drawn together in one display (e.g. one per relay); `add` makes another."""

    def __init__(self, progress: Progress | None = None) -> None:
        self._progress = progress

    def add(self, description: str, total: float | None = None, *, unit: str = "") -> Bar:
        if self._progress is None:
            return Bar()
        return Bar(self._progress, self._progress.add_task(description, total=total, unit=unit))


@contextmanager
def bars(*, enabled: bool | None = None, console: Console | None = None) -> Iterator[Bars]:
    """A display of bars for the duration of the block; drawn when `enabled` (default: stdout
    is a terminal), otherwise nothing is written."""
    if not (on_terminal() if enabled is None else enabled):
        yield Bars()
        return
    display = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _Rate(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
    )
    with display:
        yield Bars(display)


@contextmanager
def progress(
    description: str,
    total: float | None = None,
    *,
    unit: str = "",
    enabled: bool | None = None,
    console: Console | None = None,
) -> Iterator[Bar]:
    """One bar for the duration of the block (see `bars` for when it is drawn)."""
    with bars(enabled=enabled, console=console) as group:
        yield group.add(description, total, unit=unit)


@asynccontextmanager
async def aprogress(
    description: str,
    total: float | None = None,
    *,
    unit: str = "",
    enabled: bool | None = None,
) -> AsyncIterator[Bar]:
    """`progress` for an `async with` (beside an HTTP client, say)."""
    with progress(description, total, unit=unit, enabled=enabled) as bar:
        yield bar


def track(
    items: Iterable[T],
    description: str,
    total: int | None = None,
    *,
    unit: str = "",
    enabled: bool | None = None,
) -> Iterator[T]:
    """`items`, one at a time, advancing a bar after each (total: len(items) when it has one)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress(description, total, unit=unit, enabled=enabled) as bar:
        for item in items:
            yield item
            bar.advance()
