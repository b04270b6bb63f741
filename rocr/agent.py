"""HSA agents: the CPU and each GPU, with the info ROCr reports (hsa_agent_get_info).

Everything comes from the KFD topology the thunk parsed (HsaNodeProperties), plus the limits
that are ROCr's own choices: queue sizes (GpuAgent minAqlSize_/maxAqlSize_), the number of
queues, workgroup and grid maxima.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum
from typing import TYPE_CHECKING

from rocr.errors import HsaError
from rocr.memory import GlobalFlag, MemoryPool, Segment, filter_pools
from rocr.queue import kmt_priority
from rocr.status import Status
from rocr.validate import as_int, as_u32, show

if TYPE_CHECKING:
    from rocr.queue import Queue
    from rocr.runtime import Runtime
    from roct import NodeProperties

QUEUE_MIN_PACKETS = 0x40  # ROCr GpuAgent minAqlSize_: 64 packets (4 KiB)
QUEUE_MAX_PACKETS = 0x20000  # ROCr GpuAgent maxAqlSize_: 128 Ki packets
QUEUES_MAX = 128  # ROCr default max_queues (HSA_MAX_QUEUES)
WORKGROUP_MAX_SIZE = 1024  # HSA_AGENT_INFO_WORKGROUP_MAX_SIZE on gfx9 (ROCr GpuAgent)
WORKGROUP_MAX_DIM = (1024, 1024, 1024)
GRID_MAX_SIZE = 0xFFFFFFFF  # HSA_AGENT_INFO_GRID_MAX_SIZE (UINT32_MAX)
GRID_MAX_DIM = (0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF)


class DeviceType(IntEnum):
    """hsa_device_type_t."""

    CPU = 0
    GPU = 1
    DSP = 2


class Agent:
    def __init__(self, rt: Runtime, node: int, props: NodeProperties) -> None:
        self.rt = rt
        self.node = node
        self.props = props
        self.device_type = DeviceType.GPU if props.is_gpu else DeviceType.CPU
        self._pools: list[MemoryPool] = []

    # -- info ------------------------------------------------------------------------------
    @property
    def is_gpu(self) -> bool:
        return self.device_type == DeviceType.GPU

    @property
    def name(self) -> str:
        return self.props.AMDName if self.is_gpu else "CPU"

    @property
    def handle(self) -> int:
        return self.node

    @property
    def wavefront_size(self) -> int:
        return self.props.WaveFrontSize

    @property
    def compute_unit_count(self) -> int:
        if self.is_gpu:
            return self.props.NumFComputeCores // max(self.props.NumSIMDPerCU, 1)
        return self.props.NumCPUCores

    @property
    def simds_per_cu(self) -> int:
        return self.props.NumSIMDPerCU

    @property
    def max_waves_per_cu(self) -> int:
        return self.props.MaxWavesPerSIMD * self.props.NumSIMDPerCU

    @property
    def workgroup_max_size(self) -> int:
        return WORKGROUP_MAX_SIZE if self.is_gpu else 0

    @property
    def workgroup_max_dim(self) -> tuple[int, int, int]:
        return WORKGROUP_MAX_DIM if self.is_gpu else (0, 0, 0)

    @property
    def grid_max_size(self) -> int:
        return GRID_MAX_SIZE if self.is_gpu else 0

    @property
    def grid_max_dim(self) -> tuple[int, int, int]:
        return GRID_MAX_DIM if self.is_gpu else (0, 0, 0)

    @property
    def queue_min_size(self) -> int:
        return QUEUE_MIN_PACKETS if self.is_gpu else 0

    @property
    def queue_max_size(self) -> int:
        return QUEUE_MAX_PACKETS if self.is_gpu else 0

    @property
    def queues_max(self) -> int:
        return QUEUES_MAX if self.is_gpu else 0

    @property
    def lds_size(self) -> int:
        return self.props.LDSSizeInKB * 1024

    @property
    def gfx_target_version(self) -> int:
        return self.props.EngineId

    def info(self) -> dict:
        """Everything hsa_agent_get_info would tell, under rocminfo's names."""
        return {
            "name": self.name,
            "marketing_name": self.name if not self.is_gpu else self.props.AMDName,
            "device_type": self.device_type.name,
            "node": self.node,
            "gpu_id": self.props.KFDGpuID,
            "wavefront_size": self.wavefront_size,
            "compute_unit_count": self.compute_unit_count,
            "simds_per_cu": self.simds_per_cu,
            "max_waves_per_cu": self.max_waves_per_cu,
            "workgroup_max_size": self.workgroup_max_size,
            "workgroup_max_dim": list(self.workgroup_max_dim),
            "grid_max_size": self.grid_max_size,
            "grid_max_dim": list(self.grid_max_dim),
            "queue_min_size": self.queue_min_size,
            "queue_max_size": self.queue_max_size,
            "queues_max": self.queues_max,
            "lds_size": self.lds_size,
            "max_clock_mhz": self.props.MaxEngineClockMhzFCompute
            if self.is_gpu
            else self.props.MaxEngineClockMhzCCompute,
            "gfx_target_version": self.gfx_target_version,
            "vendor_id": self.props.VendorId,
            "device_id": self.props.DeviceId,
            "local_mem_size": self.props.LocalMemSize,
            "num_sdma_engines": self.props.NumSdmaEngines,
            "num_cp_queues": self.props.NumCpQueues,
        }

    def __repr__(self) -> str:
        return f"Agent({self.name}, node {self.node}, {self.device_type.name})"

    # -- pools -----------------------------------------------------------------------------
    def _add_pool(self, pool: MemoryPool) -> None:
        self._pools.append(pool)

    def pools(
        self,
        *,
        kernarg: bool | None = None,
        fine_grained: bool | None = None,
        coarse_grained: bool | None = None,
        segment: Segment | None = None,
    ) -> list[MemoryPool]:
        """hsa_amd_agent_iterate_memory_pools, filtered by the given properties."""
        return filter_pools(
            self._pools,
            kernarg=kernarg,
            fine_grained=fine_grained,
            coarse_grained=coarse_grained,
            segment=segment,
        )

    # -- queues ----------------------------------------------------------------------------
    def create_queue(
        self,
        size: int = 256,
        callback: Callable | None = None,
        *,
        priority: int = 0,
        private_segment_size: int = 0,
        group_segment_size: int = 0,
    ) -> Queue:
        """hsa_queue_create. `size` is in packets and must be a power of two within
        [queue_min_size, queue_max_size]."""
        size, callback, priority = check_queue_args(self, size, callback, priority)
        as_u32(private_segment_size, "private_segment_size")
        as_u32(group_segment_size, "group_segment_size")
        return self.rt._create_queue(self, size, callback, priority)


def check_queue_args(
    agent: object, size: object, callback: object, priority: object
) -> tuple[int, Callable | None, int]:
    """The argument checks of hsa_queue_create (size a power of two: INVALID_ARGUMENT, as
    hsa.cpp's hsa_queue_create), the error callback and the priority; shared with the client."""
    rt = getattr(agent, "rt", None)
    if rt is not None and getattr(rt, "closed", False):
        raise HsaError(Status.ERROR_NOT_INITIALIZED, "the runtime was shut down")
    n = as_int(size, "size", 1, None, why="packets, a power of two such as 256 or 1024")
    if n & (n - 1):
        raise HsaError(
            Status.ERROR_INVALID_ARGUMENT,
            f"size = {n} packets is not a power of two (e.g. 256, 1024)",
        )
    if callback is not None and not callable(callback):
        raise HsaError(
            Status.ERROR_INVALID_ARGUMENT,
            f"callback must be a function (error, queue) -> None or None, got "
            f"{show(callback)} ({type(callback).__name__})",
        )
    kmt_priority(priority)  # type: ignore[arg-type]
    return n, callback, priority  # type: ignore[return-value]


def make_pools(rt: Runtime, agent: Agent, mem_size: int) -> None:
    if agent.is_gpu:
        agent._add_pool(
            MemoryPool(
                rt,
                agent,
                Segment.GLOBAL,
                GlobalFlag.COARSE_GRAINED,
                mem_size,
                vram=True,
                name="VRAM coarse-grained",
            )
        )
        agent._add_pool(
            MemoryPool(
                rt,
                agent,
                Segment.GROUP,
                GlobalFlag(0),
                agent.lds_size,
                vram=False,
                name="group segment (LDS)",
            )
        )
    else:
        fg = GlobalFlag.FINE_GRAINED
        agent._add_pool(
            MemoryPool(
                rt,
                agent,
                Segment.GLOBAL,
                fg | GlobalFlag.KERNARG_INIT,
                mem_size,
                vram=False,
                name="system fine-grained kernarg",
            )
        )
        agent._add_pool(
            MemoryPool(
                rt, agent, Segment.GLOBAL, fg, mem_size, vram=False, name="system fine-grained"
            )
        )
        agent._add_pool(
            MemoryPool(
                rt,
                agent,
                Segment.GLOBAL,
                GlobalFlag.COARSE_GRAINED,
                mem_size,
                vram=False,
                name="system coarse-grained",
            )
        )
