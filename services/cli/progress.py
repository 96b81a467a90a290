"""Progress of a long wait: a live bar on a terminal, a plain line every few seconds otherwise
(CI logs, pipes), never a silent wait."""

from __future__ import annotations

import sys
import time
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

_PLAIN_EVERY_S = 5.0


class WaitProgress:
    """`with WaitProgress(total, "tasks") as p: p.update(done, note)`."""

    def __init__(self, total: int | None, label: str, *, console: Console | None = None) -> None:
        self.total = total
        self.label = label
        self._console = console or Console(stderr=True)
        self._live = self._console.is_terminal and sys.stderr.isatty()
        self._bar: Progress | None = None
        self._task_id: int | None = None
        self._last_plain = 0.0
        self._last: tuple[int, str] | None = None

    def __enter__(self) -> WaitProgress:
        if self._live:
            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[note]}"),
                TimeElapsedColumn(),
                console=self._console,
                transient=False,
            )
            self._bar.start()
            self._task_id = self._bar.add_task(self.label, total=self.total, note="")
        return self

    def update(self, done: int, note: str = "") -> None:
        if self._bar is not None and self._task_id is not None:
            self._bar.update(self._task_id, completed=done, note=note)  # type: ignore[arg-type]
            return
        now = time.monotonic()
        finished = self.total is not None and done >= self.total
        if (done, note) != self._last and (finished or now - self._last_plain >= _PLAIN_EVERY_S):
            of = f"/{self.total}" if self.total is not None else ""
            self._console.print(f"{self.label}: {done}{of} {note}".rstrip(), highlight=False)
            self._last_plain, self._last = now, (done, note)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.stop()
