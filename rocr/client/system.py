"""`rt.system` of a remote runtime: the inspection a local `rt.system` offers, over HTTP.

Clocks, `stats()`, the tracer (`to_chrome()`, `dumps()`, `events`), per-GPU state, scheduler
and CU occupancy, running the clock forward; plus the KFD's view (`kfd()`, `runlist()`), which
a local program would read from the KFD object itself.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from rocr.service.schemas import Clock, KfdInfo, RunlistInfo, TraceEvents

if TYPE_CHECKING:
    from rocr.client.runtime import Runtime


class Tracer:
    def __init__(self, rt: Runtime) -> None:
        self._rt = rt

    def dumps(self) -> str:
        """The trace as Perfetto/Chrome JSON text (byte for byte what the server's tracer
        writes)."""
        return self._rt._request("GET", "/trace").text

    def to_chrome(self) -> dict[str, Any]:
        return json.loads(self.dumps())

    def events_since(self, since: int = 0) -> TraceEvents:
        return TraceEvents.model_validate(self._rt._get("/trace/events", params={"since": since}))

    @property
    def events(self) -> list[SimpleNamespace]:
        """Every event so far, with the attributes of hw_model's TraceEvent (ps timestamps)."""
        out: list[SimpleNamespace] = []
        since = 0
        while True:
            page = self.events_since(since)
            for d in page.events:
                out.append(
                    SimpleNamespace(
                        ph=d["ph"],
                        track=d["track"],
                        name=d["name"],
                        ts=d["ts_ps"],
                        dur=d.get("dur_ps", 0),
                        args=d.get("args"),
                        cat=d.get("cat", ""),
                        flow=d.get("flow"),
                    )
                )
            if not page.events or page.next >= page.total:
                return out
            since = page.next

    @property
    def dropped(self) -> int:
        return self.events_since(1 << 62).dropped


class _Scheduler:
    def __init__(self, gpu: Gpu) -> None:
        self._gpu = gpu

    def describe(self) -> dict[str, Any]:
        info = RunlistInfo.model_validate(self._gpu._rt._get("/runlist"))
        for g in info.gpus:
            if g.get("node") == self._gpu.node:
                return {k: v for k, v in g.items() if k != "node"}
        return {}


class _Dispatcher:
    def __init__(self, gpu: Gpu) -> None:
        self._gpu = gpu

    def occupancy(self) -> list[dict[str, Any]]:
        return self._gpu._rt._get(f"/gpus/{self._gpu.node}/cus")


class Gpu:
    def __init__(self, rt: Runtime, node: int) -> None:
        self._rt = rt
        self.node = node
        self.scheduler = _Scheduler(self)
        self.dispatcher = _Dispatcher(self)

    def state(self) -> dict[str, Any]:
        return self._rt._get(f"/gpus/{self.node}")


class System:
    def __init__(self, rt: Runtime) -> None:
        self._rt = rt
        self.tracer = Tracer(rt)
        self.gpus = [Gpu(rt, a.node) for a in rt.gpus]

    def clock(self) -> Clock:
        return Clock.model_validate(self._rt._get("/clock"))

    @property
    def host_now(self) -> int:
        return self.clock().host_ps

    @property
    def now_ps(self) -> int:
        return self.clock().host_ps

    @property
    def now_ns(self) -> float:
        return self.clock().host_ns

    @property
    def spec(self) -> dict[str, Any]:
        return self._rt._get("")["spec"]

    def stats(self) -> dict[str, Any]:
        return self._rt._get("/stats")

    def run_for(self, duration_ps: int) -> None:
        """The host sleeps `duration_ps`; the device runs alongside."""
        self._rt._post("/run", {"duration_ps": int(duration_ps)})

    def run_until_idle(self, limit_ps: int | None = None) -> None:
        """Let the device finish everything pending (host sleeps)."""
        limit = None if limit_ps is None else limit_ps / 1000
        self._rt._post("/run", {"until_idle": True, "limit_ns": limit})

    def kfd(self) -> KfdInfo:
        """The KFD's processes: queues with doorbell offsets, events; the runlist summary."""
        return KfdInfo.model_validate(self._rt._get("/kfd"))

    def runlist(self) -> RunlistInfo:
        """The runlist vs the HQD slots, per GPU."""
        return RunlistInfo.model_validate(self._rt._get("/runlist"))
