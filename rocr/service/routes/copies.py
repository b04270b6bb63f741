"""Copies and fills: hsa_amd_memory_async_copy, hsa_memory_copy, hsa_amd_memory_fill,
hsa_amd_memory_lock/unlock, hsa_amd_profiling_async_copy_enable and
hsa_amd_profiling_get_async_copy_time. Each runs the local runtime's method on the system
(SDMA queues or blit kernels, exactly as a local program)."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request, Response
from pydantic import BaseModel, ConfigDict, Field

from rocr.copy import find_buffer
from rocr.service import emulation
from rocr.service.deps import ERRORS, PREFIX, System
from rocr.service.emulation import EmulatedRoute, EmulatedRouter
from rocr.service.errors import ApiError
from rocr.service.schemas import Request as Body
from rocr.service.systems import Cancelled, ServedSystem, Watch
from rocr.status import Status

router = EmulatedRouter(prefix=PREFIX, tags=["copies"], responses=ERRORS, route_class=EmulatedRoute)

_ADDR = Field(ge=0, lt=1 << 64)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AsyncCopy(Body):
    """hsa_amd_memory_async_copy's arguments, in C order (agents by node)."""

    dst: int = _ADDR
    dst_agent: int = Field(ge=0)
    src: int = _ADDR
    src_agent: int = Field(ge=0)
    size: int = Field(ge=0, lt=1 << 64)
    deps: list[int] = Field(default_factory=list, max_length=64)
    completion_signal: int | None = Field(
        default=None, description="a signal handle; none: the system creates one (at 1)"
    )


class AsyncCopyStarted(_Model):
    signal: int  # the completion signal's handle
    target: int  # the value the signal reaches when the copy is done
    engine: str  # "sdma", "blit kernel" or "none"


class MemoryCopy(Body):
    dst: int = _ADDR
    src: int = _ADDR
    size: int = Field(ge=0, lt=1 << 64)


class MemoryFill(Body):
    ptr: int = _ADDR
    value: int = Field(ge=0, lt=1 << 32)
    count: int = Field(ge=0, lt=1 << 62)


class MemoryLock(Body):
    buffer: int = _ADDR
    agents: list[int] | None = None


class CopyProfiling(Body):
    enable: bool = True


class CopyTime(_Model):
    start_ns: float
    end_ns: float


@router.post("/copies", status_code=201)
def async_copy(body: AsyncCopy, s: System) -> AsyncCopyStarted:
    """hsa_amd_memory_async_copy: host<->device and GPU<->GPU (peer, over XGMI or PCIe) on an
    SDMA queue, within one GPU (or with HSA_ENABLE_SDMA=0) as a blit kernel; the completion
    signal is decremented when done."""
    with s.use() as rt:
        deps = [s.signal(h) for h in body.deps]
        done = None if body.completion_signal is None else s.signal(body.completion_signal)
        if done is None:
            s.check_signal_room(True)
        h = rt.memory_async_copy(
            body.dst,
            s.agent(body.dst_agent),
            body.src,
            s.agent(body.src_agent),
            body.size,
            deps,
            done,
        )
        s.add_signal(h.signal)
        return AsyncCopyStarted(signal=h.signal.handle, target=h._target, engine=h.engine)


# A synchronous copy larger than this is made as consecutive copies of at most this many
# bytes, between which the request gives up its turn to others queued on the system, and stops
# when its client hung up or the system is cancelled. Host-to-host copies run no device events
# (the engine's slice hook never sees them): ~90 ms a MiB measured on a loaded 2-core machine,
# so a 128 MiB copy (max_memory_per_system) would hold its thread for ~12 s in one piece.
COPY_SLICE_BYTES = 4 << 20


@dataclass
class _CopyState:
    done: int = 0  # bytes copied so far
    checked: bool = False


def _copy_slice(watch: Watch, s: ServedSystem, body: MemoryCopy, st: _CopyState) -> bool:
    """Copy on in the system's turn: True once every byte is copied, False when the slice
    ended first (another request is queued, or the client hung up)."""
    with s.use() as rt:
        if not st.checked:  # the whole range, once: as one hsa_memory_copy checks it
            find_buffer(rt, body.dst, "dst", body.size)
            find_buffer(rt, body.src, "src", body.size)
            st.checked = True
        if body.size <= COPY_SLICE_BYTES:
            rt.memory_copy(body.dst, body.src, body.size)
            st.done = body.size
            return True
        while st.done < body.size:
            if s.cancelled is not None:
                raise Cancelled(s.cancelled)
            if st.done and (watch.abandoned or s.queued > 0):
                return False
            n = min(COPY_SLICE_BYTES, body.size - st.done)
            rt.memory_copy(body.dst + st.done, body.src + st.done, n)
            st.done += n
        return True


@router.post("/memory-copy", status_code=204)
async def memory_copy(body: MemoryCopy, s: System, request: Request) -> Response:
    """hsa_memory_copy: synchronous. A copy of more than 4 MiB goes in pieces of 4 MiB
    between which other requests on the system are served; it stops (leaving the bytes copied
    so far) when its client hangs up or the system is deleted."""
    st = _CopyState()
    while not await emulation.watched(s, request, _copy_slice, s, body, st):
        if await request.is_disconnected():
            raise ApiError(409, Status.ERROR, "the client went away during the copy")
    return Response(status_code=204)


@router.post("/memory-fill", status_code=204)
def memory_fill(body: MemoryFill, s: System) -> Response:
    """hsa_amd_memory_fill: `count` 32-bit words of `value` at `ptr`."""
    with s.use() as rt:
        rt.memory_fill(body.ptr, body.value, body.count)
    return Response(status_code=204)


@router.post("/memory-lock")
def memory_lock(body: MemoryLock, s: System) -> int:
    """hsa_amd_memory_lock: map a host buffer for the agents; returns the agent address."""
    with s.use() as rt:
        agents = None if body.agents is None else [s.agent(n) for n in body.agents]
        return rt.memory_lock(s.buffer(body.buffer), agents)


@router.post("/memory-unlock", status_code=204)
def memory_unlock(body: MemoryLock, s: System) -> Response:
    """hsa_amd_memory_unlock."""
    with s.use() as rt:
        rt.memory_unlock(s.buffer(body.buffer))
    return Response(status_code=204)


@router.put("/profiling/async-copy", status_code=204)
def profiling_async_copy(body: CopyProfiling, s: System) -> Response:
    """hsa_amd_profiling_async_copy_enable."""
    with s.use() as rt:
        rt.profiling_async_copy_enable(body.enable)
    return Response(status_code=204)


@router.get("/signals/{handle}/async-copy-time")
def async_copy_time(handle: int, s: System) -> CopyTime:
    """hsa_amd_profiling_get_async_copy_time: (start, end) in ns of the system clock."""
    with s.use(counts=False) as rt:
        start, end = rt.async_copy_time(s.signal(handle))
        return CopyTime(start_ns=start, end_ns=end)
