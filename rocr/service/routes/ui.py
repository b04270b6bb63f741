"""The live view: `/ui`, a static page (no build step, no external scripts) that draws one
system from the inspection endpoints, and the two routes it needs beyond them.

- `GET /v1/systems/{id}/view`: one snapshot for a frame of the page — each queue's ring (the
  header type of every slot, read/write/doorbell indices), the HQD slots and the queue each
  holds, the CUs with their resident waves, the signals, the clock and the newest trace events.
  The same state the inspection routes give piece by piece, read at one instant.
- `POST /v1/systems/{id}/step`: run the simulation to its next event (every event due at that
  tick), as a debugger's single step; the page's play button repeats it.

The page reads the system id and its bearer token from the URL fragment (`#system=..&token=..`),
which a browser never sends to the server, and calls the API with `Authorization: Bearer`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

import rocr
from hw_model import aql
from rocr.service import emulation
from rocr.service.deps import ERRORS, PREFIX, System
from rocr.service.emulation import CheckedRoute, EmulatedRoute, EmulatedRouter
from rocr.service.errors import not_found
from rocr.service.routes.inspect import _clock, _machine
from rocr.service.routes.queues import _type_name, queue_info
from rocr.service.routes.signals import signal_info
from rocr.service.schemas import Clock, QueueInfo, Request, SignalInfo
from rocr.service.systems import ServedSystem
from rocr.status import Status

STATIC = Path(__file__).resolve().parent.parent / "static"

# Slots of a ring the snapshot shows: a whole ring up to this size, else this many slots from
# just before the read index (a 131072-packet ring would be 8 MiB of headers a frame).
MAX_RING_SLOTS = 256
RECENT_EVENTS = 12  # trace events a frame shows: the last step's work fits (a guess)
MAX_STEP_TICKS = 10_000  # ticks one step request may cover; bounds one request's work

page = APIRouter(tags=["inspection"], route_class=CheckedRoute)
router = EmulatedRouter(
    prefix=PREFIX, tags=["inspection"], responses=ERRORS, route_class=EmulatedRoute
)


@page.get("/ui", include_in_schema=False)
def ui() -> FileResponse:
    """The live view's page; it asks for nothing until it has a system id and token."""
    return FileResponse(STATIC / "ui.html", media_type="text/html")


@page.get("/ui/{name}", include_in_schema=False)
def ui_asset(name: str) -> FileResponse:
    path = STATIC / name
    if name not in {"ui.js", "ui.css"} or not path.is_file():
        raise not_found(Status.ERROR_INVALID_ARGUMENT, f"no UI file {name!r}")
    kind = "text/javascript" if name.endswith(".js") else "text/css"
    return FileResponse(path, media_type=kind)


class RingSlot(BaseModel):
    slot: int
    index: int = Field(description="the packet index whose slot this is (latest lap)")
    type: str = Field(description="the header's packet type (INVALID once retired)")
    barrier: bool


class RingView(QueueInfo):
    kfd_state: str | None = Field(None, description="the HW scheduler's state of the queue")
    hqd: int | None = Field(None, description="the HQD slot holding the queue, if mapped")
    read_dispatch_id: int | None = Field(None, description="packets the CP has retired")
    inflight: list[str] = Field(default_factory=list)
    blocked_on: dict[str, Any] | None = None
    first_slot: int = Field(description="the first slot in `slots` (all of a small ring: 0)")
    slots: list[RingSlot]


class GpuView(BaseModel):
    node: int
    name: str
    policy: str
    hqds: list[dict[str, Any]] = Field(
        description="HQD slots: hqd, pasid, queue_id, state; own: a queue of this system's process"
    )
    cus: list[dict[str, Any]] = Field(description="per CU: resident workgroups, waves per SIMD")
    active_kernels: list[Any]


class SystemView(BaseModel):
    clock: Clock
    stalled: bool = Field(description="nothing pending does work and no queue can go on")
    queues: list[RingView]
    gpus: list[GpuView]
    signals: list[SignalInfo]
    events: list[dict[str, Any]] = Field(description="the newest trace events, oldest first")


class StepRequest(Request):
    """Run to the next event, `ticks` times: each fires every event due at its tick."""

    ticks: int = Field(1, ge=1, le=MAX_STEP_TICKS, description="next-event ticks to run")


class StepResult(BaseModel):
    fired: int = Field(description="engine events fired")
    stalled: bool = Field(description="nothing pending does work: stepping further is idle")
    clock: Clock


def _ring(q: rocr.Queue, runlist: dict[int, dict[str, Any]], hqd_of: dict[int, int]) -> RingView:
    info = queue_info(q)
    size = q.size
    wi, ri = info.write_index, info.read_index
    if size <= MAX_RING_SLOTS:
        first, count = 0, size
    else:
        first, count = max(0, ri - 8) % size, MAX_RING_SLOTS
    slots = []
    for k in range(count):
        slot = (first + k) % size
        # The packet index of the latest lap that reached this slot (below the write index).
        index = wi - 1 - ((wi - 1 - slot) % size) if wi > 0 else slot
        if index < 0:
            index = slot
        header = int.from_bytes(q.packet_bytes(index)[0:2], "little")
        f = aql.header_fields(header)
        slots.append(RingSlot(slot=slot, index=index, type=_type_name(f.type), barrier=f.barrier))
    hw = runlist.get(info.queue_id, {})
    return RingView(
        **info.model_dump(),
        kfd_state=hw.get("state"),
        hqd=hqd_of.get(info.queue_id),
        read_dispatch_id=hw.get("read_dispatch_id"),
        inflight=list(hw.get("inflight", [])),
        blocked_on=hw.get("blocked_on"),
        first_slot=first,
        slots=slots,
    )


def snapshot(s: ServedSystem) -> SystemView:
    rt = s.rt
    sysm = _machine(s)
    rt.poll_async()
    # This process's queues: KFD queue ids are per process (amdkfd's pqm), and processes
    # attached to the same machine share its HQDs.
    pasid = getattr(getattr(rt.transport, "process", None), "pasid", None)
    runlist: dict[int, dict[str, Any]] = {}
    hqd_of: dict[int, int] = {}
    gpus = []
    for g in sysm.gpus:
        d = g.scheduler.describe()
        for e in d["runlist"]:
            if pasid in (None, e["pasid"]):
                runlist.setdefault(e["queue_id"], e)
        for h in d["slots"]:
            if h["queue_id"] is not None and pasid in (None, h["pasid"]):
                hqd_of.setdefault(h["queue_id"], h["hqd"])
        state = g.state()
        gpus.append(
            GpuView(
                node=g.node,
                name=g.spec.name,
                policy=d["policy"],
                hqds=[
                    {**h, "own": h["queue_id"] is not None and pasid in (None, h["pasid"])}
                    for h in d["slots"]
                ],
                cus=g.dispatcher.occupancy(),
                active_kernels=state.get("active_kernels", []),
            )
        )
    log = sysm.tracer.events
    first = max(log.dropped, log.total - RECENT_EVENTS)
    return SystemView(
        clock=_clock(s),
        stalled=sysm.stalled(),
        queues=[_ring(q, runlist, hqd_of) for q in s.queues.values()],
        gpus=gpus,
        signals=[signal_info(x) for x in s.signals.values()],
        events=[e.as_dict() for e in log.since(first, RECENT_EVENTS)],
    )


@router.get("/view")
def view(s: System) -> SystemView:
    """Everything the live view draws, read at one instant: rings, HQDs, CUs, signals."""
    with s.use(counts=False):
        return snapshot(s)


def _step(s: ServedSystem, ticks: int) -> StepResult:
    with s.use() as rt:
        sysm = _machine(s)
        eng = sysm.engine
        fired = 0
        for _ in range(ticks):
            # As the run route's until_idle: a rotation of queues none of which can run is
            # not a next event worth stopping at.
            if sysm.stalled():
                break
            t = eng.peek()
            if t is None:
                break
            before = eng.events_fired
            eng.run_until(t)  # every event due at that tick, the ones it schedules there too
            fired += eng.events_fired - before
            sysm.host_now = max(sysm.host_now, eng.now)  # the host slept until the event
        rt.poll_async()
        return StepResult(fired=fired, stalled=sysm.stalled(), clock=_clock(s))


@router.post("/step")
async def step(s: System, body: StepRequest | None = None) -> StepResult:
    """Run to the next event: fire every event due at the engine's next tick (the host sleeps
    until then), `ticks` times, stopping early when nothing pending does work."""
    n = (body or StepRequest()).ticks
    return await emulation.in_turn(s, _step, s, n)
