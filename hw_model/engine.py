"""Discrete-event engine: the simulated clock of one emulated machine.

Modeled on SimPy's core and gem5/Akita's event queues: time is an integer number of
picoseconds, events fire in (tick, priority, sequence) order, so the same inputs always give
the same order. Components schedule only what follows from something that happened (they
sleep when idle); nothing ticks per cycle.

Housekeeping events (the HW scheduler's quantum timer and the HQD reloads it starts) only
reorganise the machine; they never do work. A wait with no timeout can pause before each of
them (`run_while(..., pause_housekeeping=True)`) and ask whether anything else is left
(`only_housekeeping`): a rotation of queues that cannot run is no progress.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

PS_PER_NS = 1_000
PS_PER_US = 1_000_000
PS_PER_MS = 1_000_000_000
PS_PER_S = 1_000_000_000_000


class Event:
    """A scheduled callback; `cancel()` makes it a no-op when its time comes."""

    __slots__ = ("tick", "fn", "args", "cancelled", "housekeeping")

    def __init__(
        self, tick: int, fn: Callable[..., Any], args: tuple[Any, ...], housekeeping: bool = False
    ) -> None:
        self.tick = tick
        self.fn = fn
        self.args = args
        self.cancelled = False
        self.housekeeping = housekeeping

    def cancel(self) -> None:
        self.cancelled = True


class Engine:
    """Event queue with an integer picosecond clock."""

    def __init__(self) -> None:
        self.now: int = 0
        self._heap: list[tuple[int, int, int, Event]] = []
        self._seq = 0
        self.events_fired = 0

    def schedule(
        self,
        delay_ps: int,
        fn: Callable[..., Any],
        *args: Any,
        priority: int = 0,
        housekeeping: bool = False,
    ) -> Event:
        """Run `fn(*args)` `delay_ps` from now. Lower priority values fire first at a tick."""
        if delay_ps < 0:
            raise ValueError(f"cannot schedule into the past (delay {delay_ps} ps)")
        return self.schedule_at(
            self.now + int(delay_ps), fn, *args, priority=priority, housekeeping=housekeeping
        )

    def schedule_at(
        self,
        tick: int,
        fn: Callable[..., Any],
        *args: Any,
        priority: int = 0,
        housekeeping: bool = False,
    ) -> Event:
        if tick < self.now:
            raise ValueError(f"cannot schedule at tick {tick} before now ({self.now})")
        ev = Event(tick, fn, args, housekeeping)
        self._seq += 1
        heapq.heappush(self._heap, (tick, priority, self._seq, ev))
        return ev

    def peek(self) -> int | None:
        """Tick of the next live event, or None when nothing is pending."""
        heap = self._heap
        while heap and heap[0][3].cancelled:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    @property
    def idle(self) -> bool:
        return self.peek() is None

    def only_housekeeping(self) -> bool:
        """Nothing pending but housekeeping (true when idle too): no pending event does work."""
        return all(e[3].cancelled or e[3].housekeeping for e in self._heap)

    def step(self) -> bool:
        """Fire the next live event. False when none is pending."""
        heap = self._heap
        while heap:
            tick, _, _, ev = heapq.heappop(heap)
            if ev.cancelled:
                continue
            self.now = tick
            self.events_fired += 1
            ev.fn(*ev.args)
            return True
        return False

    def run_until(self, tick: int) -> None:
        """Fire every event due at or before `tick`, then set the clock to `tick`."""
        heap = self._heap
        pop = heapq.heappop
        while heap and heap[0][0] <= tick:
            t, _, _, ev = pop(heap)
            if ev.cancelled:
                continue
            self.now = t
            self.events_fired += 1
            ev.fn(*ev.args)
        if tick > self.now:
            self.now = tick

    def run_while(
        self,
        pred: Callable[[], bool],
        limit: int | None = None,
        pause_housekeeping: bool = False,
    ) -> bool:
        """Fire events while `pred()` holds and events remain (up to tick `limit`).

        Returns True when `pred()` became false, False when the engine ran dry or hit the limit
        with `pred()` still true. The clock is not advanced past the last fired event.
        `pause_housekeeping`: also return True, `pred()` still true, when the next event is
        housekeeping (not fired; `step()` fires it).
        """
        heap = self._heap
        pop = heapq.heappop
        while pred():
            while heap and heap[0][3].cancelled:
                pop(heap)
            if not heap or (limit is not None and heap[0][0] > limit):
                return False
            if pause_housekeeping and heap[0][3].housekeeping:
                return True
            t, _, _, ev = pop(heap)
            self.now = t
            self.events_fired += 1
            ev.fn(*ev.args)
        return True

    def pending(self) -> int:
        return sum(1 for e in self._heap if not e[3].cancelled)
