"""The timing model's visible effects, as markdown tables (the ones in docs/timing.md).

Every figure is a kernel time from the completion signal's timestamps
(hsa_amd_profiling_get_dispatch_time), on timing-only systems (SystemSpec.functional=False):

  1. wave quantization: time versus grid size steps at multiples of CUs x workgroups per CU;
  2. occupancy: more VGPRs or LDS per workgroup, fewer resident waves, a latency-bound kernel
     slows down in proportion to its rounds of workgroups;
  3. memory roof: a streaming kernel's bandwidth rises with the grid to the preset's peak;
  4. compute roof: a compute-heavy kernel reaches the VALU peak;
  5. two queues: kernels overlap when both fit and serialize when the first fills the GPU;
  6. placement policies: two concurrent kernels under round_robin, greedy and partition.

    python bench/timing_effects.py > effects.md
Writes bench/results/timing_effects.json and .md.
"""

from __future__ import annotations

import json
import pathlib

import rocr
from hw_model.config import PRESETS, system_spec
from hw_model.kernels import BUILTINS
from hw_model.occupancy import occupancy

WG = 256
OUT: list[str] = []
DATA: dict[str, list] = {}


def say(line: str = "") -> None:
    OUT.append(line)
    print(line)


def bar(value: float, full: float, width: int = 40) -> str:
    return "#" * max(1, round(width * value / full)) if full else ""


class Machine:
    def __init__(self, preset: str, placement: str = "round_robin") -> None:
        spec = system_spec(preset, functional=False, trace=False, placement_policy=placement)
        self.rt = rocr.init(spec=spec)
        self.gpu = self.rt.gpus[0]
        # Kernels run over VRAM (coarse-grained device memory), as a real program's do after
        # copying its inputs in; `host_pool` is for the VRAM-vs-host-memory table.
        self.pool = self.gpu.pools()[0]
        self.host_pool = self.rt.cpu.pools(fine_grained=True, kernarg=False)[0]
        # Queues and kernels up front: creating them costs host time (ioctls, allocations)
        # that would delay the second of two "simultaneous" dispatches.
        self.queues = [self.gpu.create_queue(256) for _ in range(2)]
        self.kernels = {
            name: self.rt.load_code_object(f"builtin:{name}").kernel(name)
            for name in (
                "vector_add",
                "fma_loop",
                "chase",
                "chase_v32",
                "chase_v64",
                "chase_v128",
                "chase_v256",
            )
        }
        self._buf: dict[tuple[int, bool], object] = {}
        self.host = False  # where args() puts its buffers

    def close(self) -> None:
        self.rt.shutdown()

    def buffer(self, nbytes: int):
        # Timing-only: kernels never touch memory, so buffers of one size can be shared.
        key = (nbytes, self.host)
        if key not in self._buf:
            if self.host:
                b = self.host_pool.allocate(max(nbytes, 4))
                self.rt.allow_access([self.gpu], b)
            else:
                b = self.pool.allocate(max(nbytes, 4))
            self._buf[key] = b
        return self._buf[key]

    def args(self, name: str, wgs: int, hops: int = 8, iters: int = 100) -> tuple:
        n = wgs * WG
        b = self.buffer(4 * n)
        if name.startswith("chase"):
            return (b, b, n, hops)
        if name == "fma_loop":
            return (b, n, iters)
        return (b, b, b, n)

    def submit(self, name: str, wgs: int, queue: int = 0, lds=None, **kw):
        return self.queues[queue].dispatch(
            self.kernels[name],
            grid=wgs * WG,
            workgroup=WG,
            args=self.args(name, wgs, **kw),
            group_segment_size=lds,
        )

    def time_us(self, name: str, wgs: int, **kw) -> float:
        h = self.submit(name, wgs, **kw)
        h.wait()
        start, end = h.dispatch_time()
        return (end - start) / 1000


def occ(preset: str, name: str, lds: int = 0):
    k = BUILTINS[name]
    return occupancy(PRESETS[preset], workgroup_size=WG, vgprs=k.vgprs, sgprs=k.sgprs, lds=lds)


def quantization() -> None:
    preset = "teaching"
    o = occ(preset, "chase")
    cap = PRESETS[preset].num_cus * o.workgroups_per_cu
    say(f"### 1. Wave quantization ({preset}: 2 CUs x {o.workgroups_per_cu} workgroups = {cap})")
    say()
    say("`chase` (8 dependent loads per work-item), 256 work-items per workgroup.")
    say()
    say("| workgroups | rounds | kernel time (us) | |")
    say("|---:|---:|---:|:---|")
    m = Machine(preset)
    rows = []
    sizes = sorted({1, 5, 10, 15, *range(cap - 1, 4 * cap + 2, cap // 2), cap, 2 * cap, 3 * cap})
    times = [m.time_us("chase", n) for n in sizes]
    for n, t in zip(sizes, times, strict=True):
        rounds = -(-n // cap)
        rows.append({"workgroups": n, "rounds": rounds, "us": t})
        say(f"| {n} | {rounds} | {t:.2f} | `{bar(t, max(times))}` |")
    m.close()
    DATA["quantization"] = rows
    say()


def occupancy_sweep(preset: str, part: str, wgs_per_cu: int) -> None:
    ncu = PRESETS[preset].num_cus
    wgs = ncu * wgs_per_cu
    say(
        f"### 2{part}. Occupancy and a latency-bound kernel ({preset}, {wgs} workgroups of `chase`)"
    )
    say()
    say(
        "| kernel | VGPRs | LDS / group | waves / SIMD | groups / CU | limited by | time (us) "
        "| GB/s |"
    )
    say("|:---|---:|---:|---:|---:|:---|---:|---:|")
    m = Machine(preset)
    rows = []
    configs = [(n, 0) for n in ("chase", "chase_v32", "chase_v64", "chase_v128", "chase_v256")]
    configs += [("chase", lds) for lds in (8192, 16384, 32768, 65536)]
    for name, lds in configs:
        o = occ(preset, name, lds)
        t = m.time_us(name, wgs, lds=lds or None)
        gbps = wgs * WG * (4 * 8 + 4) / (t * 1000)
        rows.append(
            {"kernel": name, "lds": lds, "waves_per_simd": o.waves_per_simd, "us": t, "gbps": gbps}
        )
        say(
            f"| `{name}` | {BUILTINS[name].vgprs} | {lds} | {o.waves_per_simd:g} | "
            f"{o.workgroups_per_cu} | {', '.join(o.limited_by)} | {t:.1f} | {gbps:.0f} |"
        )
    m.close()
    DATA[f"occupancy_{preset}"] = rows
    say()


def memory_roof() -> None:
    preset = "gfx900"
    peak = PRESETS[preset].memory_bandwidth_gbps
    say(f"### 3. Memory roof ({preset}: {peak:g} GB/s), `vector_add` (12 bytes per work-item)")
    say()
    say("| workgroups | MB moved | kernel time (us) | GB/s (whole kernel) | GB/s (marginal) |")
    say("|---:|---:|---:|---:|---:|")
    m = Machine(preset)
    rows = []
    prev = None
    for wgs in (64, 256, 1024, 4096, 8192, 16384):
        t = m.time_us("vector_add", wgs)
        nbytes = wgs * WG * 12
        marginal = ""
        if prev is not None:
            marginal = f"{(nbytes - prev[0]) / ((t - prev[1]) * 1000):.0f}"
        rows.append({"workgroups": wgs, "us": t, "gbps": nbytes / (t * 1000)})
        say(f"| {wgs} | {nbytes / 1e6:.1f} | {t:.1f} | {nbytes / (t * 1000):.0f} | {marginal} |")
        prev = (nbytes, t)
    m.close()
    DATA["memory_roof"] = rows
    say()


def compute_roof() -> None:
    preset = "gfx900"
    spec = PRESETS[preset]
    peak = spec.valu_flops_per_second / 1e12
    wgs = spec.num_cus * 20
    say(f"### 4. Compute roof ({preset}: {peak:.1f} TFLOPS FP32), `fma_loop`, {wgs} workgroups")
    say()
    say("| iterations | flops / byte | kernel time (us) | TFLOPS | of peak |")
    say("|---:|---:|---:|---:|---:|")
    m = Machine(preset)
    rows = []
    for iters in (1, 4, 16, 64, 256, 1024):
        t = m.time_us("fma_loop", wgs, iters=iters)
        flops = wgs * WG * 8 * iters * 2
        tf = flops / (t * 1e-6) / 1e12
        rows.append({"iters": iters, "us": t, "tflops": tf})
        say(f"| {iters} | {8 * iters * 2 / 4:g} | {t:.1f} | {tf:.2f} | {100 * tf / peak:.0f}% |")
    m.close()
    DATA["compute_roof"] = rows
    say()


def two_queues() -> None:
    preset = "teaching"
    o = occ(preset, "chase")
    cap = PRESETS[preset].num_cus * o.workgroups_per_cu
    say(f"### 5. Two queues ({preset}, capacity {cap} workgroups of `chase`)")
    say()
    say("| case | kernel A | kernel B | A start-end (us) | B start-end (us) | |")
    say("|:---|---:|---:|---:|---:|:---|")
    rows = []
    for case, a_wgs, b_wgs in (("both fit", 8, 8), ("A fills the GPU", 4 * cap, 8)):
        m = Machine(preset)
        ha = m.submit("chase", a_wgs, queue=0)
        hb = m.submit("chase", b_wgs, queue=1)
        ha.wait()
        hb.wait()
        (sa, ea), (sb, eb) = ha.dispatch_time(), hb.dispatch_time()
        t0, t1 = min(sa, sb), max(ea, eb)
        scale = 30 / (t1 - t0)

        def span(s, e, ch, t0=t0, scale=scale):
            return " " * round((s - t0) * scale) + ch * max(1, round((e - s) * scale))

        rows.append({"case": case, "a": [sa, ea], "b": [sb, eb]})
        say(
            f"| {case} | {a_wgs} | {b_wgs} | {sa / 1000:.1f}-{ea / 1000:.1f} | "
            f"{sb / 1000:.1f}-{eb / 1000:.1f} | `A {span(sa, ea, '=')}` `B {span(sb, eb, '-')}` |"
        )
        m.close()
    DATA["two_queues"] = rows
    say()


def policies() -> None:
    preset = "gfx900"
    n = PRESETS[preset].num_cus
    say(f"### 6. Placement policies ({preset}): `fma_loop` (compute) and `chase` (latency)")
    say()
    say("Launched together from two queues; times in us.")
    say()
    say("| policy | fma_loop start-end | chase start-end | makespan |")
    say("|:---|---:|---:|---:|")
    rows = []
    for policy in ("round_robin", "greedy", "partition"):
        m = Machine(preset, policy)
        ha = m.submit("fma_loop", 30 * n, queue=0, iters=200)
        hb = m.submit("chase", 30 * n, queue=1, hops=16)
        ha.wait()
        hb.wait()
        (sa, ea), (sb, eb) = ha.dispatch_time(), hb.dispatch_time()
        span = (max(ea, eb) - min(sa, sb)) / 1000
        rows.append({"policy": policy, "fma_loop": [sa, ea], "chase": [sb, eb], "makespan": span})
        say(
            f"| {policy} | {sa / 1000:.1f}-{ea / 1000:.1f} | {sb / 1000:.1f}-{eb / 1000:.1f} | "
            f"{span:.1f} |"
        )
        m.close()
    DATA["policies"] = rows
    say()


def vram_vs_host() -> None:
    preset = "gfx900"
    spec = PRESETS[preset]
    wgs = 4096
    say(
        f"### 7. The same kernel over VRAM and over host memory ({preset}: HBM "
        f"{spec.memory_bandwidth_gbps:g} GB/s, {spec.host_link} {spec.link_bandwidth_gbps:g} GB/s)"
    )
    say()
    say("| kernel | MB moved | VRAM (us) | VRAM GB/s | host memory (us) | host GB/s | slower |")
    say("|---|---:|---:|---:|---:|---:|---:|")
    m = Machine(preset)
    m.kernels.update(
        {n: m.rt.load_code_object(f"builtin:{n}").kernel(n) for n in ("square", "saxpy")}
    )
    per_item = {"square": 8, "vector_add": 12, "saxpy": 12}
    args = {
        "square": lambda b, n: (b, b, n),
        "vector_add": lambda b, n: (b, b, b, n),
        "saxpy": lambda b, n: (2.0, b, b, n),
    }
    rows = []
    for name in ("square", "vector_add", "saxpy"):
        n = wgs * WG
        t = {}
        for host in (False, True):
            m.host = host
            h = m.queues[0].dispatch(
                m.kernels[name], grid=n, workgroup=WG, args=args[name](m.buffer(4 * n), n)
            )
            h.wait()
            start, end = h.dispatch_time()
            t[host] = (end - start) / 1000
        nbytes = n * per_item[name]
        vram, host = nbytes / (t[False] * 1000), nbytes / (t[True] * 1000)
        rows.append({"kernel": name, "vram_us": t[False], "host_us": t[True]})
        say(
            f"| `{name}` | {nbytes / 1e6:.1f} | {t[False]:.1f} | {vram:.0f} | {t[True]:.1f} | "
            f"{host:.1f} | {t[True] / t[False]:.0f}x |"
        )
    m.close()
    DATA["vram_vs_host"] = rows
    say()


def main() -> None:
    quantization()
    occupancy_sweep("teaching", "a", 40)
    occupancy_sweep("gfx900", "b", 40)
    memory_roof()
    compute_roof()
    two_queues()
    policies()
    vram_vs_host()
    out = pathlib.Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "timing_effects.json").write_text(json.dumps(DATA, indent=2))
    (out / "timing_effects.md").write_text("\n".join(OUT) + "\n")


if __name__ == "__main__":
    main()
