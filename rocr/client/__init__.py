"""Python client of the hsaemu HTTP API: the local runtime's objects and methods, over httpx.

`rocr.connect()` returns a `Runtime` with the same names as `rocr.init()`'s (agents, pools,
buffers, queues, signals, executables, `dispatch`), so a lab script runs unchanged locally or
against a server. Errors are `rocr.HsaError` with the real `rocr.Status`.
"""

from rocr.client.agent import Agent
from rocr.client.connection import RemoteHsaError
from rocr.client.executable import Executable, KernelSymbol
from rocr.client.memory import Buffer, MemoryPool, RemoteView
from rocr.client.queue import Queue
from rocr.client.runtime import DispatchHandle, Runtime, connect
from rocr.client.signal import Signal
from rocr.client.system import System

__all__ = [
    "Agent",
    "Buffer",
    "DispatchHandle",
    "Executable",
    "KernelSymbol",
    "MemoryPool",
    "Queue",
    "RemoteHsaError",
    "RemoteView",
    "Runtime",
    "Signal",
    "System",
    "connect",
]
