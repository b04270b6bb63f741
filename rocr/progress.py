"""Progress of long runs (benchmarks, sweeps): a rich bar on a terminal, plain lines otherwise.

On a terminal with `rich` installed the bar shows steps done, failures and the time left; in a
log or a pipe (CI, `| tee`) each step is one line with the same figures, so nothing is lost
and nothing needs a terminal. `rich` is optional: without it, lines on a terminal too.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def fmt_time(s: float) -> str:
    """h:mm:ss, or m:ss under an hour."""
    s = int(round(s))
    if s >= 3600:
        return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
    return f"{s // 60}:{s % 60:02d}"


class Progress:
    """`total` steps of `what` ("cells", "dispatches"...). `advance(n, note, ok)` after each
    step (or batch of steps); `close()` at the end (or use it as a context manager)."""

    def __init__(
        self, total: int, what: str = "steps", stream: TextIO | None = None, quiet: bool = False
    ) -> None:
        self.total = total
        self.what = what
        self.done = 0
        self.failed = 0
        self.t0 = time.perf_counter()
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.bar = None
        if not quiet and total and getattr(self.stream, "isatty", lambda: False)():
            try:
                from rich.console import Console
                from rich.progress import (
                    BarColumn,
                    MofNCompleteColumn,
                    TextColumn,
                    TimeRemainingColumn,
                )
                from rich.progress import Progress as RichProgress
            except ImportError:
                pass
            else:
                self.bar = RichProgress(
                    TextColumn(what),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TextColumn("{task.fields[failed]} failed"),
                    TextColumn("ETA"),
                    TimeRemainingColumn(),
                    console=Console(file=self.stream),
                )
                self.task = self.bar.add_task(what, total=total, failed=0)
                self.bar.start()

    def eta(self) -> float:
        """Seconds left at the mean rate so far."""
        n = self.done + self.failed
        if not n:
            return 0.0
        return (time.perf_counter() - self.t0) / n * max(self.total - n, 0)

    def advance(self, n: int = 1, note: str = "", ok: bool = True) -> None:
        if ok:
            self.done += n
        else:
            self.failed += n
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.update(self.task, advance=n, failed=self.failed)
            return
        print(
            f"[{self.done + self.failed}/{self.total}] done {self.done}, failed {self.failed}, "
            f"ETA {fmt_time(self.eta())}" + (f"  {note}" if note else ""),
            file=self.stream,
            flush=True,
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
