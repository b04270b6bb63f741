"""GPU and system presets as frozen specs (Akita-style spec/state split).

Each number names its source: AMD whitepapers and ISA manuals, the Linux amdgpu/amdkfd
sources (what the real driver reports in topology), LLVM's AMDGPU backend (register
granules), gem5's apu_se.py defaults, or says it is a guess.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from hw_model import default_preset
from hw_model.engine import PS_PER_NS, PS_PER_US

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# GpuSpec numbers that may be zero: ids and optional cache levels (latencies, *_ps, may too).
_MAY_BE_ZERO = (
    "gfx_target_version",
    "device_id",
    "l3_size",
    "sdma_xgmi_engines",
    "xgmi_link_bandwidth_gbps",
)


class GpuSpec(Frozen):
    """One GPU agent: the numbers the dispatcher, CUs, CP and topology read."""

    name: str  # gfx target, as rocminfo's "Name"
    marketing_name: str
    gfx_target_version: int  # KFD topology "gfx_target_version", e.g. 90000 for gfx900
    device_id: int  # PCI device id (topology "device_id")
    # Shader layout
    num_cus: int = Field(gt=0)  # active CUs (rocminfo "Compute Unit")
    shader_engines: int = Field(gt=0)  # rocminfo "Shader Engines" (summed over XCCs)
    arrays_per_engine: int = Field(gt=0, default=1)  # rocminfo "Shader Arrs. per Eng."
    cu_per_simd_array: int = Field(gt=0, default=16)  # KFD topology: CUs per array incl. harvested
    num_xcc: int = Field(gt=0, default=1)  # compute dies (KFD topology "num_xcc")
    simds_per_cu: int = 4  # GCN/CDNA: 4 SIMD16 units per CU (GCN3 ISA manual, CDNA whitepapers)
    wave_slots_per_simd: int = 10  # LLVM getMaxWavesPerEU: 10 on gfx9, 8 on gfx90a/gfx942
    wavefront_size: int = 64  # GCN/CDNA wave64
    simd_width: int = 16  # lanes per SIMD: a wave64 VALU op issues over 4 cycles (GCN3 ISA)
    vgprs_per_simd_lane: int = 256  # LLVM getTotalNumVGPRs: 256 on gfx9, 512 on gfx90a/gfx942
    vgpr_alloc_granule: int = 4  # LLVM getVGPRAllocGranule: 4 on gfx9 wave64, 8 on gfx90a/gfx942
    max_vgprs_per_wave: int = 256  # LLVM getAddressableNumVGPRs: 256; 512 with AGPRs on gfx90a+
    sgprs_per_simd: int = 800  # LLVM getTotalNumSGPRs: 800 on GFX8/GFX9
    sgpr_alloc_granule: int = 16  # LLVM getSGPRAllocGranule: 16 on GFX8/GFX9
    max_sgprs_per_wave: int = 112  # LLVM getMaxNumSGPRs: 102 addressable + VCC/FLAT/XNACK = 112
    lds_per_cu: int = 64 * KiB  # 64 KiB LDS per CU (Vega ISA manual; CDNA2/3 whitepapers)
    lds_alloc_granule: int = 512  # LLVM getSIProgramInfo: LDS allocated in 128-dword blocks
    barrier_slots_per_cu: int = 16  # LLVM getMaxWorkGroupsPerCU: MaxBarriers = 16 (gem5 too)
    scratch_slots_per_cu: int = 32  # amdgpu gfx_v9_0_get_cu_info max_scratch_slots_per_cu
    scratch_alloc_granule: int = 1024  # LLVM getSIProgramInfo: scratch in 256-dword wave blocks
    max_workgroup_size: int = 1024  # HSA_AGENT_INFO_WORKGROUP_MAX_SIZE on every gfx9 (ROCr)
    max_grid_size: int = 0xFFFFFFFF  # HSA_AGENT_INFO_GRID_MAX_SIZE (ROCr: UINT32_MAX)
    # CU pipes shared by the four SIMDs (GCN whitepaper: one scalar ALU issuing one instruction
    # per clock; LDS of 32 banks x 4 B = 128 B/clk; the texture addresser takes 16 lanes/clk,
    # i.e. the 64 B/clk vector L1)
    salu_per_clock: int = 1
    lds_bytes_per_clock: int = 128
    vmem_lanes_per_clock: int = 16
    # Clocks and memory
    engine_clock_mhz: int
    memory_clock_mhz: int
    memory_bandwidth_gbps: float  # GB/s, peak
    memory_latency_ns: int  # load-to-use latency of a DRAM access by one wave, unloaded
    l2_size: int  # per L2 instance (rocminfo "L2"; one per XCC)
    l3_size: int = 0  # Infinity Cache / MALL (rocminfo "L3"); not modeled in timing
    cacheline_size: int = 64  # HSA_AMD_AGENT_INFO_CACHELINE_SIZE on gfx9 (ROCr topology)
    vram_size: int
    # Queues
    hqd_slots: int = Field(gt=0)  # compute HQDs the HW scheduler can map at once
    vmids_for_kfd: int = 8  # amdgpu gives KFD VMIDs 8..15 on gfx9 (amdgpu_amdkfd.c)
    # SDMA: engines the KFD hands user queues to, and RLC queues per engine (amdkfd
    # kfd_device.c kfd_device_info_set_sdma_info: 2 per engine for SDMA 4.0 (Vega 10), 8 from
    # SDMA 4.2 on). On an XGMI-capable part kfd_get_num_sdma_engines keeps 2 engines for PCIe
    # and the rest are "XGMI SDMA" engines (KFD_IOC_QUEUE_TYPE_SDMA_XGMI).
    sdma_engines: int = 2  # Vega 10: 2 SDMA instances (sdma_v4_0.c)
    sdma_xgmi_engines: int = 0
    sdma_queues_per_engine: int = 2  # Vega 10 (SDMA 4.0.0): 2 (kfd_device.c)
    sdma_bandwidth_gbps: float = 20.0  # guess: one engine's copy rate, GB/s
    # packet fetch + decode + the first DMA request of a copy (guess: ~1 us, in line with the
    # 5-10 us end-to-end hipMemcpyAsync latency reported for small copies)
    sdma_setup_latency_ps: int = 1 * PS_PER_US
    # Host link: PCIe generation x width (or XGMI to the CPU); copies and kernels touching
    # host memory share it.
    host_link: str = "PCIe 3.0 x16"
    # PCIe 3.0 x16: 8 GT/s x 16 lanes x 128b/130b = 15.75 GB/s raw; ~13 GB/s is what
    # rocm_bandwidth_test / hipMemcpy report for pinned memory on such a link (TLP overhead).
    link_bandwidth_gbps: float = 13.0
    link_latency_ns: int = 1000  # guess: a PCIe read round trip is ~0.5-1 us
    xgmi_link_bandwidth_gbps: float = 0.0  # GPU-GPU XGMI per link and direction; 0 = none
    xgmi_link_latency_ns: int = 500  # guess: one way over XGMI, below PCIe's ~1 us round trip
    doorbell_size: int = 8  # SOC15 doorbells are 64-bit (kfd_doorbell.c)
    queue_min_packets: int = 0x40  # ROCr GpuAgent minAqlSize_ (4 KiB of packets)
    queue_max_packets: int = 0x20000  # ROCr GpuAgent maxAqlSize_ (128 Ki packets)
    queues_max: int = 128  # ROCr HSA_AGENT_INFO_QUEUES_MAX default (max_queues flag)
    # Latencies
    cp_packet_latency_ps: int  # fetch+decode+launch of one AQL packet by the packet processor
    cp_retire_latency_ps: int  # end-of-kernel: release fence, signal write
    # SPI: launching one workgroup's waves on a CU. Each shader engine's SPI launches one
    # workgroup at a time, so this is also the per-engine launch interval.
    wg_dispatch_latency_ps: int
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

    @model_validator(mode="after")
    def _check_numbers(self) -> GpuSpec:
        """Reject numbers the model cannot run with (a zero clock divides by zero, a zero
        quantum makes the HW scheduler spin), naming the field."""
        for name, value in self.__dict__.items():
            if not isinstance(value, int | float) or isinstance(value, bool):
                continue
            if name.endswith("_ps") or name in _MAY_BE_ZERO:
                if value < 0:
                    raise ValueError(f"{name} = {value}: must be >= 0")
            elif value <= 0:
                raise ValueError(f"{name} = {value}: must be > 0")
        if self.quantum_ps < 1000:
            raise ValueError(f"quantum_ps = {self.quantum_ps}: must be at least 1 ns")
        return self

    @property
    def max_waves_per_cu(self) -> int:
        return self.simds_per_cu * self.wave_slots_per_simd

    @property
    def cycle_ps(self) -> int:
        return 1_000_000 // self.engine_clock_mhz

    @property
    def vgpr_file_per_simd(self) -> int:
        return self.vgprs_per_simd_lane

    @property
    def valu_flops_per_second(self) -> float:
        """FP32 FMA peak of the vector ALUs (2 flops per lane per clock, no packed math)."""
        lanes = self.num_cus * self.simds_per_cu * self.simd_width
        return 2.0 * lanes * self.engine_clock_mhz * 1e6

    @property
    def memory_bytes_per_second(self) -> float:
        return self.memory_bandwidth_gbps * 1e9


class HostCosts(Frozen):
    """Modeled host CPU time of host-side actions (the host clock advances by these)."""

    syscall_ps: int = 1 * PS_PER_US  # an ioctl round trip on Linux: ~1 us (guess, typical)
    doorbell_store_ps: int = 100 * PS_PER_NS  # uncached MMIO store over PCIe: ~100 ns (DESIGN)
    memory_op_ps: int = 50 * PS_PER_NS  # atomic on a signal in host memory (guess)
    packet_write_ps: int = 20 * PS_PER_NS  # 64-byte store to the ring (guess)
    wakeup_ps: int = 10 * PS_PER_US  # interrupt -> wait_event returns -> thread runs (guess)
    alloc_ps: int = 37 * PS_PER_US  # signal/kernarg allocation with a driver trip (DESIGN)


# Policy names are checked against the registries (hw_model.scheduler.SCHEDULER_POLICIES,
# hw_model.dispatcher.PLACEMENT_POLICIES) when the GPU is built, so a registered custom
# policy can be chosen by name here too.
SchedulerPolicyName = str
PlacementPolicyName = str


class SystemSpec(Frozen):
    gpu: GpuSpec
    num_gpus: int = 1
    system_memory: int = 64 * GiB
    host: HostCosts = HostCosts()
    scheduler_policy: SchedulerPolicyName = "round_robin"
    placement_policy: PlacementPolicyName = "round_robin"
    functional: bool = True  # run kernels' numpy bodies (False: timing only)
    trace: bool = False


TEACHING = GpuSpec(
    name="gfx900",
    marketing_name="hsaemu teaching GPU (2 CUs)",
    gfx_target_version=90000,
    device_id=0x6860,  # Vega 10 device id (pci.ids), kept so tools recognise the ISA
    num_cus=2,  # small on purpose: every CU and slot fits on a screen
    shader_engines=1,  # one engine, one array of the 2 CUs
    cu_per_simd_array=2,
    engine_clock_mhz=1000,  # round number for readable timelines (guess)
    memory_clock_mhz=500,  # guess, round number
    memory_bandwidth_gbps=64.0,  # guess: low, so the memory wall shows with 2 CUs
    memory_latency_ns=500,  # guess: 500 cycles at 1 GHz, GCN-era DRAM latency
    l2_size=256 * KiB,  # guess: small teaching GPU
    vram_size=1 * GiB,  # guess: small teaching GPU
    hqd_slots=2,  # two HW queue slots: oversubscription with the third queue
    vmids_for_kfd=8,  # as gfx9: amdgpu gives KFD VMIDs 8..15
    cp_packet_latency_ps=2 * PS_PER_US,  # within the 5-10 us dispatch latency (ROCm blog, Fiji)
    cp_retire_latency_ps=1 * PS_PER_US,  # guess
    wg_dispatch_latency_ps=40 * PS_PER_NS,  # guess: ~40 cycles to launch a workgroup's waves
    hqd_switch_latency_ps=10 * PS_PER_US,  # guess: HWS unmap/map of one HQD
    quantum_ps=100 * PS_PER_US,  # gem5 default HW queue quantum
    interrupt_latency_ps=2 * PS_PER_US,  # guess: IH ring -> KFD interrupt handler
    host_link="slow teaching link (guess)",
    link_bandwidth_gbps=2.0,  # guess: slow on purpose, so copy time dominates and shows
    link_latency_ns=2000,  # guess: slow on purpose
    sdma_bandwidth_gbps=8.0,  # guess
)

GFX900 = GpuSpec(
    name="gfx900",
    marketing_name="Radeon Instinct MI25 (Vega 10)",
    gfx_target_version=90000,
    device_id=0x6860,  # Vega 10 (pci.ids; gem5 hsaTopology createVegaTopology: 26720)
    num_cus=64,  # Vega 10: 64 CUs (AMD Vega whitepaper)
    shader_engines=4,  # gem5 createVegaTopology: array_count 4, 1 array per engine
    cu_per_simd_array=16,  # gem5 createVegaTopology: cu_per_simd_array 16
    engine_clock_mhz=1500,  # MI25 peak engine clock (gem5 createVegaTopology fcompute 1500)
    memory_clock_mhz=945,  # MI25 HBM2 (AMD product page)
    memory_bandwidth_gbps=484.0,  # MI25: 2048-bit HBM2 at 945 MHz DDR = 484 GB/s
    memory_latency_ns=470,  # guess: ~700 cycles at 1.5 GHz, GCN global load latency
    l2_size=4 * MiB,  # Vega 10: 4 MiB L2 (Vega whitepaper)
    vram_size=16 * GiB,  # MI25: 16 GB HBM2
    hqd_slots=24,  # KFD on gfx9: 3 pipes x 8 queues for compute it manages (DESIGN)
    cp_packet_latency_ps=2 * PS_PER_US,  # within the 5-10 us dispatch latency (ROCm blog, Fiji)
    cp_retire_latency_ps=1 * PS_PER_US,  # guess
    wg_dispatch_latency_ps=10 * PS_PER_NS,  # guess: ~15 cycles per workgroup launch per SE
    hqd_switch_latency_ps=10 * PS_PER_US,  # guess
    quantum_ps=100 * PS_PER_US,  # gem5 default; the real HWS uses a similar ms-scale slice
    interrupt_latency_ps=2 * PS_PER_US,  # guess
)

# CDNA2 and CDNA3 keep gfx9's CU but with a unified 512-entry VGPR+AGPR file per lane,
# allocated in blocks of 8, and 8 wave slots per SIMD (LLVM getTotalNumVGPRs,
# getVGPRAllocGranule and getMaxWavesPerEU for FeatureGFX90AInsts).
_CDNA_CU = dict(
    wave_slots_per_simd=8,
    vgprs_per_simd_lane=512,
    vgpr_alloc_granule=8,
    max_vgprs_per_wave=512,
)

GFX90A = GFX900.model_copy(
    update=dict(
        name="gfx90a",
        marketing_name="AMD Instinct MI250X (one GCD)",
        gfx_target_version=90010,
        device_id=0x740C,  # Aldebaran MI250X/MI250 (pci.ids; rocminfo Chip ID 0x740c)
        num_cus=110,  # rocminfo on MI250X: "Compute Unit: 110" per GCD
        shader_engines=8,  # rocminfo on MI250X: "Shader Engines: 8", 1 array per engine
        cu_per_simd_array=16,  # 8 x 16 = 128 CUs per GCD of which 110 are enabled
        **_CDNA_CU,
        engine_clock_mhz=1700,  # rocminfo on MI250X: "Max Clock Freq. (MHz): 1700"
        memory_clock_mhz=1600,  # MI250X HBM2e 1.6 GHz (AMD product page)
        memory_bandwidth_gbps=1638.4,  # MI250X: 3.2768 TB/s over 2 GCDs (AMD product page)
        memory_latency_ns=550,  # guess: HBM2e load latency, several hundred ns
        l2_size=8 * MiB,  # rocminfo on MI250X: "L2: 8192 KB" (CDNA2 whitepaper: 8 MB per GCD)
        vram_size=64 * GiB,  # 128 GB per MI250X, 64 GB per GCD
        hqd_slots=24,  # KFD on gfx9: 3 pipes x 8 queues for compute it manages (DESIGN)
        wg_dispatch_latency_ps=7 * PS_PER_NS,  # guess: ~12 clocks per workgroup launch per SE
        # Aldebaran: 5 SDMA instances (sdma_v4_0.c aldebaran), XGMI-capable, so the KFD
        # keeps 2 for PCIe and 3 for XGMI (kfd_device.c aldebaran_device_info:
        # num_sdma_engines 2, num_xgmi_sdma_engines 3); SDMA 4.4.0: 8 queues per engine.
        sdma_engines=2,
        sdma_xgmi_engines=3,
        sdma_queues_per_engine=8,
        sdma_bandwidth_gbps=50.0,  # guess: sized for one 50 GB/s XGMI link
        # PCIe 4.0 x16: 16 GT/s x 16 x 128b/130b = 31.5 GB/s raw; ~26 GB/s achieved (guess
        # from the same ~83% efficiency as PCIe 3)
        host_link="PCIe 4.0 x16",
        link_bandwidth_gbps=26.0,
        link_latency_ns=1000,  # guess
        # CDNA2 whitepaper: Infinity Fabric links of 50 GB/s per direction (100 GB/s bidir.)
        xgmi_link_bandwidth_gbps=50.0,
    )
)

GFX942 = GFX900.model_copy(
    update=dict(
        name="gfx942",
        marketing_name="AMD Instinct MI300X",
        gfx_target_version=90402,
        device_id=0x74A1,  # rocminfo on MI300X: "Chip ID: 29857(0x74a1)"
        num_cus=304,  # rocminfo on MI300X: "Compute Unit: 304" (8 XCDs x 38)
        shader_engines=32,  # rocminfo on MI300X: "Shader Engines: 32", 1 array per engine
        cu_per_simd_array=10,  # 4 arrays x 10 CUs = 40 per XCD, 38 enabled (CDNA3 whitepaper)
        num_xcc=8,  # 8 XCDs (CDNA3 whitepaper)
        **_CDNA_CU,
        engine_clock_mhz=2100,  # rocminfo on MI300X: "Max Clock Freq. (MHz): 2100"
        memory_clock_mhz=1300,  # approx.: rocm-smi MCLK on MI300X (HBM3 at 5.2 Gb/s per pin)
        memory_bandwidth_gbps=5300.0,  # MI300X: 5.3 TB/s HBM3 (AMD product page)
        memory_latency_ns=650,  # guess: HBM3 behind Infinity Fabric and MALL, several hundred ns
        l2_size=4 * MiB,  # rocminfo on MI300X: "L2: 4096 KB" (one per XCD)
        l3_size=256 * MiB,  # rocminfo on MI300X: "L3: 262144 KB" (Infinity Cache)
        vram_size=192 * GiB,  # MI300X: 192 GB HBM3
        hqd_slots=24,  # KFD on gfx9: 3 pipes x 8 queues for compute it manages (DESIGN)
        wg_dispatch_latency_ps=6 * PS_PER_NS,  # guess: ~12 clocks per workgroup launch per SE
        # MI300X: 16 SDMA instances (4 per IOD, sdma_v4_4_2.c), XGMI-capable: the KFD keeps
        # 2 for PCIe, 14 for XGMI (kfd_get_num_sdma_engines / kfd_get_num_xgmi_sdma_engines);
        # SDMA 4.4.2 takes the default of 8 queues per engine (kfd_device_info_set_sdma_info).
        sdma_engines=2,
        sdma_xgmi_engines=14,
        sdma_queues_per_engine=8,
        sdma_bandwidth_gbps=64.0,  # guess: sized for one 64 GB/s XGMI link
        # PCIe 5.0 x16: 32 GT/s x 16 x 128b/130b = 63 GB/s raw; ~52 GB/s achieved (guess)
        host_link="PCIe 5.0 x16",
        link_bandwidth_gbps=52.0,
        link_latency_ns=1000,  # guess
        # CDNA3 whitepaper: 128 GB/s bidirectional per Infinity Fabric link (64 per direction)
        xgmi_link_bandwidth_gbps=64.0,
    )
)

# gem5's GPU model as configs/example/apu_se.py builds it by default (gem5 v24): a gfx902
# APU with 4 CUs; register files sized in gem5's own units (2048 per SIMD).
GEM5 = GpuSpec(
    name="gfx902",  # apu_se.py --gfx-version default gfx902 (Raven)
    marketing_name="gem5 APU (apu_se.py defaults)",
    gfx_target_version=90002,
    device_id=0x15DD,  # gem5 hsaTopology createRavenTopology: device_id 5597
    num_cus=4,  # apu_se.py --num-compute-units default 4
    shader_engines=1,  # apu_se.py --num-gpu-complexes 1 x --sa-per-complex 1
    cu_per_simd_array=4,  # apu_se.py --cu-per-sa default 4
    simds_per_cu=4,  # apu_se.py --simds-per-cu default 4
    wave_slots_per_simd=10,  # apu_se.py --wfs-per-simd default 10
    vgprs_per_simd_lane=2048,  # apu_se.py --vreg-file-size default 2048 per SIMD
    vgpr_alloc_granule=4,  # apu_se.py --vreg-min-alloc default 4
    sgprs_per_simd=2048,  # apu_se.py --sreg-file-size default 2048 per SIMD
    sgpr_alloc_granule=4,  # apu_se.py --sreg-min-alloc default 4
    lds_per_cu=65536,  # apu_se.py --lds-size default 65536
    barrier_slots_per_cu=16,  # gem5 GPU.py ComputeUnit num_barrier_slots default 16
    scratch_slots_per_cu=40,  # gem5's hasDispResources has no scratch limit: every wave slot
    engine_clock_mhz=1000,  # apu_se.py --gpu-clock default 1GHz
    memory_clock_mhz=800,  # DDR3-1600 (gem5 DDR3_1600_8x8: tCK 1.25 ns)
    memory_bandwidth_gbps=12.8,  # gem5 Options.py --mem-type DDR3_1600_8x8: 1600 MT/s x 8 B
    # approx.: GPU.py mem_req_latency + mem_resp_latency = 100 cycles at 1 GHz, plus DRAM
    # tRCD + tCL = 27.5 ns (DDR3_1600_8x8) and Ruby cache lookups
    memory_latency_ns=150,
    l2_size=256 * KiB,  # configs/ruby/GPU_VIPER.py --tcc-size default 256kB
    vram_size=512 * MiB,  # gem5 Options.py --mem-size default 512MB (shared with the CPU)
    hqd_slots=10,  # apu_se.py --num-hw-queues default 10
    cp_packet_latency_ps=4400 * PS_PER_NS,  # gem5 HSADevice.py pktProcessDelay 4400000 ticks
    cp_retire_latency_ps=0,  # gem5 decrements the signal without extra latency
    acquire_fence_agent_ps=0,  # gem5's packet processor charges no separate fence cost
    acquire_fence_system_ps=0,
    release_fence_agent_ps=0,
    release_fence_system_ps=0,
    wg_dispatch_latency_ps=1 * PS_PER_NS,  # gem5 dispatcher: one shader clock per attempt
    hqd_switch_latency_ps=0,  # gem5's scheduler remaps instantly at the quantum
    quantum_ps=100 * PS_PER_US,  # gem5 HW queue scheduler quantum (tutorial)
    interrupt_latency_ps=1 * PS_PER_US,  # guess
    # gem5's APU shares one DRAM with the CPU: the "link" is that DRAM
    host_link="shared DRAM (APU)",
    link_bandwidth_gbps=12.8,  # = memory_bandwidth_gbps (DDR3_1600_8x8)
    link_latency_ns=150,  # = memory_latency_ns
    sdma_bandwidth_gbps=12.8,  # gem5 SDMAEngine copies through the same DRAM
)

PRESETS: dict[str, GpuSpec] = {
    "teaching": TEACHING,
    "gem5": GEM5,
    "gfx900": GFX900,
    "gfx90a": GFX90A,
    "gfx942": GFX942,
}

DEFAULT_PRESET = default_preset.DEFAULT_PRESET  # kept there for the command line's --help


def preset(name: str) -> GpuSpec:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(
            f"unknown preset {name!r}; choose one of {', '.join(sorted(PRESETS))}"
        ) from None


# A preset's plain SystemSpec, built once: specs are frozen, and validating one costs ~25 us
# (every hsa_init of a served system asks for one).
_PLAIN_SPECS: dict[str, SystemSpec] = {}


def system_spec(name: str = DEFAULT_PRESET, **overrides: object) -> SystemSpec:
    """A SystemSpec for a named GPU preset, with optional SystemSpec field overrides."""
    if overrides:
        return SystemSpec(gpu=preset(name), **overrides)  # type: ignore[arg-type]
    gpu = preset(name)
    spec = _PLAIN_SPECS.get(name)
    if spec is None or spec.gpu is not gpu:  # (PRESETS may have been given a new entry)
        spec = _PLAIN_SPECS[name] = SystemSpec(gpu=gpu)
    return spec
