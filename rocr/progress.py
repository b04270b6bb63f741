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


class MachineStatus:
    """A live status line while a script runs (`hsaemu trace`): machines, kernels run and
    simulated time, refreshed twice a second from a background thread on a terminal with
    `rich`; nothing otherwise (the reports at the end say it all). The thread only reads
    counters the machines keep anyway, so it cannot change what the script does."""

    def __init__(self, machines: list, stream: TextIO | None = None) -> None:
        self.machines = machines
        self.stream = stream or sys.stderr
        self.t0 = time.perf_counter()
        self._stop = None
        self._thread = None

    def line(self) -> str:
        ms = list(self.machines)
        kernels = sum(g.stats_kernels for m in ms for g in m.gpus)
        sim = max((m.engine.now for m in ms), default=0)
        return (
            f"{len(ms)} machine{'s' if len(ms) != 1 else ''} · {kernels:,} kernels · "
            f"{sim / 1e6:,.3f} µs simulated · {time.perf_counter() - self.t0:.1f} s"
        )

    def __enter__(self) -> MachineStatus:
        if not getattr(self.stream, "isatty", lambda: False)():
            return self
        try:
            from rich.console import Console
            from rich.live import Live
            from rich.text import Text
        except ImportError:
            return self
        import threading

        live = Live(Text(self.line()), console=Console(file=self.stream), transient=True)
        stop = threading.Event()

        def refresh() -> None:
            while not stop.wait(0.5):
                live.update(Text(self.line()))

        live.start()
        self._stop, self._live = stop, live
        self._thread = threading.Thread(target=refresh, name="hsaemu-status", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._live.stop()
            self._thread = None
