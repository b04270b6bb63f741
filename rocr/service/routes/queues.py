"""AQL queues: hsa_queue_create/destroy, the write/read indices, packets (structured JSON or
the raw 64 bytes), the doorbell, and the `dispatch` convenience.

A queue stopped by a CP error reports it on the queue resource (`error`); every later call on a
queue without an error callback fails with that error (409), as ROCr's default callback would.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

from fastapi import Path, Request, Response
from pydantic import TypeAdapter

import rocr
from hw_model import aql
from hw_model.aql import FenceScope, PacketType
from hw_model.kernels import BUILTINS
from rocr.errors import HsaError
from rocr.service import emulation
from rocr.service.deps import (
    ERRORS,
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
from rocr.service.errors import ApiError, limit_error
from rocr.service.schemas import (
    CuMask,
    DispatchInfo,
    DispatchRequest,
    Doorbell,
    HeaderFields,
    IndexAdd,
    IndexCas,
    IndexValue,
    KernelDispatchPacketBody,
    PacketBody,
    PacketSlot,
    QueueCreate,
    QueueError,
    QueueInfo,
    QueuePriority,
    QueueReport,
    RawPacket,
)
from rocr.service.systems import ServedSystem
from rocr.signal import Condition
from rocr.status import Status, status_c_name

router = EmulatedRouter(prefix=PREFIX, tags=["queues"], responses=ERRORS, route_class=EmulatedRoute)

PacketIndex = Annotated[int, Path(ge=0, le=(1 << 63) - 1, description="packet index")]
_PACKET = TypeAdapter(PacketBody)


def queue_error(q: rocr.Queue) -> QueueError | None:
    e = q.error
    if e is None:
        return None
    return QueueError(status=status_c_name(e.status), code=int(e.status), message=e.message)


def queue_info(q: rocr.Queue) -> QueueInfo:
    return QueueInfo(
        id=q.id,
        queue_id=q.queue_id,
        agent=q.agent.node,
        size=q.size,
        priority=q.priority,
        base_address=q.base_address,
        address=q.address,
        doorbell_signal=q.doorbell_signal.handle,
        doorbell_address=q.doorbell_signal.doorbell_address,
        doorbell_offset=q.resource.doorbell_offset,
        doorbell_value=q.doorbell_value,
        write_index=q.load_write_index(),
        read_index=q.load_read_index(),
        error=queue_error(q),
    )


@contextmanager
def queue_call(q: rocr.Queue) -> Iterator[None]:
    """A call that fails because the queue is stopped by an error is a 409 conflict."""
    try:
        yield
    except HsaError as e:
        if e is q.error:
            raise ApiError.from_hsa(e, 409) from None
        raise


def _record_error(err: HsaError, q: rocr.Queue) -> None:
    """The error callback of queues created with error_callback: the error stays on the queue
    (q.error) and calls go on."""


@router.post("/queues", status_code=201, responses=responses(507))
@light
def create_queue(body: QueueCreate, s: System) -> QueueInfo:
    """hsa_queue_create on GPU `agent`: ring and amd_queue_t in memory, CREATE_QUEUE, doorbell."""
    with s.use():
        lim = s.limits.max_queues_per_process
        if len(s.queues) >= lim:
            raise limit_error(
                429, "max_queues_per_process", lim, "too many queues; destroy one first"
            )
        agent = s.agent(body.agent)
        nbytes = s.queue_bytes(body.size)
        if agent.is_gpu and agent.queue_min_size <= body.size <= agent.queue_max_size:
            s.ensure_room(nbytes)  # what the runtime itself refuses, it refuses first
        q = agent.create_queue(
            body.size, _record_error if body.error_callback else None, priority=body.priority
        )
        s.charge("queue", q.id, nbytes)
        s.queues[q.id] = q
        return queue_info(q)


@router.get("/queues")
@light
def list_queues(s: System) -> list[QueueInfo]:
    with s.use(counts=False) as rt:
        rt.poll_async()
        return [queue_info(q) for q in s.queues.values()]


@router.get("/queues/{queue_id}")
@light
def get_queue(queue_id: int, s: System) -> QueueInfo:
    """The queue's state, with `error` once the CP has stopped it."""
    with s.use(counts=False) as rt:
        q = s.queue(queue_id)
        rt.poll_async()
        return queue_info(q)


@router.delete("/queues/{queue_id}", status_code=204)
def destroy_queue(queue_id: int, s: System) -> Response:
    """hsa_queue_destroy."""
    with s.use():
        s.queue(queue_id).destroy()
        del s.queues[queue_id]
        s.refund("queue", queue_id)
    return Response(status_code=204)


@router.get("/queues/{queue_id}/report")
def report(queue_id: int, s: System) -> QueueReport:
    """Why the queue is or is not making progress, read from its memory as a debugger would."""
    with s.use(counts=False) as rt:
        q = s.queue(queue_id)
        rt.poll_async()
        return QueueReport(queue=q.id, lines=rt.queue_report(q))


# -- indices ---------------------------------------------------------------------------------


@router.get("/queues/{queue_id}/write-index")
@light
def load_write_index(queue_id: int, s: System) -> IndexValue:
    """hsa_queue_load_write_index_scacquire."""
    with s.use(counts=False):
        return IndexValue(value=s.queue(queue_id).load_write_index())


@router.put("/queues/{queue_id}/write-index")
def store_write_index(queue_id: int, body: IndexValue, s: System) -> IndexValue:
    """hsa_queue_store_write_index_screlease."""
    with s.use():
        q = s.queue(queue_id)
        with queue_call(q):
            q.store_write_index(body.value)
        return IndexValue(value=q.load_write_index())


@router.post("/queues/{queue_id}/write-index/add")
def add_write_index(queue_id: int, body: IndexAdd, s: System) -> IndexValue:
    """hsa_queue_add_write_index_scacq_screl: returns the previous write index."""
    with s.use():
        q = s.queue(queue_id)
        with queue_call(q):
            return IndexValue(value=q.add_write_index(body.delta))


@router.post("/queues/{queue_id}/write-index/cas")
def cas_write_index(queue_id: int, body: IndexCas, s: System) -> IndexValue:
    """hsa_queue_cas_write_index_scacq_screl: returns the value observed."""
    with s.use():
        q = s.queue(queue_id)
        with queue_call(q):
            return IndexValue(value=q.cas_write_index(body.expected, body.value))


@router.get("/queues/{queue_id}/read-index")
@light
def load_read_index(queue_id: int, s: System) -> IndexValue:
    """hsa_queue_load_read_index_scacquire: read_dispatch_id, advanced by the CP."""
    with s.use(counts=False):
        return IndexValue(value=s.queue(queue_id).load_read_index())


# -- packets ---------------------------------------------------------------------------------


def _scope(name: str) -> int:
    return int(FenceScope[name])


def packet_bytes(body: PacketBody) -> bytes:
    """The 64 bytes of a structured packet."""
    data = body.model_dump(exclude={"type", "header", "barrier"})
    data.pop("acquire_fence_scope")
    data.pop("release_fence_scope")
    if isinstance(body, KernelDispatchPacketBody):
        ptype = PacketType.KERNEL_DISPATCH
        if body.setup is None:
            dims = 3 if body.grid_size_z > 1 else 2 if body.grid_size_y > 1 else 1
            data["setup"] = dims
        pkt: aql.PackedModel = aql.KernelDispatchPacket(**data, header=0)
    elif body.type in ("BARRIER_AND", "BARRIER_OR"):
        ptype = PacketType[body.type]
        data["dep_signal"] = list(data["dep_signal"]) + [0] * (5 - len(data["dep_signal"]))
        cls = aql.BarrierAndPacket if body.type == "BARRIER_AND" else aql.BarrierOrPacket
        pkt = cls(**data, header=0)
    elif body.type == "AGENT_DISPATCH":
        ptype = PacketType.AGENT_DISPATCH
        data["type"] = data.pop("agent_type")
        data["arg"] = list(data["arg"]) + [0] * (4 - len(data["arg"]))
        pkt = aql.AgentDispatchPacket(**data, header=0)
    else:
        ptype = PacketType.VENDOR_SPECIFIC
        if isinstance(data["cond"], str):
            data["cond"] = int(Condition[data["cond"]])
        pkt = aql.AmdBarrierValuePacket(**data, header=0)
    header = body.header
    if header is None:
        header = aql.make_header(
            ptype,
            barrier=body.barrier,
            acquire=_scope(body.acquire_fence_scope),
            release=_scope(body.release_fence_scope),
        )
    raw = bytearray(pkt.to_bytes())
    raw[0:2] = header.to_bytes(2, "little")
    return bytes(raw)


def _type_name(t: int) -> str:
    try:
        return PacketType(t).name
    except ValueError:
        return f"UNKNOWN_{t}"


def packet_slot(q: rocr.Queue, index: int) -> PacketSlot:
    raw = q.packet_bytes(index)
    header = int.from_bytes(raw[0:2], "little")
    f = aql.header_fields(header)
    try:
        pkt = aql.decode_packet(raw)
        decoded = None if pkt is None else pkt.model_dump()
    except ValueError:
        decoded = None
    return PacketSlot(
        queue=q.id,
        index=index,
        slot=index % q.size,
        header=header,
        header_fields=HeaderFields(
            type=_type_name(f.type),
            barrier=f.barrier,
            acquire_fence_scope=_type_scope(f.acquire),
            release_fence_scope=_type_scope(f.release),
        ),
        raw=raw,
        hex=raw.hex(),
        packet=decoded,
    )


def _type_scope(v: int) -> str:
    try:
        return FenceScope(v).name
    except ValueError:
        return f"RESERVED_{v}"


@router.get(
    "/queues/{queue_id}/packets/{index}",
    response_model=PacketSlot,
    responses=octet_or(PacketSlot, "the slot: raw 64 bytes with Accept: application/octet-stream"),
)
@light
def read_packet(queue_id: int, index: PacketIndex, s: System, request: Request):
    """The ring slot of packet `index`, decoded (retired slots read back INVALID)."""
    with s.use(counts=False):
        q = s.queue(queue_id)
        if wants_octet(request):
            return Response(content=q.packet_bytes(index), media_type="application/octet-stream")
        return packet_slot(q, index)


@router.put(
    "/queues/{queue_id}/packets/{index}",
    openapi_extra=dual_body(
        "PacketWrite",
        "the packet: its raw 64 bytes, or JSON — structured (with `type`) or {raw: base64}",
    ),
    responses=responses(415),
)
async def write_packet(
    queue_id: int, index: PacketIndex, s: System, request: Request
) -> PacketSlot:
    """Write packet `index` into its slot: the body first, then the header (release)."""
    if body_kind(request) == "octet":
        raw = await request.body()
    else:
        doc = await json_body(request)
        if isinstance(doc, dict) and "type" in doc:
            raw = packet_bytes(_PACKET.validate_python(doc))
        elif isinstance(doc, dict) and "raw" in doc:
            raw = RawPacket.model_validate(doc).raw
        else:
            raise ApiError(
                422,
                Status.ERROR_INVALID_ARGUMENT,
                "invalid request: give a structured packet (with `type`: KERNEL_DISPATCH, "
                "BARRIER_AND, BARRIER_OR, AGENT_DISPATCH, AMD_BARRIER_VALUE) or {raw: base64}",
            )
    if len(raw) != aql.PACKET_SIZE:
        raise ApiError(
            400, Status.ERROR_INVALID_ARGUMENT, f"an AQL packet is 64 bytes, got {len(raw)}"
        )

    def write() -> PacketSlot:
        with s.use():
            q = s.queue(queue_id)
            check_packet_work(s, raw)
            with queue_call(q):
                q.write_packet(index, raw)
            return packet_slot(q, index)

    return await emulation.in_turn(s, write)


@router.post("/queues/{queue_id}/doorbell")
def ring_doorbell(queue_id: int, body: Doorbell, s: System) -> QueueInfo:
    """hsa_signal_store_screlease(queue->doorbell_signal, value), as rocr's ring_doorbell."""
    with s.use():
        q = s.queue(queue_id)
        with queue_call(q):
            q.ring_doorbell(body.value)
        return queue_info(q)


@router.put("/queues/{queue_id}/doorbell-signal")
def store_doorbell_signal(queue_id: int, body: Doorbell, s: System) -> QueueInfo:
    """Only the store to the doorbell signal (no trace marker, no error poll)."""
    with s.use():
        q = s.queue(queue_id)
        q.doorbell_signal.store(body.value)
        return queue_info(q)


@router.put("/queues/{queue_id}/priority")
def set_priority(queue_id: int, body: QueuePriority, s: System) -> QueueInfo:
    """hsa_amd_queue_set_priority."""
    with s.use():
        q = s.queue(queue_id)
        with queue_call(q):
            q.set_priority(body.priority)
        return queue_info(q)


@router.put("/queues/{queue_id}/cu-mask")
def set_cu_mask(queue_id: int, body: CuMask, s: System) -> QueueInfo:
    """hsa_amd_queue_cu_set_mask."""
    with s.use():
        q = s.queue(queue_id)
        with queue_call(q):
            q.set_cu_mask(body.mask)
        return queue_info(q)


def _dims(v: int | list[int]) -> list[int]:
    return [v] if isinstance(v, int) else list(v)


def dispatch_work(name: str, grid: int | list[int], workgroup: int | list[int]) -> int:
    """Work-items the dispatch runs (its grid rounded up to whole workgroups, as the
    dispatcher places them) times the kernel's wave instructions (its cost profile; at least
    1, and 1 for a kernel without one)."""
    g, w = _dims(grid), _dims(workgroup)
    items = 1
    for i, n in enumerate(g):
        size = max(1, w[i] if i < len(w) else 1)
        items *= -(-n // size) * size
    spec = BUILTINS.get(name)
    cost = 1
    if spec is not None:
        c = spec.cost
        cost = max(1, c.valu + c.salu + c.lds + c.vmem)
    return items * cost


def check_work(
    s: ServedSystem, name: str, grid: int | list[int], workgroup: int | list[int]
) -> None:
    """422 naming max_dispatch_work when the dispatch is bigger."""
    work = dispatch_work(name, grid, workgroup)
    if work > s.limits.max_dispatch_work:
        raise limit_error(
            422,
            "max_dispatch_work",
            s.limits.max_dispatch_work,
            f"kernel {name!r} on grid {grid} (workgroup {workgroup}) is {work} units of "
            "work (work-items x wave instructions)",
        )


def check_packet_work(s: ServedSystem, raw: bytes) -> None:
    """A raw kernel dispatch packet is held to max_dispatch_work as POST dispatch is."""
    if aql.header_fields(int.from_bytes(raw[0:2], "little")).type != PacketType.KERNEL_DISPATCH:
        return
    pkt = aql.KernelDispatchPacket.from_bytes(raw)
    name = next(
        (
            sym.name
            for exe in s.executables.values()
            for sym in exe.symbols.values()
            if sym.kernel_object == pkt.kernel_object
        ),
        f"at kernel_object {pkt.kernel_object:#x}",
    )
    grid = [pkt.grid_size_x, pkt.grid_size_y, pkt.grid_size_z]
    wg = [pkt.workgroup_size_x, pkt.workgroup_size_y, pkt.workgroup_size_z]
    check_work(s, name, grid, wg)


@router.post("/queues/{queue_id}/dispatch", status_code=201, responses=responses(507))
@light
def dispatch(queue_id: int, body: DispatchRequest, s: System) -> DispatchInfo:
    """Pack the kernargs, write a kernel dispatch packet and ring the doorbell. A dispatch
    whose work (work-items times the kernel's wave instructions) is past the server's
    max_dispatch_work is refused (422) before anything is queued."""
    with s.use():
        q = s.queue(queue_id)
        k = s.kernel(body.kernel_object, body.kernel)
        check_work(s, k.name, body.grid, body.workgroup)
        sig = None if body.completion_signal is None else s.signal(body.completion_signal)
        if sig is None:
            s.check_signal_room()
        # The device has nothing else to do: this kernel is all a wait right after runs.
        alone = s.quiet()
        with queue_call(q):
            h = q.dispatch(
                k,
                grid=body.grid,
                workgroup=body.workgroup,
                args=tuple(body.args),
                completion_signal=sig,
                group_segment_size=body.group_segment_size,
                barrier=body.barrier,
                acquire=FenceScope[body.acquire_fence_scope],
                release=FenceScope[body.release_fence_scope],
            )
        s.add_signal(h.detach_signal())  # the served system owns it from now on
        info = DispatchInfo(
            queue=q.id, index=h.index, signal=h.signal.handle, kernel_object=k.kernel_object
        )
    brief = alone and brief_kernel(k, body.grid, body.workgroup)
    s.brief_wait = (h.signal.handle, s.activity) if brief else None
    return info


# A wait for a built-in kernel of at most this many workgroups and work-items, dispatched on a
# quiet device with nothing done on the system since, runs in the event loop (routes.signals):
# the engine fires ~3 events a workgroup (52 for `square` over 4,096 items in workgroups of
# 256, ~0.6 ms; 32 workgroups ~100 events, ~1-3 ms on a loaded 2-core machine), well inside
# one slice (SLICE_EVENTS), where an inline wait would end anyway.
BRIEF_WORKGROUPS = 32
BRIEF_ITEMS = 1 << 16


def brief_kernel(k: rocr.KernelSymbol, grid: int | list[int], workgroup: int | list[int]) -> bool:
    """A built-in kernel (its cost modelled, not its instructions interpreted) over a small
    grid."""
    if k.code is not None or k.name not in BUILTINS:
        return False
    g, w = _dims(grid), _dims(workgroup)
    groups = items = 1
    for i, n in enumerate(g):
        size = max(1, w[i] if i < len(w) else 1)
        groups *= -(-n // size)
        items *= n
    return groups <= BRIEF_WORKGROUPS and items <= BRIEF_ITEMS
