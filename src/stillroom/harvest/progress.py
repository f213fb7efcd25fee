"""The harvest progress bar (stderr): done/total, req/s, tokens/s, spend, ETA."""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)

PLAIN_EVERY_S = 15.0


class HarvestProgress:
    def __init__(self, total: int, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self.started = time.perf_counter()
        self.tokens = 0
        self.done = 0
        self.errors = 0
        self._progress = Progress(
            TextColumn("[bold]harvest"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TextColumn("{task.fields[spend]}"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            disable=not enabled,
            refresh_per_second=4,
        )
        self._task: TaskID | None = None
        self.total = total
        # Off a terminal (a log file, CI) rich draws nothing until the end: print plain lines.
        self._plain = enabled and not self._progress.console.is_terminal
        self._next_plain = PLAIN_EVERY_S

    def __enter__(self) -> HarvestProgress:
        self._progress.start()
        self._task = self._progress.add_task("harvest", total=self.total, rate="", spend="")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.stop()

    def advance(self, tokens: int, spent_usd: float, *, error: bool = False) -> None:
        self.done += 1
        self.tokens += tokens
        self.errors += error
        if not self.enabled or self._task is None:
            return
        elapsed = max(1e-9, time.perf_counter() - self.started)
        errors = f" {self.errors} err" if self.errors else ""
        if self._plain and (elapsed >= self._next_plain or self.done == self.total):
            self._next_plain = elapsed + PLAIN_EVERY_S
            self._progress.console.print(
                f"harvest {self.done}/{self.total} {self.done / elapsed:.1f} req/s "
                f"${spent_usd:.4f}{errors} {elapsed:.0f}s",
                highlight=False,
            )
        self._progress.update(
            self._task,
            advance=1,
            rate=f"{self.done / elapsed:.1f} req/s {self.tokens / elapsed:.0f} tok/s{errors}",
            spend=f"${spent_usd:.4f}",
        )
