"""Fixtures shared by the hw_model tests."""

from __future__ import annotations

import pytest

from hw_model.compute_unit import ComputeUnit, MemoryChannel
from hw_model.config import PRESETS
from hw_model.dispatcher import Dispatcher
from hw_model.engine import Engine
from hw_model.memory import Memory
from hw_model.trace import Tracer


@pytest.fixture
def mem() -> Memory:
    """A memory model of 1 GiB on node 0 with the VM of pasid 1."""
    m = Memory({0: 1 << 30})
    m.create_vm(1)
    return m


class DispatcherGpu:
    """The parts of hw_model.gpu.Gpu the dispatcher uses, timing only: a GPU of `preset`'s
    CUs and DRAM channel with nothing above the dispatcher. Tests subclass it with their own
    way of launching kernels."""

    def __init__(self, preset: str, policy: str = "round_robin", trace: bool = True) -> None:
        self.spec = PRESETS[preset]
        self.engine = Engine()
        self.tracer = Tracer(enabled=trace)
        self.functional = False
        self.memory = None
        self.node = 1
        self.cus = [ComputeUnit(self.spec, i) for i in range(self.spec.num_cus)]
        self.channel = MemoryChannel(self.spec)
        self.dispatcher = Dispatcher(self, policy)
