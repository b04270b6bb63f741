"""roct: the thunk (libhsakmt) — hsaKmt* calls as KFD ioctls over a transport."""

from roct.thunk import (
    Allocation,
    HsaEvent,
    HsaKmtError,
    HsaKmtStatus,
    MemoryProperties,
    NodeProperties,
    QueueResource,
    Thunk,
    open_kfd,
)
from roct.transport import InProcess, Transport

__all__ = [
    "Allocation",
    "HsaEvent",
    "HsaKmtError",
    "HsaKmtStatus",
    "InProcess",
    "MemoryProperties",
    "NodeProperties",
    "QueueResource",
    "Thunk",
    "Transport",
    "open_kfd",
]
