"""Trace collection: a timeline of every layer, exported as Perfetto/Chrome trace JSON.

Events carry integer picosecond timestamps inside the model (DESIGN: convert only at the
edges); export converts to microseconds as the Chrome trace event format expects. Tracks are
named by layer ("rocr", "roct", "kfd", "CP", "queue 3", "CU 12"), one thread each, grouped
into processes by their prefix, so Perfetto shows one row per layer, queue and CU.
"""

from __future__ import annotations

import json
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
    if track.startswith("queue") or track in ("CP", "dispatcher", "HWS", "SDMA"):
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
        super().append(item)

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


class Tracer:
    def __init__(self, enabled: bool = True, max_events: int = DEFAULT_TRACE_EVENTS) -> None:
        self.enabled = enabled
        self.events = RingLog(max_events)
        self._flow_id = 0

    @property
    def max_events(self) -> int:
        return self.events.maxlen

    @max_events.setter
    def max_events(self, n: int) -> None:
        self.events.maxlen = n

    @property
    def dropped(self) -> int:
        """The oldest events discarded to keep at most `max_events`."""
        return self.events.dropped

    def _add(self, ev: TraceEvent) -> None:
        events = self.events
        if len(events) < events.maxlen:
            _list_append(events, ev)  # RingLog.append without its call: a dozen per packet
        else:
            events.append(ev)

    def instant(
        self, track: str, name: str, ts: int, args: dict | None = None, cat: str = ""
    ) -> None:
        if self.enabled:
            events = self.events
            ev = TraceEvent("i", track, name, ts, 0, args, cat)
            if len(events) < events.maxlen:
                _list_append(events, ev)
            else:
                events.append(ev)

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
            self._add(TraceEvent("X", track, name, ts, dur, args, cat))

    def new_flow(self) -> int:
        self._flow_id += 1
        return self._flow_id

    def flow(self, track: str, name: str, ts: int, flow_id: int, step: str) -> None:
        """A flow arrow endpoint: step is 's' (start), 't' (step) or 'f' (finish)."""
        if self.enabled:
            self._add(TraceEvent(step, track, name, ts, 0, None, "flow", flow_id))

    def clear(self) -> None:
        self.events.clear()

    def to_chrome(self) -> dict[str, Any]:
        """The Chrome trace event JSON object (Perfetto opens it)."""
        pids: dict[str, int] = {}
        tids: dict[str, tuple[int, int]] = {}
        out: list[dict[str, Any]] = []
        for ev in self.events:
            key = ev.track
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
            pid, tid = tids[key]
            d: dict[str, Any] = {
                "ph": ev.ph,
                "name": ev.name,
                "pid": pid,
                "tid": tid,
                "ts": ev.ts / PS_PER_US,
            }
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
        return {"traceEvents": out, "displayTimeUnit": "ns"}

    def dumps(self) -> str:
        return json.dumps(self.to_chrome(), sort_keys=True, default=str)
