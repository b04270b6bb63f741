"""KFD topology: the sysfs tree `/sys/class/kfd/kfd/topology` rendered from the presets.

Keys and layout follow amdkfd's kfd_topology.c (node_show, mem_show, cache_show, iolink_show)
and the thunk's topology.c parser: `generation_id`, `system_properties`, and per node
`gpu_id`, `name`, `properties` ("key value" lines), `mem_banks/N/properties`,
`caches/N/properties`, `io_links/N/properties`. Node 0 is the CPU.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hw_model.system import System

TOPOLOGY_ROOT = "/sys/class/kfd/kfd/topology"
CRAT_IOLINK_TYPE_XGMI = 11  # crat.h: io link types (2 = PCIe)
KFD_CRAT_XGMI_WEIGHT = 15  # kfd_crat.c: the weight of a GPU-GPU XGMI link
# HSA_HEAPTYPE_* (hsakmttypes.h): heap types of memory banks
HEAP_TYPE_SYSTEM = 0
HEAP_TYPE_FB_PUBLIC = 1
HEAP_TYPE_FB_PRIVATE = 2
VENDOR_AMD = 0x1002
# HSA_CACHE_TYPE_* bits (kfd_topology.h), set from the CRAT cache flags by kfd_crat.c
# kfd_parse_subtype_cache: a GPU's L2 is a data cache of the HSA compute units. ROCr keeps only
# caches with HSACU set and Instruction clear (GpuAgent::InitCacheList) and asserts one exists.
CACHE_TYPE_DATA = 0x1
CACHE_TYPE_HSACU = 0x8
CPU_CORES = 16  # the emulated host CPU (guess: a typical workstation)


def _props(d: dict[str, int | str]) -> str:
    return "".join(f"{k} {v}\n" for k, v in d.items())


def render(system: System) -> dict[str, str]:
    """Every file of the topology tree: path -> contents."""
    files: dict[str, str] = {}
    root = TOPOLOGY_ROOT
    files[f"{root}/generation_id"] = "1\n"
    files[f"{root}/system_properties"] = _props(
        {"platform_oem": 0, "platform_id": 0, "platform_rev": 0}
    )
    nodes = [0] + [g.node for g in system.gpus]
    # CPU node
    cpu = {
        "cpu_cores_count": CPU_CORES,
        "simd_count": 0,
        "mem_banks_count": 1,
        "caches_count": 0,
        "io_links_count": len(system.gpus),
        "cpu_core_id_base": 0,
        "simd_id_base": 0,
        "max_waves_per_simd": 0,
        "lds_size_in_kb": 0,
        "gds_size_in_kb": 0,
        "num_gws": 0,
        "wave_front_size": 0,
        "array_count": 0,
        "simd_arrays_per_engine": 0,
        "cu_per_simd_array": 0,
        "simd_per_cu": 0,
        "max_slots_scratch_cu": 0,
        "gfx_target_version": 0,
        "vendor_id": 0,
        "device_id": 0,
        "location_id": 0,
        "domain": 0,
        "drm_render_minor": 0,
        "hive_id": 0,
        "num_sdma_engines": 0,
        "num_sdma_xgmi_engines": 0,
        "num_sdma_queues_per_engine": 0,
        "num_cp_queues": 0,
        "max_engine_clk_ccompute": 3000,
        "local_mem_size": 0,
        "fw_version": 0,
        "capability": 0,
        "debug_prop": 0,
        "sdma_fw_version": 0,
        "unique_id": 0,
        "num_xcc": 0,
    }
    files[f"{root}/nodes/0/gpu_id"] = "0\n"
    files[f"{root}/nodes/0/name"] = "\n"
    files[f"{root}/nodes/0/properties"] = _props(cpu)
    files[f"{root}/nodes/0/mem_banks/0/properties"] = _props(
        {
            "heap_type": HEAP_TYPE_SYSTEM,
            "size_in_bytes": system.spec.system_memory,
            "flags": 0,
            "width": 64,
            "mem_clk_max": 3200,
        }
    )
    for i, g in enumerate(system.gpus):
        s = g.spec
        files[f"{root}/nodes/0/io_links/{i}/properties"] = _props(
            {
                "type": 2,
                "version_major": 0,
                "version_minor": 0,
                "node_from": 0,
                "node_to": g.node,
                "weight": 20,
                "min_latency": 0,
                "max_latency": 0,
                "min_bandwidth": 0,
                "max_bandwidth": 0,
                "recommended_transfer_size": 0,
                "flags": 1,
            }
        )
        n = g.node
        simd_count = s.num_cus * s.simds_per_cu
        # XGMI peers: the other GPUs of the hive (kfd_crat.c kfd_fill_gpu_xgmi_link_to_gpu)
        peers = [p for p in system.gpus if system.xgmi_link(n, p.node) is not None]
        props = {
            "cpu_cores_count": 0,
            "simd_count": simd_count,
            "mem_banks_count": 1,
            "caches_count": 1,
            "io_links_count": 1 + len(peers),
            "cpu_core_id_base": 0,
            "simd_id_base": 0x80001000 + (n - 1) * simd_count,
            "max_waves_per_simd": s.wave_slots_per_simd,
            "lds_size_in_kb": s.lds_per_cu // 1024,
            "gds_size_in_kb": 0,
            "num_gws": 0,
            "wave_front_size": s.wavefront_size,
            "array_count": s.shader_engines * s.arrays_per_engine,
            "simd_arrays_per_engine": s.arrays_per_engine,
            "cu_per_simd_array": s.cu_per_simd_array,
            "simd_per_cu": s.simds_per_cu,
            "max_slots_scratch_cu": s.scratch_slots_per_cu,
            "gfx_target_version": s.gfx_target_version,
            "vendor_id": VENDOR_AMD,
            "device_id": s.device_id,
            "location_id": n * 256,
            "domain": 0,
            "drm_render_minor": 127 + n,
            "hive_id": system.hive_id,
            "num_sdma_engines": s.sdma_engines,
            "num_sdma_xgmi_engines": s.sdma_xgmi_engines,
            "num_sdma_queues_per_engine": s.sdma_queues_per_engine,
            "num_cp_queues": s.hqd_slots,
            "max_engine_clk_fcompute": s.engine_clock_mhz,
            "local_mem_size": s.vram_size,
            "fw_version": 0,
            "capability": 0,
            "debug_prop": 0,
            "sdma_fw_version": 0,
            "unique_id": 0x1000 + n,
            "num_xcc": s.num_xcc,
            "max_engine_clk_ccompute": 3000,
        }
        files[f"{root}/nodes/{n}/gpu_id"] = f"{g.gpu_id}\n"
        files[f"{root}/nodes/{n}/name"] = f"{s.name}\n"
        files[f"{root}/nodes/{n}/properties"] = _props(props)
        files[f"{root}/nodes/{n}/mem_banks/0/properties"] = _props(
            {
                "heap_type": HEAP_TYPE_FB_PRIVATE,
                "size_in_bytes": s.vram_size,
                "flags": 0,
                "width": 2048,
                "mem_clk_max": s.memory_clock_mhz,
            }
        )
        files[f"{root}/nodes/{n}/caches/0/properties"] = _props(
            {
                "processor_id_low": props["simd_id_base"],
                "level": 2,
                "size": s.l2_size // 1024,
                "cache_line_size": s.cacheline_size,
                "cache_lines_per_tag": 1,
                "association": 16,
                "latency": 0,
                "type": CACHE_TYPE_DATA | CACHE_TYPE_HSACU,
                "sibling_map": 1,
            }
        )
        files[f"{root}/nodes/{n}/io_links/0/properties"] = _props(
            {
                "type": 2,
                "version_major": 0,
                "version_minor": 0,
                "node_from": n,
                "node_to": 0,
                "weight": 20,
                "min_latency": 0,
                "max_latency": 0,
                "min_bandwidth": 0,
                "max_bandwidth": 0,
                "recommended_transfer_size": 0,
                "flags": 1,
            }
        )
        for i, p in enumerate(peers, start=1):
            mbps = int(s.xgmi_link_bandwidth_gbps * 1000)  # MB/s, as the KFD reports it
            files[f"{root}/nodes/{n}/io_links/{i}/properties"] = _props(
                {
                    "type": CRAT_IOLINK_TYPE_XGMI,
                    "version_major": 0,
                    "version_minor": 0,
                    "node_from": n,
                    "node_to": p.node,
                    "weight": KFD_CRAT_XGMI_WEIGHT,
                    "min_latency": 0,
                    "max_latency": 0,
                    "min_bandwidth": mbps,
                    "max_bandwidth": mbps,
                    "recommended_transfer_size": 0,
                    "flags": 1,
                }
            )
    files[f"{root}/nodes"] = "".join(f"{n}\n" for n in nodes)
    return files


# Rendered trees by what render() reads, and parsed `properties` files by their text: every
# hsa_init of a served system renders and parses the same few (a preset's tree is ~100 files).
# Bounded: a server sees few distinct machines, and a miss only costs the work again.
_CACHE_MAX = 64
_RENDERED: dict[tuple, dict[str, str]] = {}
_PARSED: dict[str, dict[str, int]] = {}


def render_cached(system: System) -> dict[str, str]:
    """`render(system)`, from a cache keyed by everything it reads (the frozen spec, each
    GPU's node, gpu_id and spec, the hive): a copy the caller may keep."""
    key = (
        system.spec,
        system.hive_id,
        tuple((g.node, g.gpu_id, g.spec) for g in system.gpus),
    )
    files = _RENDERED.get(key)
    if files is None:
        files = render(system)
        if len(_RENDERED) >= _CACHE_MAX:
            _RENDERED.clear()
        _RENDERED[key] = files
    return dict(files)


def parse_properties(text: str) -> dict[str, int]:
    """Parse a sysfs `properties` file as the thunk does: one `key value` per line."""
    out = _PARSED.get(text)
    if out is None:
        out = {}
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 2:
                out[parts[0]] = int(parts[1])
        if len(_PARSED) >= _CACHE_MAX:
            _PARSED.clear()
        _PARSED[text] = out
    return dict(out)
