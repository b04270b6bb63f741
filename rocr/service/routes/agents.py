"""Agents (hsa_iterate_agents, hsa_agent_get_info) and their memory pools
(hsa_amd_agent_iterate_memory_pools, hsa_amd_memory_pool_get_info)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

import rocr
from rocr.service.deps import ERRORS, PREFIX, System
from rocr.service.emulation import EmulatedRoute, EmulatedRouter, light
from rocr.service.schemas import AgentInfo, PoolInfo
from rocr.service.systems import ServedSystem

router = EmulatedRouter(
    prefix=PREFIX, tags=["agents and pools"], responses=ERRORS, route_class=EmulatedRoute
)


def agent_info(s: ServedSystem, a: rocr.Agent) -> AgentInfo:
    pools = [s.pool_id(p) for p in a.pools()]
    return AgentInfo(**a.info(), pools=pools)


def pool_info(s: ServedSystem, p: rocr.MemoryPool) -> PoolInfo:
    return PoolInfo(
        **p.info(),
        id=s.pool_id(p),
        agent=p.owner.node,
        index=p.owner.pools().index(p),
        fine_grained=p.fine_grained,
        coarse_grained=p.coarse_grained,
        kernarg=p.kernarg,
    )


@router.get("/agents")
@light
def list_agents(s: System) -> list[AgentInfo]:
    with s.use(counts=False) as rt:
        return [agent_info(s, a) for a in rt.agents()]


@router.get("/agents/{node}")
@light
def get_agent(node: int, s: System) -> AgentInfo:
    with s.use(counts=False):
        return agent_info(s, s.agent(node))


@router.get("/pools")
@light
def list_pools(
    s: System, agent: Annotated[int | None, Query(description="only this agent's pools")] = None
) -> list[PoolInfo]:
    with s.use(counts=False):
        pools = s.pools if agent is None else s.agent(agent).pools()
        return [pool_info(s, p) for p in pools]


@router.get("/pools/{pool_id}")
@light
def get_pool(pool_id: int, s: System) -> PoolInfo:
    with s.use(counts=False):
        return pool_info(s, s.pool(pool_id))
