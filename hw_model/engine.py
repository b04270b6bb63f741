"""Discrete-event engine: the simulated clock of one emulated machine.

Modeled on SimPy's core and gem5/Akita's event queues: time is an integer number of
picoseconds, events fire in (tick, priority, sequence) order, so the same inputs always give
the same order. Components schedule only what follows from something that happened (they
sleep when idle); nothing ticks per cycle.

Housekeeping events (the HW scheduler's quantum timer and the HQD reloads it starts) only
reorganise the machine; they never do work. A wait with no timeout can pause before each of
them (`run_while(..., pause_housekeeping=True)`) and ask whether anything else is left
(`only_housekeeping`): a rotation of queues that cannot run is no progress.

A slice hook (`set_slice_hook`) is called between two events every `every` events fired; it
may raise to stop the run there (the machine is consistent between events, and the run can be
resumed by running again). A host serving many machines uses it to bound how long one run holds
a thread, and to cancel it. Without a hook the hot path looks at it once per event; with one it
also counts the event down.

The engine does not count the events it fires: every event scheduled is pending, was taken
off as cancelled, or has fired, so `events_fired` is worked out when read.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Collection
from operator import itemgetter, length_hint
from typing import Any

PS_PER_NS = 1_000
PS_PER_US = 1_000_000
PS_PER_MS = 1_000_000_000
PS_PER_S = 1_000_000_000_000
_SEQ_END = 1 << 62  # a sequence number no run reaches
_NO_LIMIT = 1 << 126  # a tick past every event's (run_while without a limit)


def _cancelled() -> None:
    """What a cancelled event calls instead of its function: nothing."""


class Event(list):
    """A scheduled callback; `cancel()` makes it a no-op when its time comes.

    The event is its own heap entry, `[tick, priority, sequence, fn, args]`: made in one C
    call, no Python `__init__`, for every step of every packet. Entries compare by their
    first three items, the sequence number unique, so `fn` is never compared. A cancelled
    event is one whose function is `_cancelled` (housekeeping is the subclass's class
    attribute)."""

    __slots__ = ()
    housekeeping = False
    tick = property(itemgetter(0))
    fn = property(itemgetter(3))
    args = property(itemgetter(4))

    def cancel(self) -> None:
        self[3] = _cancelled
        self[4] = ()

    @property
    def cancelled(self) -> bool:
        return self[3] is _cancelled


_push = heapq.heappush
_pop = heapq.heappop


class HousekeepingEvent(Event):
    """An event that only reorganises the machine (module docstring)."""

    __slots__ = ()
    housekeeping = True


class Engine:
    """Event queue with an integer picosecond clock."""

    def __init__(self) -> None:
        self.now: int = 0
        self._heap: list[Event] = []
        # Ties at a (tick, priority) fire in schedule order. A range's iterator: how many
        # numbers it has handed out (`length_hint` tells what is left) is how many events
        # were ever scheduled.
        self._seq = iter(range(1, _SEQ_END))
        self._next_seq = self._seq.__next__
        self._dropped = 0  # cancelled events taken off the heap without firing
        self._slice_hook: Callable[[], None] | None = None
        self._slice_events = 0
        self._slice_left = 0  # events to fire before the hook is called (with a hook)

    @property
    def events_fired(self) -> int:
        """Events fired so far: those ever scheduled, less those pending and those dropped
        as cancelled (an event that raised included: it was taken off to fire)."""
        scheduled = _SEQ_END - 1 - length_hint(self._seq)
        return scheduled - len(self._heap) - self._dropped

    def __getstate__(self) -> dict[str, Any]:
        # A checkpoint holds the next sequence number, not the iterator.
        state = self.__dict__.copy()
        n = next(self._seq)
        self._seq = iter(range(n, _SEQ_END))
        self._next_seq = self._seq.__next__
        state["_seq"] = n
        del state["_next_seq"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._seq = iter(range(state["_seq"], _SEQ_END))
        self._next_seq = self._seq.__next__

    def set_slice_hook(self, hook: Callable[[], None] | None, every: int = 0) -> None:
        """Call `hook()` between two events every `every` events (None: no hook). The hook may
        raise to end the run in progress; the events not yet fired stay pending."""
        if hook is not None and every < 1:
            raise ValueError(f"slice of {every} events: at least 1")
        self._slice_hook = hook
        self._slice_events = every
        self._slice_left = every

    def _slice_count(self) -> None:
        """One event fired with a slice hook set: the hook is called at the end of a slice."""
        self._slice_left -= 1
        if self._slice_left <= 0:
            self._slice_left = self._slice_events
            if self._slice_hook is not None:
                self._slice_hook()

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
        # schedule_at inlined: a handful of events per packet go through here
        ev = (HousekeepingEvent if housekeeping else Event)(
            (self.now + int(delay_ps), priority, self._next_seq(), fn, args)
        )
        _push(self._heap, ev)
        return ev

    def post(self, delay_ps: int, priority: int, fn: Callable[..., Any], *args: Any) -> Event:
        """`schedule(delay_ps, fn, *args, priority=priority)` for the command processor's and
        interrupt path's own steps, each a few times per packet: the delay an int known to be
        non-negative (a latency from the spec or a tick not before now), never housekeeping,
        and the priority positional (no keyword handling per event)."""
        ev = Event((self.now + delay_ps, priority, self._next_seq(), fn, args))
        _push(self._heap, ev)
        return ev

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
        ev = (HousekeepingEvent if housekeeping else Event)(
            (tick, priority, self._next_seq(), fn, args)
        )
        _push(self._heap, ev)
        return ev

    def peek(self) -> int | None:
        """Tick of the next live event, or None when nothing is pending."""
        heap = self._heap
        while heap and heap[0][3] is _cancelled:
            heapq.heappop(heap)
            self._dropped += 1
        return heap[0][0] if heap else None

    @property
    def idle(self) -> bool:
        return self.peek() is None

    def only_housekeeping(self) -> bool:
        """Nothing pending but housekeeping (true when idle too): no pending event does work."""
        return all(e[3] is _cancelled or e.housekeeping for e in self._heap)

    def quiet(self, max_pending: int, brief: Collection[Callable[..., Any]] = ()) -> bool:
        """At most `max_pending` events pending, none of which does work: each is housekeeping
        or cancelled, or calls one of `brief` (functions the caller knows to finish at once and
        to start no work). A longer list answers False without being looked through."""
        heap = self._heap
        if len(heap) > max_pending:
            return False
        for ev in heap:
            fn = ev[3]
            if fn is _cancelled or ev.housekeeping:
                continue
            if getattr(fn, "__func__", fn) not in brief:
                return False
        return True

    def step(self) -> bool:
        """Fire the next live event. False when none is pending."""
        heap = self._heap
        while heap:
            tick, _, _, fn, args = heapq.heappop(heap)
            if fn is _cancelled:
                self._dropped += 1
                continue
            self.now = tick
            fn(*args)
            if self._slice_hook is not None:
                self._slice_count()
            return True
        return False

    def run_until(self, tick: int) -> None:
        """Fire every event due at or before `tick`, then set the clock to `tick`."""
        heap = self._heap
        while heap and heap[0][0] <= tick:
            t, _, _, fn, args = _pop(heap)
            if fn is _cancelled:
                self._dropped += 1
                continue
            self.now = t
            fn(*args)
            if self._slice_hook is not None:
                self._slice_count()
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
        last = _NO_LIMIT if limit is None else limit
        # The head is read once and popped only when it fires: a host waits through this
        # loop for every packet.
        while pred():
            if not heap:
                return False
            ev = heap[0]
            t, _, _, fn, args = ev
            if fn is _cancelled:
                pop(heap)
                self._dropped += 1
                continue
            if t > last:
                return False
            if pause_housekeeping and ev.housekeeping:
                return True
            pop(heap)
            self.now = t
            fn(*args)
            if self._slice_hook is not None:
                self._slice_count()
        return True

    def run_while_epoch(self, mem: Any, epoch: int, limit: int) -> bool:
        """`run_while(lambda: mem.store_epoch == epoch, limit)` without a call per event: a
        spinning host's wait for any checked store (System.host_step), once per packet."""
        if self._slice_hook is not None:
            return self._run_while_epoch_sliced(mem, epoch, limit)
        # No slice hook: nothing to count after each event. The head is popped at once and
        # pushed back in the one case it must stay (past the limit): the same order.
        heap = self._heap
        while mem.store_epoch == epoch:
            try:
                t, _, _, fn, args = ev = _pop(heap)
            except IndexError:  # ran dry (no test of the heap per event)
                return False
            if fn is _cancelled:
                self._dropped += 1
                continue
            if t > limit:
                _push(heap, ev)
                return False
            self.now = t
            fn(*args)
        return True

    def _run_while_epoch_sliced(self, mem: Any, epoch: int, limit: int) -> bool:
        return self.run_while(lambda: mem.store_epoch == epoch, limit)

    def pending(self) -> int:
        return sum(1 for e in self._heap if e[3] is not _cancelled)
