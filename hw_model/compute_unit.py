"""Compute unit: its resources (wave slots, VGPRs, SGPRs, LDS, barriers) and WG timing.

Models a GCN/CDNA CU as AMD's ISA manuals and the ROCm occupancy guide describe it: four
SIMD16 units, each with a fixed number of wave slots and a VGPR file allocated per wave in
granules; SGPRs per SIMD; LDS and barrier slots per CU. A workgroup is resident only when
every one of its waves holds a slot and registers, and the group holds its LDS and a barrier.

Timing (first model, refined in docs/timing.md): a wave issues its VALU ops on a SIMD16 at
4 cycles each (wave64), scalar ops at 1 cycle; the waves resident on a SIMD share its issue
slot; each dependent global-memory round trip costs the memory latency unless enough other
waves have work to hide it; and the bytes a workgroup moves go through one memory channel
with the preset's bandwidth, shared by every CU (so a busy GPU becomes memory-bound).
"""

from __future__ import annotations

from dataclasses import dataclass

from hw_model.config import GpuSpec
from hw_model.kernels.base import CostProfile


@dataclass(frozen=True, slots=True)
class WgRequirements:
    """What one workgroup of a dispatch needs, already rounded to allocation granules."""

    waves: int
    vgprs: int  # per wave, per lane, rounded to the VGPR granule
    sgprs: int  # per wave, rounded to the SGPR granule
    lds: int  # bytes per workgroup, rounded to the LDS granule
    barrier: bool  # needs a barrier slot (more than one wave)


def round_up(x: int, granule: int) -> int:
    return -(-x // granule) * granule if granule > 1 else x


def wg_requirements(
    spec: GpuSpec, workitems: int, vgprs: int, sgprs: int, lds_bytes: int
) -> WgRequirements:
    waves = -(-workitems // spec.wavefront_size)
    return WgRequirements(
        waves=waves,
        vgprs=round_up(max(vgprs, 1), spec.vgpr_alloc_granule),
        sgprs=round_up(max(sgprs, 1), spec.sgpr_alloc_granule),
        lds=round_up(lds_bytes, spec.lds_alloc_granule),
        barrier=waves > 1,
    )


class Simd:
    __slots__ = ("free_slots", "free_vgprs", "free_sgprs", "waves")

    def __init__(self, spec: GpuSpec) -> None:
        self.free_slots = spec.wave_slots_per_simd
        self.free_vgprs = spec.vgprs_per_simd_lane
        self.free_sgprs = spec.sgprs_per_simd
        self.waves = 0


class ComputeUnit:
    """Resource bookkeeping of one CU; placement returns the SIMD of each wave."""

    def __init__(self, spec: GpuSpec, index: int) -> None:
        self.spec = spec
        self.index = index
        self.simds = [Simd(spec) for _ in range(spec.simds_per_cu)]
        self.free_lds = spec.lds_per_cu
        self.free_barriers = spec.barrier_slots_per_cu
        self.resident_wgs = 0
        self.busy_ps = 0  # time with at least one resident workgroup
        self._busy_since = 0
        self.wgs_run = 0

    @property
    def waves(self) -> int:
        return sum(s.waves for s in self.simds)

    def try_place(self, req: WgRequirements) -> list[int] | None:
        """SIMD index for each wave if the whole workgroup fits now, else None."""
        if req.lds > self.free_lds or (req.barrier and self.free_barriers == 0):
            return None
        simds = self.simds
        if sum(s.free_slots for s in simds) < req.waves:
            return None
        # Waves of a workgroup go round-robin over SIMDs, starting at the least loaded one,
        # as the SPI spreads them (each SIMD must keep a slot and registers per wave).
        n = len(simds)
        loads = [s.waves for s in simds]
        start = loads.index(min(loads))
        slots = [s.free_slots for s in simds]
        vgprs = [s.free_vgprs for s in simds]
        sgprs = [s.free_sgprs for s in simds]
        out: list[int] = []
        i = start
        for _ in range(req.waves):
            for _try in range(n):
                if slots[i] > 0 and vgprs[i] >= req.vgprs and sgprs[i] >= req.sgprs:
                    break
                i = (i + 1) % n
            else:
                return None
            slots[i] -= 1
            vgprs[i] -= req.vgprs
            sgprs[i] -= req.sgprs
            out.append(i)
            i = (i + 1) % n
        return out

    def allocate(self, req: WgRequirements, placement: list[int], now: int) -> None:
        if self.resident_wgs == 0:
            self._busy_since = now
        for i in placement:
            s = self.simds[i]
            s.free_slots -= 1
            s.free_vgprs -= req.vgprs
            s.free_sgprs -= req.sgprs
            s.waves += 1
        self.free_lds -= req.lds
        if req.barrier:
            self.free_barriers -= 1
        self.resident_wgs += 1

    def release(self, req: WgRequirements, placement: list[int], now: int) -> None:
        for i in placement:
            s = self.simds[i]
            s.free_slots += 1
            s.free_vgprs += req.vgprs
            s.free_sgprs += req.sgprs
            s.waves -= 1
        self.free_lds += req.lds
        if req.barrier:
            self.free_barriers += 1
        self.resident_wgs -= 1
        self.wgs_run += 1
        if self.resident_wgs == 0:
            self.busy_ps += now - self._busy_since

    def state(self) -> dict:
        return {
            "index": self.index,
            "resident_wgs": self.resident_wgs,
            "waves": [s.waves for s in self.simds],
            "free_wave_slots": [s.free_slots for s in self.simds],
            "free_vgprs": [s.free_vgprs for s in self.simds],
            "free_lds": self.free_lds,
            "free_barriers": self.free_barriers,
        }


class MemoryChannel:
    """The GPU's DRAM bandwidth as one FIFO server shared by all CUs."""

    def __init__(self, spec: GpuSpec) -> None:
        # bytes per picosecond = GB/s / 1000
        self.bytes_per_ps = spec.memory_bandwidth_gbps / 1000.0
        self.free_at = 0
        self.bytes_moved = 0

    def transfer(self, now: int, nbytes: int) -> int:
        """Reserve the channel for `nbytes`; returns the tick the last byte arrives."""
        if nbytes <= 0:
            return now
        start = max(now, self.free_at)
        self.free_at = start + int(nbytes / self.bytes_per_ps)
        self.bytes_moved += nbytes
        return self.free_at


def wg_duration(
    spec: GpuSpec,
    cu: ComputeUnit,
    placement: list[int],
    cost: CostProfile,
    workitems: int,
    channel: MemoryChannel,
    now: int,
) -> int:
    """Picoseconds from placement to completion of one workgroup on `cu`."""
    cyc = spec.cycle_ps
    issue_cycles = spec.wavefront_size // spec.simd_width  # 4 for wave64 on SIMD16
    wave_cycles = cost.valu * issue_cycles + cost.salu + cost.lds * issue_cycles
    # Waves resident on the busiest SIMD this WG uses share its issue port.
    sharing = max(cu.simds[i].waves for i in placement) if placement else 1
    compute_ps = wave_cycles * max(sharing, 1) * cyc
    latency_ps = cost.mem_ops * spec.memory_latency_ns * 1000
    # Latency is hidden when other resident waves have issue work to fill it.
    wave_ps = max(compute_ps, wave_cycles * cyc + latency_ps)
    nbytes = (cost.load_bytes + cost.store_bytes) * workitems
    mem_done = channel.transfer(now, nbytes)
    return max(wave_ps, mem_done - now + (latency_ps if nbytes else 0)) + cyc
