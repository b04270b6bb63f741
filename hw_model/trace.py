"""Trace collection: a timeline of every layer, exported as Perfetto/Chrome trace JSON.

Events carry integer picosecond timestamps inside the model (DESIGN: convert only at the
edges); export converts to microseconds as the Chrome trace event format expects. Tracks are
named by layer ("rocr", "roct", "kfd", "CP", "queue 3", "CU 12"), one thread each, grouped
into processes by their prefix, so Perfetto shows one row per layer, queue and CU.

Recording is cheap and reading pays: the hot call sites (a dispatch's dozen and a half
events) append a raw tuple of values to the tracer's pending list, and the first read of
`Tracer.events` (or an export) makes their TraceEvents, names and args, in order (TraceLog).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from hw_model.engine import PS_PER_US


class TraceEvent:
    __slots__ = ("ph", "track", "name", "ts", "dur", "args", "cat", "flow")

    def __init__(
        self,
        ph: str,
        track: str,
        name: str,
        ts: int,
        dur: int = 0,
        args: dict | None = None,
        cat: str = "",
        flow: int | None = None,
    ) -> None:
        self.ph = ph
        self.track = track
        self.name = name
        self.ts = ts
        self.dur = dur
        self.args = args
        self.cat = cat
        self.flow = flow

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "ph": self.ph,
            "track": self.track,
            "name": self.name,
            "ts_ps": self.ts,
        }
        if self.ph == "X":
            d["dur_ps"] = self.dur
        if self.args:
            d["args"] = self.args
        if self.cat:
            d["cat"] = self.cat
        if self.flow is not None:
            d["flow"] = self.flow
        return d


def _group(track: str) -> str:
    """Perfetto process a track belongs to."""
    if track.startswith("CU"):
        return "GPU compute units"
    if track.startswith(("queue", "HQD", "SDMA")) or track in ("CP", "dispatcher", "HWS"):
        return "GPU command processor"
    if track in ("kfd",):
        return "KFD (kernel driver)"
    return "host"


# Retained trace events by default: ~64 MiB at the ~500 bytes an event measured with
# tracemalloc (16 events per empty-kernel dispatch), i.e. the last ~8,000 dispatches.
DEFAULT_TRACE_EVENTS = 1 << 17
# Retained kernel records (rocprofv3's kernel trace rows) by default (guess: enough for
# any lab or benchmark table; ~720 bytes a record measured with tracemalloc: ~23 MiB).
DEFAULT_KERNEL_RECORDS = 1 << 15


class RingLog(list):
    """A list that keeps only its newest `maxlen` items, as Perfetto's RING_BUFFER fill policy
    does: a long run keeps flat memory and the latest history. `dropped` counts the oldest
    items discarded, so `dropped + i` is item i's sequence number since the start."""

    def __init__(self, maxlen: int) -> None:
        super().__init__()
        self.maxlen = maxlen
        self.dropped = 0

    def append(self, item: object) -> None:
        if len(self) >= self.maxlen:
            # Drop an eighth at once so the cost of trimming is amortized per append.
            n = min(len(self), len(self) - self.maxlen + max(1, self.maxlen // 8))
            del self[:n]
            self.dropped += n
        _list_append(self, item)

    @property
    def total(self) -> int:
        """Items ever appended."""
        return self.dropped + len(self)

    def since(self, seq: int, limit: int | None = None) -> list:
        """Retained items from sequence number `seq` on (those already dropped are skipped)."""
        start = max(0, seq - self.dropped)
        return self[start:] if limit is None else self[start : start + limit]

    def clear(self) -> None:
        super().clear()
        self.dropped = 0


_list_append = list.append


class TraceLog(RingLog):
    """The tracer's RingLog of TraceEvents, filled lazily. A hot call site appends a raw
    record, `(make, ts, values...)`, to `pending` (one C call, nothing formatted); the first
    read of the log turns each into its TraceEvent(s) with `make(ts, values...)` and appends
    them in order, trimming as `RingLog.append` does, so what a reader sees is exactly what
    appending TraceEvents as they happened would have kept. A record holds values taken when
    it is made (ints, strings, tuples), or objects whose fields its `make` reads only if they
    are fixed by then (a KernelLaunch's name and ids, a finished WgRun). Tracer.instant and
    Tracer.complete queue their TraceEvent as is, so every record keeps its place in order."""

    def __init__(self, maxlen: int) -> None:
        super().__init__(maxlen)
        self.pending: list = []

    def flush(self) -> None:
        """Turn the pending records into TraceEvents (in order, as RingLog.append keeps them)."""
        pending = self.pending
        if not pending:
            return
        n = len(pending)
        records = pending[:n]
        del pending[:n]  # (not clear(): a record appended meanwhile stays for the next flush)
        for r in records:
            if type(r) is TraceEvent:
                self._keep(r)
            else:
                made = r[0](*r[1:])
                if type(made) is TraceEvent:
                    self._keep(made)
                else:  # one record standing for several consecutive events
                    for ev in made:
                        self._keep(ev)

    def _keep(self, ev: TraceEvent) -> None:
        n = _list_len(self)
        if n >= self.maxlen:  # RingLog.append's trim
            n = min(n, n - self.maxlen + max(1, self.maxlen // 8))
            del self[:n]
            self._dropped += n
        _list_append(self, ev)

    # Every way of reading the log flushes it first: a reader may hold the log across records.
    def __len__(self) -> int:
        self.flush()
        return _list_len(self)

    def __iter__(self):
        self.flush()
        return list.__iter__(self)

    def __reversed__(self):
        self.flush()
        return list.__reversed__(self)

    def __getitem__(self, i):
        self.flush()
        return list.__getitem__(self, i)

    def __contains__(self, item: object) -> bool:
        self.flush()
        return list.__contains__(self, item)

    def __eq__(self, other: object) -> bool:
        self.flush()
        return list.__eq__(self, other)

    __hash__ = None  # type: ignore[assignment]  # (a list's: defining __eq__ clears it)

    def __repr__(self) -> str:
        self.flush()
        return list.__repr__(self)

    def append(self, item: object) -> None:
        self.flush()
        self._keep(item)  # type: ignore[arg-type]

    @property
    def dropped(self) -> int:  # type: ignore[override]
        self.flush()
        return self._dropped

    @dropped.setter
    def dropped(self, n: int) -> None:
        self._dropped = n

    @property
    def total(self) -> int:
        self.flush()
        return self._dropped + _list_len(self)

    def since(self, seq: int, limit: int | None = None) -> list:
        self.flush()
        return RingLog.since(self, seq, limit)

    def clear(self) -> None:
        self.pending.clear()
        RingLog.clear(self)


_list_len = list.__len__


def marker_event(
    ts: int, make: Callable[..., tuple | list], values: tuple
) -> TraceEvent | list[TraceEvent]:
    """A host API marker (cat "api", at host time `ts`), `make(*values)` giving its track,
    name and args (a transport's `marker`: the runtime's markers of a dispatch), or a list of
    them for consecutive markers at that time."""
    made = make(*values)
    if type(made) is list:
        return [TraceEvent("i", t, n, ts, 0, a or None, "api") for t, n, a in made]
    track, name, args = made
    return TraceEvent("i", track, name, ts, 0, args or None, "api")


# Raw records waiting in a TraceLog before the tracer turns them into TraceEvents (bounding
# the memory of a trace nobody reads yet: ~100 bytes a record, guess; a round trip makes 15).
FLUSH_RECORDS = 1 << 12


class Tracer:
    def __init__(self, enabled: bool = True, max_events: int = DEFAULT_TRACE_EVENTS) -> None:
        self.enabled = enabled
        self._events = TraceLog(max_events)
        # A raw record, `(make, ts, values...)`, appended as is: the call sites of a round trip
        # use it (its name and args are formatted when the trace is read; see TraceLog). A
        # site that can log without end between reads (once a packet or a workgroup) flushes
        # the records when `pending` holds FLUSH_RECORDS.
        self.pending = self._events.pending
        self.log = self.pending.append
        self.flush = self._events.flush

    @property
    def events(self) -> TraceLog:
        """Every event kept so far (the newest `max_events`), as TraceEvents."""
        self._events.flush()
        return self._events

    @property
    def max_events(self) -> int:
        return self._events.maxlen

    @max_events.setter
    def max_events(self, n: int) -> None:
        self._events.flush()  # the records made so far are kept by the old limit
        self._events.maxlen = n

    @property
    def dropped(self) -> int:
        """The oldest events discarded to keep at most `max_events`."""
        self._events.flush()
        return self._events.dropped

    def instant(
        self, track: str, name: str, ts: int, args: dict | None = None, cat: str = ""
    ) -> None:
        if self.enabled:
            pending = self._events.pending
            _list_append(pending, TraceEvent("i", track, name, ts, 0, args, cat))
            if len(pending) >= FLUSH_RECORDS:
                self._events.flush()

    def complete(
        self,
        track: str,
        name: str,
        ts: int,
        dur: int,
        args: dict | None = None,
        cat: str = "",
    ) -> None:
        if self.enabled:
            pending = self._events.pending
            _list_append(pending, TraceEvent("X", track, name, ts, dur, args, cat))
            if len(pending) >= FLUSH_RECORDS:
                self._events.flush()

    def clear(self) -> None:
        self._events.clear()

    def to_chrome(self) -> dict[str, Any]:
        """The Chrome trace event JSON object (Perfetto opens it), with one flow per AQL
        packet (`dispatch_flows`) and the HQD tracks (`hqd_slices`) derived from the events:
        nothing is spent on them while the machine runs."""
        pids: dict[str, int] = {}
        tids: dict[str, tuple[int, int]] = {}
        out: list[dict[str, Any]] = []

        def ids(key: str) -> tuple[int, int]:
            if key not in tids:
                group = _group(key)
                if group not in pids:
                    pids[group] = len(pids) + 1
                    out.append(
                        {
                            "ph": "M",
                            "name": "process_name",
                            "pid": pids[group],
                            "args": {"name": group},
                        }
                    )
                tids[key] = (pids[group], len(tids) + 1)
                out.append(
                    {
                        "ph": "M",
                        "name": "thread_name",
                        "pid": pids[group],
                        "tid": tids[key][1],
                        "args": {"name": key},
                    }
                )
            return tids[key]

        events = list(self.events)
        flows = dispatch_flows(events)
        for pos, ev in enumerate(events):
            pid, tid = ids(ev.track)
            ts = ev.ts / PS_PER_US
            d: dict[str, Any] = {"ph": ev.ph, "name": ev.name, "pid": pid, "tid": tid, "ts": ts}
            if ev.cat:
                d["cat"] = ev.cat
            if ev.ph == "X":
                d["dur"] = ev.dur / PS_PER_US
            elif ev.ph == "i":
                d["s"] = "t"
            if ev.ph in ("s", "t", "f"):
                d["id"] = ev.flow
                d["bp"] = "e"
            if ev.args:
                d["args"] = ev.args
            out.append(d)
            # Right after the event it binds to: at equal timestamps Perfetto keeps file order,
            # and a flow step binds to the topmost slice open on its track.
            for fid, ph in flows.get(pos, ()):
                out.append(
                    {
                        "ph": ph,
                        "name": FLOW_NAME,
                        "cat": "flow",
                        "id": fid,
                        "pid": pid,
                        "tid": tid,
                        "ts": ts,
                        "bp": "e",
                    }
                )
        for track, name, start, dur, args in hqd_slices(events):
            pid, tid = ids(track)
            out.append(
                {
                    "ph": "X",
                    "name": name,
                    "cat": "hqd",
                    "pid": pid,
                    "tid": tid,
                    "ts": start / PS_PER_US,
                    "dur": dur / PS_PER_US,
                    "args": args,
                }
            )
        return {"traceEvents": out, "displayTimeUnit": "ns"}

    def dumps(self) -> str:
        return json.dumps(self.to_chrome(), sort_keys=True, default=str)


# -- flows and HQD tracks, derived at export ------------------------------------------------------

# Flows are the Trace Event Format's flow events ("Flow Events": ph "s"/"t"/"f" with an id;
# "bp": "e" binds the end to the enclosing slice, as s and t always are). The newer form
# (`bind_id` with `flow_in`/`flow_out` on the slice itself) is not used: Perfetto's JSON
# importer (json_trace_parser_impl.cc MaybeAddFlow) reads it on B, X, b and n events only, and
# most steps of a dispatch are instants. A v1 step binds to the topmost slice open on its track
# (flow_tracker.cc FlowTracker::Step -> SliceTracker::GetTopmostSliceOnTrack), so each is
# written right after its event, at its timestamp: Perfetto's sorter puts the duration events
# of a timestamp first and keeps file order among the rest (trace_sorter.h SlowOperatorLess),
# so the step follows its slice. Perfetto keys a v1 flow by (id, cat, name)
# (GetFlowIdForV1Event): every step carries the same name and category.
FLOW_NAME = "dispatch"


class _Flow:
    __slots__ = ("id", "queue", "index", "steps", "cus", "last_wg", "completed", "signal")

    def __init__(self, queue: int, index: int = -1) -> None:
        self.id = 0
        self.queue = queue
        self.index = index
        self.steps: list[int] = []  # positions of the events it binds to
        self.cus: set[str] = set()
        self.last_wg: tuple[int, int] | None = None  # (end, position) of the last workgroup
        self.completed = False
        self.signal = ""


def _int(text: str) -> int:
    """The number in an event name; -1 (no packet, queue or event has it) if there is none."""
    try:
        return int(text)
    except ValueError:
        return -1


def dispatch_flows(events: list[TraceEvent]) -> dict[int, list[tuple[int, str]]]:
    """One flow per AQL packet, chaining the events of its life across tracks, in time order:
    the rocr API call (`Queue.dispatch`) and the ioctls it made, `write packet i`, `ring
    doorbell`, the queue's `doorbell` and `fetch packet i`, the dispatcher's `launch`, the
    first workgroup on each CU and the last to finish, `retire i`, the `completion signal`,
    the CP's `interrupt signal_event`, the KFD's `event N signaled` and the host's `wait
    returns` on that signal. Steps are matched by (queue, packet index), then by the
    completion signal's address and the (pasid, event id) of its interrupt.

    Returns {position in `events`: [(flow id, phase)]}, phase "s", "t" or "f" (the Trace
    Event Format's flow start, step and end; ids count from 1 in time order)."""
    order = sorted(range(len(events)), key=lambda i: events[i].ts)  # stable: ties keep order
    flows: list[_Flow] = []
    by_packet: dict[tuple[int, int], _Flow] = {}
    unrung: dict[int, list[_Flow]] = {}  # written, no `ring doorbell` from the host yet
    unseen: dict[int, list[_Flow]] = {}  # rung, the queue has not seen the doorbell yet
    by_signal: dict[str, _Flow] = {}
    by_event: dict[tuple[object, int], _Flow] = {}
    api: _Flow | None = None  # the host is inside Queue.dispatch for this flow
    last_done: tuple[int, _Flow] | None = None  # (ts, flow) of the latest completion signal

    def new(queue: int, index: int = -1) -> _Flow:
        f = _Flow(queue, index)
        flows.append(f)
        return f

    for pos in order:
        ev = events[pos]
        track, name, args = ev.track, ev.name, ev.args or {}
        if ev.ph not in ("i", "X"):
            continue
        if track == "rocr":
            if name == "Queue.dispatch":
                api = new(args.get("queue", -1))
                api.steps.append(pos)
            elif name.startswith("write packet "):
                q, i = args.get("queue", -1), _int(name[13:])
                f = api if api is not None and api.queue == q else new(q)
                api = None
                f.index = i
                f.steps.append(pos)
                by_packet[(q, i)] = f
                unrung.setdefault(q, []).append(f)
            elif name == "ring doorbell":
                q, v = args.get("queue", -1), args.get("value", -1)
                keep = []
                for f in unrung.get(q, ()):
                    if f.index <= v:
                        f.steps.append(pos)
                        unseen.setdefault(q, []).append(f)
                    else:
                        keep.append(f)
                unrung[q] = keep
            elif name == "wait returns":
                f = by_signal.get(args.get("signal", ""))
                if f is not None and f.completed:
                    f.steps.append(pos)
                    del by_signal[f.signal]
        elif track == "kfd":
            if ev.cat == "ioctl" and api is not None:
                api.steps.append(pos)
            elif name.startswith("event ") and name.endswith(" signaled"):
                f = by_event.pop((args.get("pasid"), _int(name[6:-9])), None)
                # A host that polled the value woke before the KFD handled the interrupt:
                # the wake-up ended that flow.
                if f is not None and f.signal in by_signal:
                    f.steps.append(pos)
        elif track.startswith("queue "):
            q = _int(track[6:])
            if name == "doorbell":
                v = args.get("value", -1)
                keep = []
                for f in unseen.get(q, ()):
                    if f.index <= v:
                        f.steps.append(pos)
                    else:
                        keep.append(f)
                unseen[q] = keep
            elif name.startswith("fetch packet "):
                f = by_packet.get((q, _int(name[13:])))
                if f is not None:
                    f.steps.append(pos)
            elif name.startswith("retire "):
                f = by_packet.pop((q, _int(name[7:])), None)
                if f is None:
                    continue
                if f.last_wg is not None:
                    f.steps.append(f.last_wg[1])
                f.steps.append(pos)
                sig = args.get("completion_signal", "0x0")
                if sig != "0x0":
                    f.signal = sig
                    by_signal[sig] = f
            elif name == "completion signal":
                f = by_signal.get(args.get("signal", ""))
                if f is not None and not f.completed:
                    f.completed = True
                    f.steps.append(pos)
                    last_done = (ev.ts, f)
        elif track == "dispatcher":
            if name.startswith("launch "):
                f = by_packet.get((args.get("queue", -1), args.get("dispatch_id", -1)))
                if f is not None:
                    f.steps.append(pos)
        elif track.startswith("CU"):
            if ev.cat == "wg":
                f = by_packet.get((args.get("queue", -1), args.get("dispatch_id", -1)))
                if f is None:
                    continue
                if track not in f.cus:
                    f.cus.add(track)
                    f.steps.append(pos)
                end = ev.ts + ev.dur
                if f.last_wg is None or end >= f.last_wg[0]:
                    f.last_wg = (end, pos)
        elif track == "CP" and name == "interrupt signal_event" and "sdma" not in args:
            # raise_signal_event posts it at the completion signal's tick, right after it.
            if last_done is not None and last_done[0] == ev.ts:
                f = last_done[1]
                f.steps.append(pos)
                by_event[(args.get("pasid"), args.get("event_id", -1))] = f
            last_done = None

    out: dict[int, list[tuple[int, str]]] = {}
    fid = 0
    for f in flows:
        steps = sorted(set(f.steps), key=lambda p: (events[p].ts, p))
        if len(steps) < 2:
            continue
        fid += 1
        f.id = fid
        for n, p in enumerate(steps):
            ph = "s" if n == 0 else "f" if n == len(steps) - 1 else "t"
            out.setdefault(p, []).append((fid, ph))
    return out


def hqd_slices(events: list[TraceEvent]) -> list[tuple[str, str, int, int, dict]]:
    """The queue in each HQD slot over time, from the HWS's map/unmap events: one slice
    (track "HQD n", name "queue q") per stay; a queue still mapped at the end of the trace
    stays until its last event. Returns (track, name, start, duration, args) in ps."""
    mapped: dict[int, tuple[int, dict]] = {}
    out: list[tuple[str, str, int, int, dict]] = []
    last = 0
    for ev in sorted(events, key=lambda e: e.ts):
        last = max(last, ev.ts + ev.dur)
        if ev.track != "HWS" or not ev.args or "hqd" not in ev.args:
            continue
        slot = ev.args["hqd"]
        if ev.name.startswith("map queue "):
            mapped[slot] = (ev.ts, ev.args)
        elif ev.name.startswith("unmap queue ") and slot in mapped:
            start, a = mapped.pop(slot)
            out.append((f"HQD {slot}", f"queue {a['queue']}", start, ev.ts - start, dict(a)))
    for slot, (start, a) in mapped.items():
        out.append((f"HQD {slot}", f"queue {a['queue']}", start, last - start, dict(a)))
    return out
