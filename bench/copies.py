"""Copy bandwidth against size: host->device, device->host, device->device; SDMA vs blit kernel.

For each preset, each direction and each size (4 KiB ... --max-size), one
`rt.memory_async_copy` is timed twice: on the GPU (hsa_amd_profiling_get_async_copy_time:
the SDMA TIMESTAMP packets, or the blit kernel's dispatch timestamps) and as the host sees it
(simulated time from the call to the end of `.wait()`: doorbell, engine, completion signal,
interrupt, wake-up). Device-to-device copies are always blit kernels (as ROCr); the blit rows
of host<->device use HSA_ENABLE_SDMA=0. The machine runs timing-only (no bytes move) so large
sizes are cheap. Published figures for the same links are printed beside the model's.

    python bench/copies.py                       # gfx900, up to 64 MiB
    python bench/copies.py --preset gfx90a --max-size 268435456
Writes bench/results/copies_<preset>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib

import rocr
from hw_model.config import system_spec

# Published peak rates of each preset's host link: PCI-SIG's per-lane transfer rate x 16 lanes
# x 128b/130b encoding. Measured pinned-memory copies reach ~80-85% of it (TLP/DLLP overhead):
# e.g. ~12-13 GB/s over PCIe 3.0 x16 as rocm_bandwidth_test and hipMemcpy reports show for
# MI25/MI50-class parts (approximate).
PUBLISHED = {
    "gfx900": ("PCIe 3.0 x16", 15.75),
    "gfx90a": ("PCIe 4.0 x16", 31.5),
    "gfx942": ("PCIe 5.0 x16", 63.0),
    "teaching": ("teaching link (a guess, slow on purpose)", 2.0),
    "gem5": ("DDR3-1600 shared with the CPU", 12.8),
}


def sizes(max_size: int) -> list[int]:
    out, n = [], 4096
    while n <= max_size:
        out.append(n)
        n *= 4
    return out


def measure(preset: str, direction: str, engine: str, size: int) -> dict:
    if engine == "blit":
        os.environ["HSA_ENABLE_SDMA"] = "0"
    else:
        os.environ.pop("HSA_ENABLE_SDMA", None)
    spec = system_spec(preset, functional=False, trace=False)
    with rocr.init(spec=spec) as rt:
        gpu = rt.gpus[0]
        rt.profiling_async_copy_enable(True)
        fine = rt.cpu.pools(fine_grained=True, kernarg=False)[0]

        def host_buf():
            b = fine.allocate(size)
            rt.allow_access([gpu], b)
            return b

        def vram_buf():
            return gpu.pools()[0].allocate(size)

        if direction == "h2d":
            dst, dst_agent, src, src_agent = vram_buf(), gpu, host_buf(), rt.cpu
        elif direction == "d2h":
            dst, dst_agent, src, src_agent = host_buf(), rt.cpu, vram_buf(), gpu
        else:
            dst, dst_agent, src, src_agent = vram_buf(), gpu, vram_buf(), gpu
        # a first copy creates the SDMA queue / loads the blit kernels: not timed
        rt.memory_async_copy(dst, dst_agent, src, src_agent, 4096).wait()
        t0 = rt.now_ns
        h = rt.memory_async_copy(dst, dst_agent, src, src_agent, size).wait()
        host_ns = rt.now_ns - t0
        start, end = rt.async_copy_time(h.signal)
        return {
            "preset": preset,
            "direction": direction,
            "engine": h.engine,
            "size": size,
            "gpu_ns": end - start,
            "host_ns": host_ns,
            "gpu_gbps": size / (end - start),
            "host_gbps": size / host_ns,
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="gfx900")
    ap.add_argument("--max-size", type=int, default=64 << 20)
    args = ap.parse_args()
    rows = []
    for direction in ("h2d", "d2h", "d2d"):
        for engine in ("sdma", "blit") if direction != "d2d" else ("blit",):
            for size in sizes(args.max_size):
                rows.append(measure(args.preset, direction, engine, size))
    os.environ.pop("HSA_ENABLE_SDMA", None)
    link, peak = PUBLISHED.get(args.preset, ("?", float("nan")))
    spec = system_spec(args.preset).gpu
    print(
        f"{args.preset}: {spec.marketing_name}; host link {link}, published peak {peak} GB/s; "
        f"model: link {spec.link_bandwidth_gbps} GB/s, SDMA engine {spec.sdma_bandwidth_gbps}"
        f" GB/s, HBM {spec.memory_bandwidth_gbps} GB/s"
    )
    print(f"{'dir':4} {'engine':12} {'size':>10} {'GPU us':>10} {'GB/s':>8} {'host us':>10}")
    for r in rows:
        print(
            f"{r['direction']:4} {r['engine']:12} {r['size']:>10} {r['gpu_ns'] / 1e3:>10.2f} "
            f"{r['gpu_gbps']:>8.2f} {r['host_ns'] / 1e3:>10.2f}"
        )
    out = pathlib.Path(__file__).parent / "results" / f"copies_{args.preset}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"published": {"link": link, "peak_gbps": peak}, "rows": rows}))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
