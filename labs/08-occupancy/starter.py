"""Lab 8 starter: occupancy — how many workgroups fit on a CU, and what it does to a kernel's
time."""

from __future__ import annotations

import sys

import rocr
from hw_model.config import system_spec

# The teaching GPU's compute unit (docs/timing.md, "Resources of one workgroup" and "Presets";
# the real gfx900 numbers, with 2 CUs).
CUS = 2
SIMDS_PER_CU = 4
WAVEFRONT = 64
WAVE_SLOTS_PER_SIMD = 10
VGPRS_PER_SIMD_LANE = 256  # each wave's VGPRs come from its SIMD's file, per lane
VGPR_GRANULE = 4  # VGPRs are allocated in blocks of 4
SGPRS_PER_SIMD = 800
SGPR_GRANULE = 16
LDS_PER_CU = 65536  # bytes
LDS_GRANULE = 512
BARRIERS_PER_CU = 16  # one per workgroup of more than one wave

WG = 256  # work-items per workgroup in this lab: 4 waves
KERNELS = ("chase", "chase_v32", "chase_v64", "chase_v128", "chase_v256")


# -- task A ------------------------------------------------------------------------------------
def workgroups_per_cu(workgroup_size: int, vgprs: int, sgprs: int, lds: int) -> tuple[int, str]:
    """How many workgroups of this kernel one CU holds at once, and the resource that limits
    it: "wave_slots", "vgprs", "sgprs", "lds" or "barriers". Each resource on its own allows
    some number of workgroups; the CU holds the smallest. Waves of a workgroup spread over the
    CU's SIMDs, so a per-SIMD resource allows floor(SIMDS_PER_CU * waves_per_SIMD / waves_per_WG)
    workgroups. Round each amount up to its granule first."""
    # TODO (task A)
    raise NotImplementedError("task A: the occupancy rules")


# -- task B ------------------------------------------------------------------------------------
# Measure these two with measure() (see the README), then write them here.
FIXED_US = 0.0  # TODO (task B): the kernel time no workgroup count changes (CP, launch, fences)
ROUND_US = 0.0  # TODO (task B): the time one full "round" of resident chase workgroups takes


def predict_us(kernel: str, vgprs: int, sgprs: int, workgroups: int, lds: int = 0) -> float:
    """The kernel time of `workgroups` workgroups of `kernel` (a chase variant, WG work-items
    each, `lds` bytes of dynamic LDS) on the teaching GPU, from occupancy: how many rounds of
    resident workgroups the GPU needs."""
    # TODO (task B)
    raise NotImplementedError("task B: predict the time from the number of rounds")


# -- measuring (given) -------------------------------------------------------------------------
class Gpu:
    """The teaching GPU, timing only (kernels take their modeled time, compute nothing)."""

    def __init__(self) -> None:
        self.rt = rocr.init(spec=system_spec("teaching", functional=False), trace=True)
        gpu = self.rt.gpus[0]
        self.queue = gpu.create_queue(256)
        self.kernels = {n: self.rt.load_code_object(f"builtin:{n}").kernel(n) for n in KERNELS}
        self.buf = gpu.pools()[0].allocate(4 * WG * 256)

    def measure(self, kernel: str, workgroups: int, lds: int = 0) -> float:
        """Kernel time in us (hsa_amd_profiling_get_dispatch_time) of `workgroups` workgroups;
        each work-item follows 8 dependent loads."""
        n = workgroups * WG
        h = self.queue.dispatch(
            self.kernels[kernel],
            grid=n,
            workgroup=WG,
            args=(self.buf, self.buf, n, 8),
            group_segment_size=lds or None,
        )
        h.wait()
        start, end = h.dispatch_time()
        return (end - start) / 1e3

    def resident(self) -> dict[str, int]:
        """The most workgroups of the last kernel that were on each CU at the same time, from
        the trace's workgroup events."""
        events = [e for e in self.rt.system.tracer.events if e.cat == "wg"]
        last = max(e.args["dispatch_id"] for e in events)
        out = {}
        for cu in sorted({e.track for e in events}):
            edges = []
            for e in events:
                if e.track == cu and e.args["dispatch_id"] == last:
                    edges += [(e.ts, 1), (e.ts + e.dur, -1)]
            now = peak = 0
            for _, d in sorted(edges, key=lambda x: (x[0], x[1])):
                now += d
                peak = max(peak, now)
            out[cu] = peak
        return out

    def close(self) -> None:
        self.rt.shutdown()


def main(argv: list[str]) -> int:
    g = Gpu()
    print("the staircase: chase, 256 work-items per workgroup")
    for wgs in (1, 10, 20, 21, 30, 40, 41, 60, 61, 80):
        t = g.measure("chase", wgs)
        print(f"  {wgs:3} workgroups: {t:7.2f} us  " + "#" * int(t * 2))
    print("\nkernel       VGPRs  LDS   WGs/CU (yours, limit)  resident on a CU  time   predicted")
    for kernel, lds in [(k, 0) for k in KERNELS] + [("chase", x) for x in (8192, 12288, 32768)]:
        k = g.kernels[kernel]
        mine = workgroups_per_cu(WG, k.vgprs, k.sgprs, lds)
        t = g.measure(kernel, 40, lds)
        seen = max(g.resident().values())
        pred = predict_us(kernel, k.vgprs, k.sgprs, 40, lds)
        print(
            f"  {kernel:<10} {k.vgprs:5} {lds:5}  {mine[0]:3} {mine[1]:<18} {seen:5}"
            f"          {t:7.2f} {pred:7.2f}"
        )
    g.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
