"""Speed of the timing model: simulated workgroups per wall-clock second.

Runs large dispatches through the whole stack (rocr -> KFD -> CP -> dispatcher -> CUs) and
prints, for each:
  - timing-only (SystemSpec.functional=False): `vector_add` on gfx942 at growing grid sizes,
    to show the cost per workgroup stays flat (cost linear in workgroups);
  - the same number of workgroups of `fma_loop` with 10 and 10 000 loop iterations: 1000x the
    simulated time for the same wall time (cost does not grow with simulated cycles);
  - functional runs (numpy bodies executed) of `vector_add` on gfx900;
  - the headline figures, each beside `sum(range(1000))` timed in the same run (the reference)
    and the ratio (wall time per workgroup / the reference's): timing-only workgroups per
    second (`vector_add`, gfx942, 10 000 workgroups) and functional workgroups per second
    (`vector_add`, gfx900, 4 000 workgroups), in the batched model and in the reference model
    (one run per workgroup, HSAEMU_TIMING_MODEL=reference).
Wall time covers the dispatch and the wait only. Writes bench/results/model_speed.json.

    python bench/model_speed.py
    python bench/model_speed.py --headline                # the headline figures only
    HSAEMU_BENCH_SCALE=4 python bench/model_speed.py     # 4x the grid sizes
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
import time
import timeit

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))  # run from a checkout

import rocr  # noqa: E402
from hw_model.config import system_spec  # noqa: E402

SCALE = float(os.environ.get("HSAEMU_BENCH_SCALE", "1"))
WG = 256


def reference_us(timer=time.perf_counter) -> float:
    """`sum(range(1000))` in µs: the best of 7 timeit runs."""
    n = 2000
    return min(timeit.repeat("sum(range(1000))", number=n, repeat=7, timer=timer)) / n * 1e6


def one(preset: str, kernel: str, wgs: int, functional: bool, batching=True, **kw) -> dict:
    spec = system_spec(preset, functional=functional, trace=False)
    with rocr.init(spec=spec) as rt:
        rt.system.gpus[0].dispatcher.batching = batching
        gpu = rt.gpus[0]
        # VRAM: over host memory the kernel would be link-bound (docs/timing.md, 5.7)
        pool = gpu.pools()[0]
        n = wgs * WG

        def buf():
            return pool.allocate(4 * n)

        args = (buf(), buf(), buf(), n) if kernel == "vector_add" else (buf(), n, kw["iters"])
        k = rt.load_code_object(f"builtin:{kernel}").kernel(kernel)
        q = gpu.create_queue(256)
        events0 = rt.system.engine.events_fired
        t0, c0 = time.perf_counter(), time.process_time()
        h = q.dispatch(k, grid=n, workgroup=WG, args=args)
        h.wait()
        wall = time.perf_counter() - t0
        cpu = time.process_time() - c0
        start, end = h.dispatch_time()
        events = rt.system.engine.events_fired - events0
    return {
        "preset": preset,
        "kernel": kernel,
        "functional": functional,
        "workgroups": wgs,
        **kw,
        "wall_s": wall,
        "cpu_s": cpu,
        "wgs_per_s": wgs / wall,
        "us_per_wg": 1e6 * wall / wgs,
        "events_per_wg": events / wgs,
        "simulated_us": (end - start) / 1000,
    }


def table(rows: list[dict], extra: str = "") -> None:
    head = f"{'preset':<8} {'kernel':<11} {'mode':<10} {'workgroups':>10} {extra:>7}"
    print(head + f" {'sim time':>12} {'wall s':>8} {'WG/s':>9} {'us/WG':>7} {'events/WG':>9}")
    for r in rows:
        mode = "functional" if r["functional"] else "timing"
        x = str(r.get("iters", "")) if extra else ""
        print(
            f"{r['preset']:<8} {r['kernel']:<11} {mode:<10} {r['workgroups']:>10} {x:>7}"
            f" {r['simulated_us']:>9.1f} us {r['wall_s']:>8.2f} {r['wgs_per_s']:>9.0f}"
            f" {r['us_per_wg']:>7.1f} {r['events_per_wg']:>9.2f}"
        )
    print()


def headline() -> list[dict]:
    """The issue's two model figures, each beside the in-run reference, in both models. The
    ratio is the run's time per workgroup over the reference's time; on a shared machine the
    CPU-time ratio (process time of both) is the steadier of the two."""
    rows = []
    print(
        f"{'figure':<40} {'model':<9} {'WG/s':>9} {'ref us':>7} {'ratio':>6}"
        f" {'CPU WG/s':>9} {'CPU ref':>7} {'ratio':>6}  target"
    )
    for label, preset, functional, wgs, target in (
        ("timing-only (vector_add, gfx942)", "gfx942", False, 10_000, 1e6),
        ("functional (vector_add, gfx900)", "gfx900", True, 4_000, 3e5),
    ):
        for batching in (True, False):
            ref, cref = reference_us(), reference_us(time.process_time)
            r = one(preset, "vector_add", int(wgs * SCALE), functional, batching)
            ref = min(ref, reference_us())
            cref = min(cref, reference_us(time.process_time))
            # how many references one workgroup costs; the target's ratio on the issue's box
            ratio = r["us_per_wg"] / ref
            cpu_rate = r["workgroups"] / r["cpu_s"]
            cratio = 1e6 / cpu_rate / cref
            model = "batched" if batching else "reference"
            goal = f">= {target:,.0f} WG/s (ratio <= {1e6 / target / 11.6:.3f})"
            print(
                f"{label:<40} {model:<9} {r['wgs_per_s']:>9,.0f} {ref:>7.2f} {ratio:>6.3f}"
                f" {cpu_rate:>9,.0f} {cref:>7.2f} {cratio:>6.3f}  {goal}"
            )
            rows.append(
                {
                    **r,
                    "figure": label,
                    "model": model,
                    "reference_us": ref,
                    "ratio": ratio,
                    "cpu_reference_us": cref,
                    "cpu_ratio": cratio,
                }
            )
    print()
    return rows


def main() -> None:
    if "--headline" in sys.argv:
        head = headline()
        out = pathlib.Path(__file__).parent / "results"
        out.mkdir(exist_ok=True)
        (out / "model_speed_headline.json").write_text(json.dumps(head, indent=2))
        return
    head = headline()
    sizes = [int(s * SCALE) for s in (2_500, 5_000, 10_000, 20_000, 40_000)]
    print("Timing-only, growing grid (cost per workgroup should stay flat):")
    timing = [one("gfx942", "vector_add", s, False) for s in sizes]
    table(timing)

    print("Same workgroups, 1000x the loop iterations (wall time should not follow):")
    cycles = [one("gfx942", "fma_loop", int(10_000 * SCALE), False, iters=i) for i in (10, 10_000)]
    table(cycles, "iters")

    print("Functional (numpy bodies run), growing grid:")
    fsizes = [int(s * SCALE) for s in (1_000, 4_000, 16_000)]
    functional = [one("gfx900", "vector_add", s, True) for s in fsizes]
    table(functional)

    flat = timing[-1]["us_per_wg"] / timing[0]["us_per_wg"]
    print(f"cost per workgroup, largest / smallest timing-only grid: {flat:.2f}x")
    sim = cycles[1]["simulated_us"] / cycles[0]["simulated_us"]
    wall = cycles[1]["wall_s"] / cycles[0]["wall_s"]
    print(f"1000x iterations: {sim:.0f}x simulated time for {wall:.2f}x wall time")

    out = pathlib.Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    path = out / "model_speed.json"
    path.write_text(
        json.dumps(
            {"headline": head, "timing": timing, "cycles": cycles, "functional": functional},
            indent=2,
        )
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
