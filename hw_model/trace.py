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


class Tracer:
    def __init__(self, enabled: bool = True, max_events: int = 2_000_000) -> None:
        self.enabled = enabled
        self.max_events = max_events
        self.events: list[TraceEvent] = []
        self.dropped = 0
        self._flow_id = 0

    def _add(self, ev: TraceEvent) -> None:
        if len(self.events) < self.max_events:
            self.events.append(ev)
        else:
            self.dropped += 1

    def instant(
        self, track: str, name: str, ts: int, args: dict | None = None, cat: str = ""
    ) -> None:
        if self.enabled:
            self._add(TraceEvent("i", track, name, ts, 0, args, cat))

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
        self.dropped = 0

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
