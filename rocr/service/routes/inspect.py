"""Inspection of every layer, and running the simulation forward.

KFD processes with their queues, doorbells and events; the runlist and which queues hold HQD
slots; CU occupancy; the trace (Perfetto/Chrome JSON, or raw events since an index) and stats.
Reading these changes nothing, so a person can watch a launch step by step between calls.
The KFD is reached through the runtime's transport (an in-process `/dev/kfd`), never imported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Query, Request, Response

from rocr.service import emulation
from rocr.service.deps import ERRORS, PREFIX, System
from rocr.service.emulation import EmulatedRoute, EmulatedRouter, light
from rocr.service.errors import ApiError, limit_error, not_found
from rocr.service.schemas import (
    Clock,
    KfdInfo,
    RunlistInfo,
    RunRequest,
    TraceEvents,
    TraceMarker,
)
from rocr.service.systems import TRACE_EVENT_BYTES, ServedSystem, SliceEnd, Watch
from rocr.status import Status

router = EmulatedRouter(
    prefix=PREFIX, tags=["inspection"], responses=ERRORS, route_class=EmulatedRoute
)

PS_PER_NS = 1000
RUN_UNTIL_IDLE_DEFAULT_PS = 10**13  # 10 simulated seconds: bounds a run whose device never idles


def _machine(s: ServedSystem) -> Any:
    sysm = s.rt.system
    if sysm is None:
        raise ApiError(409, Status.ERROR, "this system's machine is not in this server's process")
    return sysm


def _gpu(s: ServedSystem, node: int) -> Any:
    sysm = _machine(s)
    for g in sysm.gpus:
        if g.node == node:
            return g
    nodes = ", ".join(str(g.node) for g in sysm.gpus)
    raise not_found(Status.ERROR_INVALID_AGENT, f"no GPU with node {node}; GPU nodes: {nodes}")


def _clock(s: ServedSystem) -> Clock:
    sysm = _machine(s)
    return Clock(
        host_ps=sysm.host_now,
        device_ps=sysm.engine.now,
        host_ns=sysm.host_now / PS_PER_NS,
        device_ns=sysm.engine.now / PS_PER_NS,
        pending_events=sysm.engine.pending(),
    )


@router.get("/clock")
@light
def clock(s: System) -> Clock:
    """Simulated time: the host clock and the device engine's."""
    with s.use(counts=False):
        return _clock(s)


@dataclass
class _RunState:
    target_ps: int | None = None  # where the run ends (a duration) or stops at the latest


def _run_slice(watch: Watch, s: ServedSystem, body: RunRequest, st: _RunState) -> Clock | None:
    """Run on in the system's turn: the Clock once the run is done, None when its slice ended
    first (the host slept until the device's clock; call again to go on)."""
    with s.use() as rt:
        sysm = _machine(s)
        eng = sysm.engine
        if st.target_ps is None:
            st.target_ps = sysm.host_now + _run_ps(body)
        target = st.target_ps
        try:
            with s.sliced(watch):
                if body.until_idle:
                    # System.run_until_idle with a limit, also stopping when all that is
                    # left is the HW scheduler rotating queues none of which can run.
                    while eng.run_while(lambda: True, target, pause_housekeeping=True):
                        if sysm.stalled():
                            break
                        eng.step()
                    sysm.host_now = max(sysm.host_now, eng.now)
                else:
                    eng.run_until(target)  # System.run_for: the host sleeps the duration
                    sysm.host_now = max(sysm.host_now, target)
        except SliceEnd:
            return None
        rt.poll_async()
        return _clock(s)


def _run_ps(body: RunRequest) -> int:
    if body.until_idle:
        return RUN_UNTIL_IDLE_DEFAULT_PS if body.limit_ns is None else round(body.limit_ns * 1000)
    if body.duration_ps is not None:
        return body.duration_ps
    return round((body.duration_ns or 0) * PS_PER_NS)


@router.post("/run")
async def run(body: RunRequest, s: System, request: Request) -> Clock:
    """Run the simulation forward: the host sleeps `duration`, or until the device is idle
    (at most `limit_ns`). A run longer than the server's max_run_ns is refused; a run within
    it goes on in slices, between which other requests on the system are served, and stops
    when its client hangs up."""
    lim = s.limits.max_run_ns
    ns = _run_ps(body) / PS_PER_NS
    if body.until_idle and body.limit_ns is None:
        ns = min(ns, lim)  # the default bound of until_idle follows the server's limit
    if ns > lim:
        what = "limit_ns" if body.until_idle else "duration"
        raise limit_error(
            422, "max_run_ns", lim, f"{what} {ns:g} ns is longer than one run may cover"
        )
    if body.until_idle and body.limit_ns is None:
        body = body.model_copy(update={"limit_ns": ns})
    st = _RunState()
    while True:
        clock = await emulation.watched(s, request, _run_slice, s, body, st)
        if clock is not None:
            return clock
        if await request.is_disconnected():
            raise ApiError(409, Status.ERROR, "the client went away during the run")


@router.get("/kfd")
def kfd(s: System) -> KfdInfo:
    """The KFD's processes: their queues with doorbell offsets, events, buffer objects."""
    with s.use(counts=False) as rt:
        dev = getattr(rt.transport, "kfd", None)
        if dev is None:
            raise ApiError(409, Status.ERROR, "this runtime's KFD is not in this process")
        return KfdInfo(
            processes=[p.describe() for p in dev.processes.values()],
            runlist=dev.runlist_summary(),
        )


@router.get("/runlist")
def runlist(s: System) -> RunlistInfo:
    """The runlist (every registered queue) versus the HQD slots the HW scheduler mapped."""
    with s.use(counts=False) as rt:
        dev = getattr(rt.transport, "kfd", None)
        summary = dev.runlist_summary() if dev is not None else {}
        gpus = [{"node": g.node, **g.scheduler.describe()} for g in _machine(s).gpus]
        return RunlistInfo(runlist=summary, gpus=gpus)


@router.get("/gpus")
def gpus(s: System) -> list[dict[str, Any]]:
    """Each GPU's state: scheduler, CUs, kernels in flight."""
    with s.use(counts=False):
        return [g.state() for g in _machine(s).gpus]


@router.get("/gpus/{node}")
def gpu(node: int, s: System) -> dict[str, Any]:
    with s.use(counts=False):
        return _gpu(s, node).state()


@router.get("/gpus/{node}/cus")
def occupancy(node: int, s: System) -> list[dict[str, Any]]:
    """Per compute unit: resident workgroups and waves, free wave slots, VGPRs, LDS."""
    with s.use(counts=False):
        return _gpu(s, node).dispatcher.occupancy()


@router.get(
    "/trace",
    responses={200: {"content": {"application/json": {}}, "description": "Chrome trace JSON"}},
)
def trace(s: System) -> Response:
    """The trace so far as Perfetto/Chrome trace JSON (open it in ui.perfetto.dev)."""
    with s.use(counts=False):
        text = _machine(s).tracer.dumps()
    return Response(content=text, media_type="application/json")


@router.get("/trace/events")
def trace_events(
    s: System,
    since: Annotated[int, Query(ge=0, description="first event index")] = 0,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
) -> TraceEvents:
    """Trace events from sequence number `since` (ps timestamps): poll with `next` to follow
    a launch. The trace keeps its newest events (a ring buffer): numbers below `dropped` are
    gone, and a page starts at the oldest event still kept."""
    with s.use(counts=False):
        log = _machine(s).tracer.events
        first = max(since, log.dropped)
        evs = log.since(first, limit)
        return TraceEvents(
            events=[e.as_dict() for e in evs],
            next=first + len(evs),
            total=log.total,
            dropped=log.dropped,
        )


@router.post("/trace/markers", status_code=204)
def trace_marker(body: TraceMarker, s: System) -> Response:
    """Put a marker of your own into the trace, at the current host time. It counts
    against max_memory_per_system while the trace keeps it."""
    clash = {"track", "name"} & body.args.keys()
    if clash:
        raise ApiError(
            422, Status.ERROR_INVALID_ARGUMENT, f"marker args may not be called {sorted(clash)}"
        )
    nbytes = TRACE_EVENT_BYTES + len(body.track) + len(body.name)
    nbytes += sum(len(k) + (len(v) if isinstance(v, str) else 8) for k, v in body.args.items())
    with s.use() as rt:
        s.charge_marker(nbytes, lambda: rt.trace(body.track, body.name, **body.args))
    return Response(status_code=204)


@router.get("/stats")
def stats(s: System) -> dict[str, Any]:
    """Counters: simulated ticks, events, kernels, workgroups, bytes, context switches."""
    with s.use(counts=False):
        return _machine(s).stats()
