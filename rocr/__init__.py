"""Emulated ROCr: the HSA runtime (libhsa-runtime64) in Python.

import rocr
with rocr.init(preset="teaching") as rt:
    gpu = rt.gpus[0]
    ...
"""

from hw_model.aql import (
    AgentDispatchPacket,
    AmdBarrierValuePacket,
    BarrierAndPacket,
    BarrierOrPacket,
    FenceScope,
    KernelDispatchPacket,
    PacketType,
    make_header,
)
from rocr.agent import Agent, DeviceType
from rocr.errors import HsaError
from rocr.executable import Executable, KernelSymbol
from rocr.memory import Buffer, GlobalFlag, MemoryPool, Segment
from rocr.queue import Queue, QueuePriority
from rocr.runtime import DispatchHandle, Runtime, init
from rocr.signal import Condition, Signal, WaitState
from rocr.status import Status, status_string


def connect(*args, **kwargs):
    """rocr.connect(url, token=... | preset=...): a runtime on an hsaemu server, with the
    same objects and methods as rocr.init() (rocr.client.connect; imported on first use so
    that local runs do not load the HTTP stack)."""
    from rocr.client import connect as _connect

    return _connect(*args, **kwargs)


def restore(path):
    """rocr.restore(path) -> (runtime, extra): the runtime `rt.checkpoint(path, **extra)`
    wrote, going on from where it was, and its `extra` objects (rocr.checkpoint.restore)."""
    from rocr.checkpoint import restore as _restore

    return _restore(path)


__all__ = [
    "Agent",
    "AgentDispatchPacket",
    "AmdBarrierValuePacket",
    "BarrierAndPacket",
    "BarrierOrPacket",
    "Buffer",
    "Condition",
    "DeviceType",
    "DispatchHandle",
    "Executable",
    "FenceScope",
    "GlobalFlag",
    "HsaError",
    "KernelDispatchPacket",
    "KernelSymbol",
    "MemoryPool",
    "PacketType",
    "Queue",
    "QueuePriority",
    "Runtime",
    "Segment",
    "Signal",
    "Status",
    "WaitState",
    "connect",
    "init",
    "make_header",
    "restore",
    "status_string",
]
