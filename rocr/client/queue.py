"""Remote AQL queues: `rocr.Queue`'s methods as requests (indices, packets, doorbell, dispatch).

Packets built with `rocr.KernelDispatchPacket(...)` and friends travel as structured JSON;
raw bytes travel as they are. Either way the server writes the same 64 bytes the local runtime
would, body first and header last.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from hw_model import aql
from rocr.errors import HsaError
from rocr.executable import KernelSymbol as LocalKernelSymbol
from rocr.queue import kmt_priority, packet_raw
from rocr.service.schemas import DispatchInfo, QueueError, QueueInfo
from rocr.status import Status
from rocr.validate import (
    I64_MAX,
    as_bool,
    as_int,
    as_u64,
    cu_mask,
    dispatch_geometry,
    fence_scope,
    show,
)

if TYPE_CHECKING:
    from rocr.client.agent import Agent
    from rocr.client.executable import KernelSymbol
    from rocr.client.runtime import DispatchHandle, Runtime
    from rocr.client.signal import Signal

_TYPE_NAMES: dict[type, str] = {
    aql.KernelDispatchPacket: "KERNEL_DISPATCH",
    aql.BarrierAndPacket: "BARRIER_AND",
    aql.BarrierOrPacket: "BARRIER_OR",
    aql.AgentDispatchPacket: "AGENT_DISPATCH",
    aql.AmdBarrierValuePacket: "AMD_BARRIER_VALUE",
}


def packet_json(pkt: aql.PackedModel) -> dict[str, Any]:
    """The structured JSON of an hw_model.aql packet, header included as is."""
    name = _TYPE_NAMES.get(type(pkt))
    if name is None:
        raise HsaError(Status.ERROR_INVALID_ARGUMENT, f"not an AQL packet: {pkt!r}")
    d = pkt.model_dump()
    if name == "AGENT_DISPATCH":
        d["agent_type"] = d.pop("type")
    d["type"] = name
    return d


def kernel_arg(v: Any) -> int | float:
    """A kernel argument as JSON: buffers by address, numpy scalars as Python numbers."""
    if isinstance(v, bool | np.bool_):
        return int(v)
    if isinstance(v, int | float):
        return v
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    addr = getattr(v, "address", None)
    if isinstance(addr, int):
        return addr
    raise HsaError(Status.ERROR_INVALID_ARGUMENT, f"cannot pass {v!r} as a kernel argument")


def _error(e: QueueError | None) -> HsaError | None:
    return None if e is None else HsaError(Status(e.code), e.message)


class DoorbellSignal:
    """The queue's doorbell_signal: `store(index)` is hsa_signal_store_screlease on it."""

    def __init__(self, queue: Queue, handle: int, doorbell_address: int) -> None:
        self._queue = queue
        self.handle = handle
        self.doorbell_address = doorbell_address

    @property
    def last_value(self) -> int | None:
        return self._queue.doorbell_value

    def store(self, value: int) -> None:
        value = as_int(value, "value", -(1 << 63), I64_MAX, why="hsa_signal_value_t")
        self._queue._update(
            self._queue.rt._put(self._queue._path("/doorbell-signal"), {"value": value})
        )


class Queue:
    """hsa_queue_t of an AQL queue on a served GPU agent."""

    def __init__(
        self, rt: Runtime, info: QueueInfo, agent: Agent, callback: Callable | None
    ) -> None:
        self.rt = rt
        self.agent = agent
        self.callback = callback
        self.id: int = info.id
        self.queue_id: int = info.queue_id
        self.size: int = info.size
        self.priority: int = info.priority
        self.base_address: int = info.base_address
        self.address: int = info.address
        self.doorbell_signal = DoorbellSignal(self, info.doorbell_signal, info.doorbell_address)
        self.destroyed = False
        self._error_reported = False
        self._last = info

    def __repr__(self) -> str:
        return f"Queue(id={self.id}, kfd queue {self.queue_id}, size={self.size})"

    def _path(self, tail: str = "") -> str:
        return f"/queues/{self.id}{tail}"

    def _check(self) -> None:
        if self.rt.closed:
            raise HsaError(
                Status.ERROR_NOT_INITIALIZED, f"queue {self.id}: the runtime was shut down"
            )
        if self.destroyed:
            raise HsaError(Status.ERROR_INVALID_QUEUE, f"queue {self.id} was destroyed")

    def _update(self, raw: dict) -> QueueInfo:
        info = QueueInfo.model_validate(raw)
        self._last = info
        err = _error(info.error)
        if err is not None:
            self._note_error(err)
        return info

    def _note_error(self, err: HsaError) -> None:
        if not self._error_reported:
            self._error_reported = True
            if self.callback is not None:
                self.callback(err, self)

    # -- state ---------------------------------------------------------------------------------
    @property
    def error(self) -> HsaError | None:
        """The error that stopped the queue, if any (the server polls the CP's error bits)."""
        if self.destroyed:
            return None
        return _error(self._update(self.rt._get(self._path())).error)

    @property
    def doorbell_value(self) -> int | None:
        self._check()
        return self._update(self.rt._get(self._path())).doorbell_value

    # -- indices -------------------------------------------------------------------------------
    def load_write_index(self) -> int:
        """hsa_queue_load_write_index_scacquire."""
        self._check()
        return int(self.rt._get(self._path("/write-index"))["value"])

    def store_write_index(self, value: int) -> None:
        value = as_u64(value, "value", why="write_dispatch_id is a uint64_t")
        self._check()
        self.rt._put(self._path("/write-index"), {"value": value})

    def add_write_index(self, delta: int = 1) -> int:
        """hsa_queue_add_write_index_scacq_screl: returns the previous write index."""
        delta = as_int(delta, "delta", 0, I64_MAX, why="packets to reserve")
        self._check()
        return int(self.rt._post(self._path("/write-index/add"), {"delta": delta})["value"])

    def cas_write_index(self, expected: int, value: int) -> int:
        expected = as_u64(expected, "expected", why="write_dispatch_id is a uint64_t")
        value = as_u64(value, "value", why="write_dispatch_id is a uint64_t")
        self._check()
        body = {"expected": expected, "value": value}
        return int(self.rt._post(self._path("/write-index/cas"), body)["value"])

    def load_read_index(self) -> int:
        """hsa_queue_load_read_index_scacquire: read_dispatch_id, advanced by the CP."""
        self._check()
        return int(self.rt._get(self._path("/read-index"))["value"])

    # -- packets -------------------------------------------------------------------------------
    def write_packet(self, index: int, packet: Any) -> None:
        """Write a packet into slot `index`: body first, then the header (release)."""
        index = as_u64(index, "index", why="a packet index is a uint64_t")
        raw = packet_raw(packet)  # the local checks, with the local messages
        self._check()
        path = self._path(f"/packets/{index}")
        if isinstance(packet, bytes | bytearray | memoryview):
            self.rt._request("PUT", path, content=raw)
        else:
            self.rt._put(path, packet_json(packet))

    def packet_bytes(self, index: int) -> bytes:
        index = as_u64(index, "index", why="a packet index is a uint64_t")
        self._check()
        return self.rt._request("GET", self._path(f"/packets/{index}"), octet=True).content

    def packet(self, index: int) -> Any:
        return aql.decode_packet(self.packet_bytes(index))

    def ring_doorbell(self, index: int) -> None:
        """hsa_signal_store_screlease(queue->doorbell_signal, index)."""
        index = as_int(
            index, "index", 0, I64_MAX, why="the doorbell takes a packet index, an int64_t"
        )
        self._check()
        self._update(self.rt._post(self._path("/doorbell"), {"value": index}))

    # -- convenience ---------------------------------------------------------------------------
    def dispatch(
        self,
        kernel: KernelSymbol,
        grid: tuple[int, ...] | int,
        workgroup: tuple[int, ...] | int,
        args: tuple = (),
        completion_signal: Signal | None = None,
        *,
        group_segment_size: int | None = None,
        barrier: bool = False,
        acquire: aql.FenceScope = aql.FenceScope.SYSTEM,
        release: aql.FenceScope = aql.FenceScope.SYSTEM,
    ) -> DispatchHandle:
        """Pack kernargs, write a kernel dispatch packet, ring the doorbell.

        Returns a DispatchHandle whose `.wait()` waits for the completion signal.
        """
        from rocr.client.runtime import DispatchHandle
        from rocr.client.signal import Signal

        self._check()
        # The local runtime's checks, so a mistake reads the same here as there.
        if not isinstance(kernel, LocalKernelSymbol):
            raise HsaError(
                Status.ERROR_INVALID_ARGUMENT,
                f"kernel must be a KernelSymbol (exe.kernel('name')), got {show(kernel)} "
                f"({type(kernel).__name__})",
            )
        g3, w3, dims = dispatch_geometry(grid, workgroup, self.agent)
        values = kernel.check_args(args, self.rt)
        if completion_signal is not None and not isinstance(completion_signal, Signal):
            raise HsaError(
                Status.ERROR_INVALID_ARGUMENT,
                f"completion_signal must be a Signal (rt.create_signal(1)) or None, got "
                f"{show(completion_signal)} ({type(completion_signal).__name__})",
            )
        if group_segment_size is not None:
            group_segment_size = as_int(
                group_segment_size, "group_segment_size", 0, 0xFFFF_FFFF, why="bytes of LDS"
            )
        body = {
            "kernel_object": kernel.kernel_object,
            "grid": list(g3[:dims]),
            "workgroup": list(w3[:dims]),
            "args": [kernel_arg(a) for a in values],
            "completion_signal": None if completion_signal is None else completion_signal.handle,
            "group_segment_size": group_segment_size,
            "barrier": as_bool(barrier, "barrier"),
            "acquire_fence_scope": aql.FenceScope(fence_scope(acquire, "acquire")).name,
            "release_fence_scope": aql.FenceScope(fence_scope(release, "release")).name,
        }
        d = DispatchInfo.model_validate(self.rt._post(self._path("/dispatch"), body))
        sig = completion_signal if completion_signal is not None else self.rt.signal(d.signal)
        return DispatchHandle(self, d.index, sig, completion_signal is None)

    def submit(self, packet: Any) -> int:
        """Reserve a slot, write the packet, ring the doorbell; returns the packet index."""
        packet_raw(packet)  # a bad packet must not leave a reserved, INVALID slot
        i = self.add_write_index(1)
        self.write_packet(i, packet)
        self.ring_doorbell(i)
        return i

    # -- teardown ------------------------------------------------------------------------------
    def set_priority(self, priority: int) -> None:
        """hsa_amd_queue_set_priority."""
        kmt = kmt_priority(priority)
        self._check()
        self._update(self.rt._put(self._path("/priority"), {"priority": kmt}))
        self.priority = kmt

    def set_cu_mask(self, mask: list[int]) -> None:
        """hsa_amd_queue_cu_set_mask: 32-bit words, bit i enables CU i."""
        words = cu_mask(mask, self.agent.compute_unit_count)
        self._check()
        self._update(self.rt._put(self._path("/cu-mask"), {"mask": words}))

    def destroy(self) -> None:
        """hsa_queue_destroy; a queue destroyed already is HSA_STATUS_ERROR_INVALID_QUEUE."""
        self._check()
        self.rt._delete(self._path())
        self.destroyed = True
        self.rt._queues.pop(self.id, None)
