"""IPC signals: hsa_amd_ipc_signal_create / hsa_amd_ipc_signal_attach (hsa_ext_amd.h).

ROCr's IPCSignal is a busy-wait signal (no KFD event) whose amd_signal_t lives in memory of its
own that the exporting process shares through the IPC-memory path (hsa_amd_ipc_memory_create,
hsaKmtShareMemory): here a dma-buf of the BO from the render node. Another process attaches
(hsaKmtRegisterSharedHandle) by importing the dma-buf with AMDKFD_IOC_IMPORT_DMABUF — KFD ioctl
interface 1.11 in linux/kfd_ioctl.h has no IPC_EXPORT/IMPORT_HANDLE ioctls (ROCm's out-of-tree
driver had them); dma-buf import is what it offers — maps it, and builds a signal over the same
amd_signal_t. Both
processes then see one value; a barrier-AND packet in either waits on it, and a store in one
wakes the packet processor of the other (the memory model tells the watchers of every mapping
of the shared pages).

The handle (hsa_amd_ipc_signal_t = hsa_amd_ipc_memory_t, `uint32_t handle[8]`) carries the
dma-buf's number in the KFD, the size of the shared allocation and the signal's offset in it.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from rocr.errors import HsaError
from rocr.status import Status
from roct import HsaKmtError

if TYPE_CHECKING:
    from rocr.runtime import Runtime
    from rocr.signal import Signal

IPC_HANDLE_SIZE = 32  # sizeof(hsa_amd_ipc_memory_t): uint32_t handle[8]
_HANDLE = struct.Struct("<IIII16x")  # dmabuf fd, size, offset of the amd_signal_t, magic
_MAGIC = 0x48534153  # "SASH": marks a handle this runtime made
PAGE = 4096


def create_ipc_signal(rt: Runtime, initial: int) -> Signal:
    """hsa_amd_signal_create with HSA_AMD_SIGNAL_IPC: a busy-wait signal on a page of its own."""
    from rocr.signal import Signal

    try:
        alloc = rt.thunk.alloc_memory(0, PAGE, coherent=True)
        rt.thunk.map_memory_to_gpu(alloc.address)
    except HsaKmtError as e:
        raise HsaError(
            Status.ERROR_OUT_OF_RESOURCES, f"hsa_amd_signal_create (IPC): {e.message}"
        ) from e
    sig = Signal(rt, initial, None, slot=(alloc.mapping, 0))
    sig._ipc_alloc = alloc.address  # type: ignore[attr-defined]
    return sig


def ipc_signal_create(rt: Runtime, signal: Signal) -> bytes:
    """hsa_amd_ipc_signal_create: the 32-byte handle another process attaches with."""
    address = getattr(signal, "_ipc_alloc", None)
    if address is None:
        raise HsaError(
            Status.ERROR_INVALID_ARGUMENT,
            f"signal {signal.handle:#x} is not an IPC signal: create it with "
            "rt.create_signal(..., ipc=True) (HSA_AMD_SIGNAL_IPC)",
        )
    try:
        fd, size = rt.thunk.share_memory(address)
    except HsaKmtError as e:
        raise HsaError(Status.ERROR, f"hsa_amd_ipc_signal_create: {e.message}") from e
    return _HANDLE.pack(fd, size, signal.handle - address, _MAGIC)


def ipc_signal_attach(rt: Runtime, handle: bytes | bytearray | memoryview) -> Signal:
    """hsa_amd_ipc_signal_attach: this process's signal over another's IPC signal."""
    from rocr.signal import Signal

    raw = bytes(handle)
    if len(raw) != IPC_HANDLE_SIZE:
        raise HsaError(
            Status.ERROR_INVALID_ARGUMENT,
            f"handle of {len(raw)} bytes: an hsa_amd_ipc_signal_t is {IPC_HANDLE_SIZE} bytes",
        )
    fd, size, offset, magic = _HANDLE.unpack(raw)
    if magic != _MAGIC or size == 0 or size % PAGE or offset >= size:
        raise HsaError(
            Status.ERROR_INVALID_ARGUMENT,
            "handle is not one hsa_amd_ipc_signal_create returned (bad magic, size or offset)",
        )
    try:
        alloc = rt.thunk.register_shared(fd, size)
        rt.thunk.map_memory_to_gpu(alloc.address)
    except HsaKmtError as e:
        raise HsaError(
            Status.ERROR_INVALID_ARGUMENT, f"hsa_amd_ipc_signal_attach: {e.message}"
        ) from e
    sig = Signal(rt, 0, None, slot=(alloc.mapping, offset), attach=True)
    sig._ipc_alloc = alloc.address  # type: ignore[attr-defined]
    return sig


__all__ = ["IPC_HANDLE_SIZE", "create_ipc_signal", "ipc_signal_attach", "ipc_signal_create"]
