"""Lab 8 check: the student's occupancy rules against the model's (hw_model.occupancy) on
many configurations and against the workgroups the machine actually kept resident on a CU
(the trace), their time predictions against kernel times measured on the machine for
configurations of the check's own, and the answers in answers.toml.

python labs/08-occupancy/check.py path/to/starter.py
"""

from __future__ import annotations

import importlib.util
import itertools
import sys
from pathlib import Path

import rocr
from hw_model.config import system_spec
from hw_model.occupancy import occupancy

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _grading import Choice, Number, grade, report  # noqa: E402

LAB = "lab8"
WG = 256
KERNELS = ("chase", "chase_v32", "chase_v64", "chase_v128", "chase_v256")
LIMITS = ("wave_slots", "vgprs", "sgprs", "lds", "barriers")
WHY_FLAT = (
    "latency-bound-resident-waves-wait-on-memory-together",
    "the-dispatcher-launches-all-workgroups-at-once",
    "the-kernel-is-compute-bound",
    "dram-bandwidth-is-the-limit",
)
KEYS = {"why_flat": "4d7863c01fa49b3f"}
SPEC = system_spec("teaching").gpu


def load(path: str):
    spec = importlib.util.spec_from_file_location("student", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class Gpu:
    def __init__(self) -> None:
        self.rt = rocr.init(spec=system_spec("teaching", functional=False), trace=True)
        gpu = self.rt.gpus[0]
        self.queue = gpu.create_queue(256)
        self.kernels = {n: self.rt.load_code_object(f"builtin:{n}").kernel(n) for n in KERNELS}
        self.buf = gpu.pools()[0].allocate(4 * WG * 256)

    def run(self, kernel: str, workgroups: int, lds: int = 0) -> tuple[float, int]:
        """(kernel time in us, the most workgroups resident on one CU at once)."""
        n = workgroups * WG
        mark = self.rt.system.tracer.events.total
        h = self.queue.dispatch(
            self.kernels[kernel],
            grid=n,
            workgroup=WG,
            args=(self.buf, self.buf, n, 8),
            group_segment_size=lds or None,
        )
        h.wait()
        start, end = h.dispatch_time()
        peak = 0
        wgs = [e for e in self.rt.system.tracer.events.since(mark) if e.cat == "wg"]
        for cu in {e.track for e in wgs}:
            edges = sorted(
                [(e.ts, 1) for e in wgs if e.track == cu]
                + [(e.ts + e.dur, -1) for e in wgs if e.track == cu]
            )
            now = 0
            for _, d in edges:
                now += d
                peak = max(peak, now)
        return (end - start) / 1e3, peak


def check_rules(mod, gpu: Gpu) -> list[str]:
    configs = itertools.product(
        (64, 256, 448, 1024), (1, 24, 41, 84, 128, 256), (16, 48, 102), (0, 100, 4096, 9000, 40000)
    )
    for wgsize, vgprs, sgprs, lds in configs:
        want = occupancy(SPEC, workgroup_size=wgsize, vgprs=vgprs, sgprs=sgprs, lds=lds)
        try:
            got = mod.workgroups_per_cu(wgsize, vgprs, sgprs, lds)
        except NotImplementedError as e:
            return [f"workgroups_per_cu: not done yet ({e})"]
        what = f"{wgsize} work-items, {vgprs} VGPRs, {sgprs} SGPRs, {lds} bytes of LDS"
        if not isinstance(got, tuple) or len(got) != 2 or got[0] != want.workgroups_per_cu:
            return [f"workgroups_per_cu: wrong count for {what}"]
        if got[1] not in want.limited_by:
            return [f"workgroups_per_cu: wrong limiting resource for {what}"]
    problems = []
    for kernel, lds in (("chase_v64", 0), ("chase", 12288), ("chase_v32", 20000)):
        k = gpu.kernels[kernel]
        _, seen = gpu.run(kernel, 30, lds)
        if mod.workgroups_per_cu(WG, k.vgprs, k.sgprs, lds)[0] != seen:
            problems.append(
                f"workgroups_per_cu: {kernel} with {lds} bytes of LDS: not what the CUs held"
            )
    return problems


def check_prediction(mod, gpu: Gpu) -> list[str]:
    problems = []
    for kernel, wgs, lds in (
        ("chase_v64", 37, 0),
        ("chase", 50, 16384),
        ("chase_v128", 9, 0),
        ("chase_v32", 100, 0),
        ("chase_v256", 7, 0),
        ("chase", 3, 0),
    ):
        k = gpu.kernels[kernel]
        t, _ = gpu.run(kernel, wgs, lds)
        try:
            p = mod.predict_us(kernel, k.vgprs, k.sgprs, wgs, lds)
        except NotImplementedError as e:
            return [f"predict_us: not done yet ({e})"]
        if not isinstance(p, int | float) or abs(p - t) > 0.1 * t:
            problems.append(
                f"predict_us: {wgs} workgroups of {kernel} with {lds} bytes of LDS: off by more "
                "than 10%"
            )
    return problems


def questions(gpu: Gpu) -> list:
    def occ(kernel: str, lds: int = 0):
        k = gpu.kernels[kernel]
        return occupancy(SPEC, workgroup_size=WG, vgprs=k.vgprs, sgprs=k.sgprs, lds=lds)

    # The staircase's step, measured: the first workgroup count whose time jumps.
    times = [gpu.run("chase", w)[0] for w in range(18, 24)]
    jumps = [w for w, a, b in zip(range(19, 24), times, times[1:], strict=False) if b - a > 1.0]
    v64 = occ("chase_v64")
    return [
        Number("staircase_step", jumps[0] - 1 if jumps else -1, 0),
        Number("wg_per_cu_v64", v64.workgroups_per_cu, 0),
        Choice("limit_v64", LIMITS, truth=v64.limited_by[0]),
        Number("wg_per_cu_lds_12k", occ("chase", 12288).workgroups_per_cu, 0),
        Number("occupancy_v32", occ("chase_v32").occupancy_fraction, 0, 0.01),
        Number("time_v128_40_us", gpu.run("chase_v128", 40)[0], 0.05),
        Choice("why_flat", WHY_FLAT, key=KEYS["why_flat"], lab=LAB),
    ]


def check(path: str) -> list[str]:
    mod = load(path)
    gpu = Gpu()
    try:
        problems = check_rules(mod, gpu)
        problems += check_prediction(mod, gpu)
        return problems + grade(path, questions(gpu))
    finally:
        gpu.rt.shutdown()


def main() -> int:
    path = sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).with_name("starter.py"))
    return report("lab 8", check(path), "your occupancy rules and predictions match the machine")


if __name__ == "__main__":
    sys.exit(main())
