"""Remote agents: the same properties and methods as `rocr.Agent`, read from the server once."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rocr.agent import DeviceType, check_queue_args
from rocr.memory import Segment, filter_pools
from rocr.service.schemas import AgentInfo
from rocr.validate import as_u32

if TYPE_CHECKING:
    from rocr.client.memory import MemoryPool
    from rocr.client.queue import Queue
    from rocr.client.runtime import Runtime


class Agent:
    """hsa_agent_t of a served system."""

    def __init__(self, rt: Runtime, info: AgentInfo) -> None:
        self.rt = rt
        self._info = info.model_dump()
        self._info.pop("pools", None)
        self.node: int = info.node
        self.device_type = DeviceType[info.device_type]
        self._pools: list[MemoryPool] = []

    def __repr__(self) -> str:
        return f"Agent({self.name}, node {self.node}, {self.device_type.name})"

    def __getattr__(self, key: str) -> Any:
        # Every hsa_agent_get_info field the server reports, under rocr.Agent's names.
        info = self.__dict__.get("_info", {})
        if key in info:
            v = info[key]
            return tuple(v) if isinstance(v, list) else v
        raise AttributeError(key)

    @property
    def is_gpu(self) -> bool:
        return self.device_type == DeviceType.GPU

    @property
    def name(self) -> str:
        return self._info["name"]

    @property
    def handle(self) -> int:
        return self.node

    def info(self) -> dict:
        return dict(self._info)

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

    def create_queue(
        self,
        size: int = 256,
        callback: Callable | None = None,
        *,
        priority: int = 0,
        private_segment_size: int = 0,
        group_segment_size: int = 0,
    ) -> Queue:
        """hsa_queue_create. `callback(error, queue)` runs when this client sees the error."""
        size, callback, priority = check_queue_args(self, size, callback, priority)
        as_u32(private_segment_size, "private_segment_size")
        as_u32(group_segment_size, "group_segment_size")
        return self.rt._create_queue(self, size, callback, priority)
