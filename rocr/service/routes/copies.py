"""Copies and fills: hsa_amd_memory_async_copy, hsa_memory_copy, hsa_amd_memory_fill,
hsa_amd_memory_lock/unlock, hsa_amd_profiling_async_copy_enable and
hsa_amd_profiling_get_async_copy_time. Each runs the local runtime's method on the system
(SDMA queues or blit kernels, exactly as a local program)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from rocr.service.deps import ERRORS, PREFIX, System
from rocr.service.emulation import EmulatedRoute
from rocr.service.schemas import Request

router = APIRouter(prefix=PREFIX, tags=["copies"], responses=ERRORS, route_class=EmulatedRoute)

_ADDR = Field(ge=0, lt=1 << 64)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AsyncCopy(Request):
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


class MemoryCopy(Request):
    dst: int = _ADDR
    src: int = _ADDR
    size: int = Field(ge=0, lt=1 << 64)


class MemoryFill(Request):
    ptr: int = _ADDR
    value: int = Field(ge=0, lt=1 << 32)
    count: int = Field(ge=0, lt=1 << 62)


class MemoryLock(Request):
    buffer: int = _ADDR
    agents: list[int] | None = None


class CopyProfiling(Request):
    enable: bool = True


class CopyTime(_Model):
    start_ns: float
    end_ns: float


@router.post("/copies", status_code=201)
def async_copy(body: AsyncCopy, s: System) -> AsyncCopyStarted:
    """hsa_amd_memory_async_copy: host<->device on an SDMA queue, device<->device (or with
    HSA_ENABLE_SDMA=0) as a blit kernel; the completion signal is decremented when done."""
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


@router.post("/memory-copy", status_code=204)
def memory_copy(body: MemoryCopy, s: System) -> Response:
    """hsa_memory_copy: synchronous."""
    with s.use() as rt:
        rt.memory_copy(body.dst, body.src, body.size)
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
