"""GPU and system presets as frozen specs (Akita-style spec/state split).

Each number names its source: AMD whitepapers and ISA manuals, the Linux amdgpu/amdkfd
sources (what the real driver reports in topology), LLVM's AMDGPU backend (register
granules), gem5's apu_se.py defaults, or says it is a guess.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from hw_model.engine import PS_PER_NS, PS_PER_US

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class GpuSpec(Frozen):
    """One GPU agent: the numbers the dispatcher, CUs, CP and topology read."""

    name: str  # gfx target, as rocminfo's "Name"
    marketing_name: str
    gfx_target_version: int  # KFD topology "gfx_target_version", e.g. 90000 for gfx900
    device_id: int  # PCI device id (topology "device_id")
    # Shader layout
    num_cus: int = Field(gt=0)
    shader_engines: int = Field(gt=0)
    arrays_per_engine: int = Field(gt=0, default=1)
    simds_per_cu: int = 4  # GCN/CDNA: 4 SIMD16 units per CU (GCN3 ISA manual, CDNA whitepapers)
    wave_slots_per_simd: int = 10  # gfx9: 10 wave slots per SIMD (Vega ISA manual)
    wavefront_size: int = 64  # GCN/CDNA wave64
    simd_width: int = 16  # lanes per SIMD: a wave64 VALU op issues over 4 cycles (GCN3 ISA)
    vgprs_per_simd_lane: int = 256  # gfx9: 256 VGPRs x 64 lanes x 4 B = 64 KiB per SIMD
    vgpr_alloc_granule: int = 4  # LLVM AMDGPUBaseInfo getVGPRAllocGranule: 4 on gfx9
    max_vgprs_per_wave: int = 256
    sgprs_per_simd: int = 800  # gfx9: 800 SGPRs per SIMD (Vega ISA manual, sec. 3.6)
    sgpr_alloc_granule: int = 16  # LLVM getSGPRAllocGranule: 16 on gfx8+
    max_sgprs_per_wave: int = 102  # LLVM getAddressableNumSGPRs on gfx9 (with VCC: 104)
    lds_per_cu: int = 64 * KiB  # 64 KiB LDS per CU (Vega ISA manual; CDNA2/3 whitepapers)
    lds_alloc_granule: int = 512  # rsrc2 GRANULATED_LDS_SIZE unit on gfx9: 128 dwords
    barrier_slots_per_cu: int = 16  # 16 workgroup barriers per CU (gem5 GPU model; guess)
    max_workgroup_size: int = 1024  # HSA_AGENT_INFO_WORKGROUP_MAX_SIZE on every gfx9 (ROCr)
    max_grid_size: int = 0xFFFFFFFF  # HSA_AGENT_INFO_GRID_MAX_SIZE (ROCr: UINT32_MAX)
    # Clocks and memory
    engine_clock_mhz: int
    memory_clock_mhz: int
    memory_bandwidth_gbps: float  # GB/s, peak
    memory_latency_ns: int  # load-to-use latency of a DRAM access
    l2_size: int
    cacheline_size: int = 64  # HSA_AMD_AGENT_INFO_CACHELINE_SIZE on gfx9 (ROCr topology)
    vram_size: int
    # Queues
    hqd_slots: int = Field(gt=0)  # compute HQDs the HW scheduler can map at once
    vmids_for_kfd: int = 8  # amdgpu gives KFD VMIDs 8..15 on gfx9 (amdgpu_amdkfd.c)
    sdma_engines: int = 2
    sdma_queues_per_engine: int = 2
    doorbell_size: int = 8  # SOC15 doorbells are 64-bit (kfd_doorbell.c)
    queue_min_packets: int = 0x40  # ROCr GpuAgent minAqlSize_ (4 KiB of packets)
    queue_max_packets: int = 0x20000  # ROCr GpuAgent maxAqlSize_ (128 Ki packets)
    queues_max: int = 128  # ROCr HSA_AGENT_INFO_QUEUES_MAX default (max_queues flag)
    # Latencies
    cp_packet_latency_ps: int  # fetch+decode+launch of one AQL packet by the packet processor
    cp_retire_latency_ps: int  # end-of-kernel: release fence, signal write
    wg_dispatch_latency_ps: int  # dispatcher: one workgroup onto a CU
    hqd_switch_latency_ps: int  # HW scheduler: unmap one queue and map another
    quantum_ps: int  # HW scheduler timeslice when oversubscribed
    interrupt_latency_ps: int  # CP raises interrupt -> KFD handler runs
    # Fences: system scope writes back/invalidates L2 for the host; agent scope only the
    # CU-level caches. DESIGN: a system-scope release costs ~3.7 us more than agent scope.
    acquire_fence_agent_ps: int = 100 * PS_PER_NS  # guess: L1/K$ invalidate
    acquire_fence_system_ps: int = 300 * PS_PER_NS  # guess: + L2 invalidate of host lines
    release_fence_agent_ps: int = 300 * PS_PER_NS  # guess: wait for CU writes to reach L2
    release_fence_system_ps: int = 4000 * PS_PER_NS  # agent + 3.7 us L2 writeback (DESIGN)
    timestamp_frequency_hz: int = 100_000_000  # gfx9 GPU timestamp counter: 100 MHz (ROCr)

    @property
    def max_waves_per_cu(self) -> int:
        return self.simds_per_cu * self.wave_slots_per_simd

    @property
    def cycle_ps(self) -> int:
        return 1_000_000 // self.engine_clock_mhz

    @property
    def vgpr_file_per_simd(self) -> int:
        return self.vgprs_per_simd_lane


class HostCosts(Frozen):
    """Modeled host CPU time of host-side actions (the host clock advances by these)."""

    syscall_ps: int = 1 * PS_PER_US  # an ioctl round trip on Linux: ~1 us (guess, typical)
    doorbell_store_ps: int = 100 * PS_PER_NS  # uncached MMIO store over PCIe: ~100 ns (DESIGN)
    memory_op_ps: int = 50 * PS_PER_NS  # atomic on a signal in host memory (guess)
    packet_write_ps: int = 20 * PS_PER_NS  # 64-byte store to the ring (guess)
    wakeup_ps: int = 10 * PS_PER_US  # interrupt -> wait_event returns -> thread runs (guess)
    alloc_ps: int = 37 * PS_PER_US  # signal/kernarg allocation with a driver trip (DESIGN)


SchedulerPolicyName = Literal["round_robin", "priority", "ready_first"]
PlacementPolicyName = Literal["round_robin", "greedy", "partition"]


class SystemSpec(Frozen):
    gpu: GpuSpec
    num_gpus: int = 1
    system_memory: int = 64 * GiB
    host: HostCosts = HostCosts()
    scheduler_policy: SchedulerPolicyName = "round_robin"
    placement_policy: PlacementPolicyName = "round_robin"
    functional: bool = True  # run kernels' numpy bodies (False: timing only)
    trace: bool = True


TEACHING = GpuSpec(
    name="gfx900",
    marketing_name="hsaemu teaching GPU (2 CUs)",
    gfx_target_version=90000,
    device_id=0x6860,  # Vega 10 device id (pci.ids), kept so tools recognise the ISA
    num_cus=2,  # small on purpose: every CU and slot fits on a screen
    shader_engines=1,
    engine_clock_mhz=1000,  # round number for readable timelines (guess)
    memory_clock_mhz=500,
    memory_bandwidth_gbps=64.0,  # guess: a quarter of a low-end card, so memory limits show
    memory_latency_ns=500,  # ~500 cycles at 1 GHz, GCN-era DRAM latency (guess)
    l2_size=256 * KiB,
    vram_size=1 * GiB,
    hqd_slots=2,  # two HW queue slots: oversubscription with the third queue
    vmids_for_kfd=8,
    cp_packet_latency_ps=2 * PS_PER_US,  # within the 5-10 us dispatch latency (ROCm blog, Fiji)
    cp_retire_latency_ps=1 * PS_PER_US,  # guess
    wg_dispatch_latency_ps=40 * PS_PER_NS,  # guess: ~40 cycles per workgroup launch
    hqd_switch_latency_ps=10 * PS_PER_US,  # guess: HWS unmap/map of one HQD
    quantum_ps=100 * PS_PER_US,  # gem5 default HW queue quantum
    interrupt_latency_ps=2 * PS_PER_US,  # guess: IH ring -> KFD interrupt handler
)

GFX900 = GpuSpec(
    name="gfx900",
    marketing_name="Radeon Instinct MI25 (Vega 10)",
    gfx_target_version=90000,
    device_id=0x6860,
    num_cus=64,  # Vega 10: 64 CUs (AMD Vega whitepaper)
    shader_engines=4,  # Vega 10: 4 shader engines x 16 CUs
    engine_clock_mhz=1500,  # MI25 peak engine clock (AMD product page)
    memory_clock_mhz=945,  # MI25 HBM2 (AMD product page)
    memory_bandwidth_gbps=484.0,  # MI25: 2048-bit HBM2 at 945 MHz = 484 GB/s
    memory_latency_ns=470,  # ~700 cycles at 1.5 GHz (microbenchmarks of Vega; approximate)
    l2_size=4 * MiB,  # Vega 10: 4 MiB L2 (whitepaper)
    vram_size=16 * GiB,  # MI25: 16 GB HBM2
    hqd_slots=24,  # KFD on gfx9: 3 pipes x 8 queues for compute it manages (DESIGN)
    cp_packet_latency_ps=2 * PS_PER_US,  # within the 5-10 us dispatch latency (ROCm blog, Fiji)
    cp_retire_latency_ps=1 * PS_PER_US,  # guess
    wg_dispatch_latency_ps=25 * PS_PER_NS,  # guess: ~40 cycles per workgroup launch
    hqd_switch_latency_ps=10 * PS_PER_US,  # guess
    quantum_ps=100 * PS_PER_US,  # gem5 default; the real HWS uses a similar ms-scale slice
    interrupt_latency_ps=2 * PS_PER_US,  # guess
)

GFX90A = GFX900.model_copy(
    update=dict(
        name="gfx90a",
        marketing_name="AMD Instinct MI250X (one GCD)",
        gfx_target_version=90010,
        device_id=0x740C,
        num_cus=110,  # MI250X: 220 CUs over 2 GCDs (CDNA2 whitepaper)
        shader_engines=8,  # CDNA2 GCD: 8 shader engines (amdgpu gfx_v9_4_2 config; approx.)
        wave_slots_per_simd=8,  # CDNA2: 8 waves per SIMD (CDNA2 ISA manual)
        vgprs_per_simd_lane=512,  # unified VGPR+AGPR file, 512 per lane (CDNA2 ISA)
        vgpr_alloc_granule=8,  # LLVM getVGPRAllocGranule: 8 on gfx90a
        max_vgprs_per_wave=512,
        engine_clock_mhz=1700,  # MI250X peak engine clock
        memory_clock_mhz=1600,
        memory_bandwidth_gbps=1638.4,  # MI250X 3.2768 TB/s over 2 GCDs
        memory_latency_ns=400,  # guess: HBM2e load latency, CDNA microbenchmarks ~ 650 cycles
        l2_size=8 * MiB,  # CDNA2 GCD: 8 MiB L2
        vram_size=64 * GiB,  # 128 GB per MI250X, 64 GB per GCD
        hqd_slots=24,
        sdma_engines=5,  # gfx90a: 5 SDMA engines (amdgpu sdma_v4_4_2? approx.; guess)
    )
)

GFX942 = GFX900.model_copy(
    update=dict(
        name="gfx942",
        marketing_name="AMD Instinct MI300X",
        gfx_target_version=90402,
        device_id=0x74A1,
        num_cus=304,  # MI300X: 304 CUs over 8 XCDs (CDNA3 whitepaper)
        shader_engines=32,  # 8 XCDs x 4 shader arrays (CDNA3 whitepaper)
        wave_slots_per_simd=8,  # CDNA3: 8 waves per SIMD (CDNA3 ISA manual)
        vgprs_per_simd_lane=512,  # unified VGPR+AGPR, 512 per lane (CDNA3 ISA)
        vgpr_alloc_granule=8,  # LLVM getVGPRAllocGranule: 8 on gfx942
        max_vgprs_per_wave=512,
        engine_clock_mhz=2100,  # MI300X peak engine clock
        memory_clock_mhz=2600,
        memory_bandwidth_gbps=5300.0,  # MI300X: 5.3 TB/s HBM3
        memory_latency_ns=400,  # guess
        l2_size=4 * MiB,  # 4 MiB L2 per XCD (CDNA3 whitepaper); Infinity Cache not modeled
        vram_size=192 * GiB,
        hqd_slots=24,
        sdma_engines=14,  # guess: MI300X exposes many SDMA engines (xGMI + PCIe)
    )
)

GEM5 = GpuSpec(
    name="gfx801",  # gem5's GPU model in apu_se.py runs Carrizo/gfx801-era code objects
    marketing_name="gem5 APU (apu_se.py defaults)",
    gfx_target_version=80001,
    device_id=0x9870,  # Carrizo (gem5's default dGPU device id for the APU)
    num_cus=4,  # apu_se.py --num-compute-units default 4
    shader_engines=1,
    wave_slots_per_simd=10,  # apu_se.py --wfs-per-simd default 10
    engine_clock_mhz=1000,  # apu_se.py --gpu-clock default 1GHz
    memory_clock_mhz=800,
    memory_bandwidth_gbps=12.8,  # gem5 default DDR3_1600_8x8: 12.8 GB/s
    memory_latency_ns=100,  # gem5 classic memory latency, order of magnitude (guess)
    l2_size=256 * KiB,  # apu_se.py --l2_size default 256kB
    vram_size=512 * MiB,
    hqd_slots=10,  # apu_se.py --num-hw-queues default 10
    cp_packet_latency_ps=4400 * PS_PER_NS,  # gem5 pkt-process latency 4.4 us (Kaveri, tutorial)
    cp_retire_latency_ps=0,  # gem5 decrements the signal without extra latency
    acquire_fence_agent_ps=0,  # gem5's packet processor charges no separate fence cost
    acquire_fence_system_ps=0,
    release_fence_agent_ps=0,
    release_fence_system_ps=0,
    wg_dispatch_latency_ps=1 * PS_PER_NS,  # gem5 dispatcher: one cycle per WG (approx.)
    hqd_switch_latency_ps=0,  # gem5's scheduler remaps instantly at the quantum
    quantum_ps=100 * PS_PER_US,  # gem5 HW queue scheduler quantum (tutorial)
    interrupt_latency_ps=1 * PS_PER_US,  # guess
)

PRESETS: dict[str, GpuSpec] = {
    "teaching": TEACHING,
    "gem5": GEM5,
    "gfx900": GFX900,
    "gfx90a": GFX90A,
    "gfx942": GFX942,
}

DEFAULT_PRESET = "gfx900"


def preset(name: str) -> GpuSpec:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(
            f"unknown preset {name!r}; choose one of {', '.join(sorted(PRESETS))}"
        ) from None


def system_spec(name: str = DEFAULT_PRESET, **overrides: object) -> SystemSpec:
    """A SystemSpec for a named GPU preset, with optional SystemSpec field overrides."""
    return SystemSpec(gpu=preset(name), **overrides)  # type: ignore[arg-type]
