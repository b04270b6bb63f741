"""Emulated ROCr: the HSA runtime (libhsa-runtime64) in Python.

import rocr
with rocr.init(preset="teaching") as rt:
    gpu = rt.gpus[0]
    ...
"""

from __future__ import annotations

from importlib import import_module
from importlib.util import find_spec
from typing import TYPE_CHECKING

# Each public name and the module that defines it, imported on first use (PEP 562): a process
# that only needs part of the package (`hsaemu --help`, the HTTP client, a sweep's parent)
# does not pay for the runtime, numpy and the packet and ioctl models at `import rocr`.
_LAZY = {
    "AgentDispatchPacket": "hw_model.aql",
    "AmdBarrierValuePacket": "hw_model.aql",
    "BarrierAndPacket": "hw_model.aql",
    "BarrierOrPacket": "hw_model.aql",
    "FenceScope": "hw_model.aql",
    "KernelDispatchPacket": "hw_model.aql",
    "PacketType": "hw_model.aql",
    "make_header": "hw_model.aql",
    "Agent": "rocr.agent",
    "DeviceType": "rocr.agent",
    "HsaError": "rocr.errors",
    "Executable": "rocr.executable",
    "KernelSymbol": "rocr.executable",
    "Buffer": "rocr.memory",
    "GlobalFlag": "rocr.memory",
    "MemoryPool": "rocr.memory",
    "Segment": "rocr.memory",
    "Queue": "rocr.queue",
    "QueuePriority": "rocr.queue",
    "DispatchHandle": "rocr.runtime",
    "Runtime": "rocr.runtime",
    "init": "rocr.runtime",
    "Condition": "rocr.signal",
    "Signal": "rocr.signal",
    "WaitState": "rocr.signal",
    "Status": "rocr.status",
    "status_string": "rocr.status",
}

if TYPE_CHECKING:
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


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        # A submodule (rocr.queue.QueuePriority, rocr.runtime.INIT_HOOKS): `import rocr` used
        # to load them all, so code that reaches them as attributes still finds them.
        if not name.startswith("_") and find_spec(f"rocr.{name}") is not None:
            return import_module(f"rocr.{name}")
        raise AttributeError(f"module 'rocr' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


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
