"""Buffers: hsa_amd_memory_pool_allocate/free, hsa_amd_agents_allow_access, and the host's
reads and writes of buffer bytes (what `buffer.view()` does locally)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Request, Response

import rocr
from rocr.service import emulation
from rocr.service.deps import (
    ERRORS,
    OCTET,
    PREFIX,
    System,
    body_kind,
    dual_body,
    json_body,
    octet_or,
    responses,
    wants_octet,
)
from rocr.service.emulation import EmulatedRoute, EmulatedRouter, light
from rocr.service.errors import limit_error
from rocr.service.schemas import (
    AllowAccess,
    BufferBytes,
    BufferCreate,
    BufferInfo,
    BufferWrite,
    BufferWritten,
)
from rocr.service.systems import ServedSystem

router = EmulatedRouter(
    prefix=PREFIX, tags=["buffers"], responses=ERRORS, route_class=EmulatedRoute
)

# A write this small is copied in the event loop when the device is quiet (emulation.light):
# ~0.1 ms for 1 MiB; a bigger one goes to the emulation executor.
LIGHT_WRITE_BYTES = 1 << 20


def buffer_info(s: ServedSystem, b: rocr.Buffer) -> BufferInfo:
    return BufferInfo(
        address=b.address,
        size=b.size,
        pool=s.pool_id(b.pool),
        agents=s.buffer_agents.get(b.address, []),
        host_accessible=not b.pool.vram,
    )


@router.post("/buffers", status_code=201, responses=responses(507))
@light
def allocate(body: BufferCreate, s: System) -> BufferInfo:
    """hsa_amd_memory_pool_allocate from pool `pool`."""
    with s.use():
        pool = s.pool(body.pool)
        nbytes = s.buffer_bytes(body.size)
        if pool.alloc_allowed and 0 < body.size <= pool.size:
            s.ensure_room(nbytes)  # what the runtime itself refuses, it refuses first
        buf = pool.allocate(body.size)
        s.charge("buffer", buf.address, nbytes)
        s.buffers[buf.address] = buf
        return buffer_info(s, buf)


@router.get("/buffers")
@light
def list_buffers(s: System) -> list[BufferInfo]:
    with s.use(counts=False):
        return [buffer_info(s, b) for b in s.buffers.values()]


@router.get("/buffers/{address}")
@light
def get_buffer(address: int, s: System) -> BufferInfo:
    with s.use(counts=False):
        return buffer_info(s, s.buffer(address))


@router.delete("/buffers/{address}", status_code=204)
@light
def free(address: int, s: System) -> Response:
    """hsa_amd_memory_pool_free."""
    with s.use():
        buf = s.buffer(address)
        buf.free()
        del s.buffers[address]
        s.buffer_agents.pop(address, None)
        s.refund("buffer", address)
    return Response(status_code=204)


@router.post("/buffers/{address}/allow-access")
@light
def allow_access(address: int, body: AllowAccess, s: System) -> BufferInfo:
    """hsa_amd_agents_allow_access: map the buffer into these agents' page tables."""
    with s.use() as rt:
        buf = s.buffer(address)
        agents = [s.agent(n) for n in body.agents]
        rt.allow_access(agents, buf)
        have = s.buffer_agents.setdefault(address, [])
        have.extend(a.node for a in agents if a.is_gpu and a.node not in have)
        return buffer_info(s, buf)


def _small_read(s: ServedSystem, address: int, offset: int, size: int | None, **_: object) -> bool:
    """A read of at most LIGHT_WRITE_BYTES (the buffer's size looked up without the lock:
    it only decides where the read runs)."""
    if size is None:
        buf = s.buffers.get(address)
        size = buf.size - offset if buf is not None else 0
    return size <= LIGHT_WRITE_BYTES


@router.get(
    "/buffers/{address}/bytes",
    response_model=BufferBytes,
    responses=octet_or(BufferBytes, "the bytes: raw with Accept: application/octet-stream"),
)
@light(when=_small_read)
def read_bytes(
    address: int,
    s: System,
    request: Request,
    offset: Annotated[int, Query(ge=0, le=1 << 48)] = 0,
    size: Annotated[int | None, Query(ge=0, le=1 << 48, description="default: to the end")] = None,
):
    """The host reads buffer bytes (as through `buffer.view()`)."""
    with s.use(counts=False):
        buf = s.buffer(address)
        n = max(0, buf.size - offset) if size is None else size
        lim = s.limits.max_body_bytes
        if n > lim:
            raise limit_error(
                422, "max_body_bytes", lim, f"reading {n} bytes at once; read in pieces"
            )
        data = buf.read(offset, n)
    if wants_octet(request):
        return Response(content=data, media_type=OCTET)
    # Encoded here, in the emulation executor for a big read, rather than by FastAPI in the
    # event loop (base64 and JSON of 16 MiB take ~50 ms).
    body = BufferBytes(offset=offset, size=len(data), data=data).model_dump_json()
    return Response(content=body, media_type="application/json")


@router.put(
    "/buffers/{address}/bytes",
    openapi_extra=dual_body("BufferWrite", "raw bytes (at ?offset=) or JSON with base64 data"),
    responses=responses(415),
)
async def write_bytes(
    address: int,
    s: System,
    request: Request,
    offset: Annotated[int, Query(ge=0, le=1 << 48, description="for a raw body")] = 0,
) -> BufferWritten:
    """The host writes buffer bytes (as through `buffer.view()`)."""
    if body_kind(request) == "octet":
        data = await request.body()
    else:
        req = await json_body(request, BufferWrite)
        data, offset = req.data, req.offset

    def write() -> BufferWritten:
        with s.use():
            s.buffer(address).write(data, offset)
        return BufferWritten(offset=offset, size=len(data))

    if len(data) <= LIGHT_WRITE_BYTES:
        return await emulation.in_turn_light(s, write)
    return await emulation.in_turn(s, write)
