"""Speed of the gfx9 ISA interpreter on compiled kernels (issue: compiled vector add over 2^20
elements on gfx900 functionally in <= 2 s wall on a 2-core box).

Compiles OpenCL C with clang-15 (rocr.toolchain), loads it, dispatches it through the whole
stack and waits; wall time is the dispatch + wait (compile and load excluded, reported apart).
Prints wave-instructions/s (one instruction issued for one wave) and lane-instructions/s (one
per active lane), from the interpreter's own counts in the kernel record, and `sum(range(1000))`
timed in the same run as the reference for this machine.

    python bench/isa_speed.py                  # vector add 2^20 and matmul 256x256, gfx900
    python bench/isa_speed.py --n 65536 --matmul 64 --preset gfx90a
Writes bench/results/isa_speed.json.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import tempfile
import time
import timeit

import numpy as np

import rocr
from rocr import toolchain

# vector_add and matmul (16x16 tiles in LDS) from the compiled-kernel corpus the tests run.
SOURCE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "kernels" / "corpus.cl"


def reference_us() -> float:
    """sum(range(1000)) on this machine now, in µs (best of 5 x 2000)."""
    return min(timeit.repeat("sum(range(1000))", number=2000, repeat=5)) / 2000 * 1e6


def run(rt, exe, name: str, grid, wg, arrays, scalars) -> dict:
    gpu = rt.gpus[0]
    pool = rt.cpu.pools(fine_grained=True, kernarg=False)[0]
    bufs = []
    for a in arrays:
        b = pool.allocate(a.nbytes)
        rt.allow_access([gpu], b)
        b.view(a.dtype, a.size)[:] = a.ravel()
        bufs.append(b)
    q = gpu.create_queue(64)
    k = exe.kernel(name)
    t0 = time.perf_counter()
    h = q.dispatch(k, grid, wg, (*bufs, *scalars))
    h.wait()
    wall = time.perf_counter() - t0
    start, end = h.dispatch_time()
    rec = list(rt.system.gpus[0].kernel_records)[-1]
    ex = rec.get("execution", {})
    return {
        "kernel": name,
        "grid": list(grid) if isinstance(grid, tuple) else grid,
        "wall_s": wall,
        "simulated_us": (end - start) / 1e3,
        "waves": ex.get("waves", 0),
        # The interpreter's counts by class are per wave: their sum is wave-instructions.
        "wave_instructions": int(sum(ex.get("instructions", {}).values())),
        "steps": ex.get("issues", 0),  # interpreter steps (one per PC group of waves)
        "lane_instructions": ex.get("lane_instructions", 0),
        "out": bufs[-1],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="gfx900")
    ap.add_argument("--n", type=int, default=1 << 20, help="vector add elements")
    ap.add_argument("--matmul", type=int, default=256, help="matmul size (multiple of 16)")
    ap.add_argument("--out", default="bench/results/isa_speed.json")
    args = ap.parse_args()
    if toolchain.missing():
        absent = " ".join(toolchain.missing())
        raise SystemExit(f"needs the AMDGPU toolchain: apt-get install -y {absent}")
    ref = reference_us()
    rt = rocr.init(preset=args.preset)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        co = pathlib.Path(tmp) / "corpus.hsaco"
        toolchain.compile_cl(SOURCE, co, mcpu=rt.gpus[0].name)
        compile_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        exe = rt.load_code_object(co)
        load_s = time.perf_counter() - t0
    rows = []
    n = args.n
    a = np.arange(n, dtype=np.float32)
    b = np.full(n, 0.5, np.float32)
    r = run(rt, exe, "vector_add", n, 256, [a, b, np.zeros(n, np.float32)], (n,))
    ok = bool(np.array_equal(r.pop("out").view(np.float32, n), a + b))
    rows.append(r | {"correct": ok})
    m = args.matmul
    rng = np.random.default_rng(1)
    ma = rng.integers(-4, 5, (m, m)).astype(np.float32)
    mb = rng.integers(-4, 5, (m, m)).astype(np.float32)
    r = run(rt, exe, "matmul", (m, m), (16, 16), [ma, mb, np.zeros((m, m), np.float32)], (m,))
    ok = bool(np.array_equal(r.pop("out").view(np.float32, m * m).reshape(m, m), ma @ mb))
    rows.append(r | {"correct": ok})
    rt.shutdown()
    print(
        f"gfx9 interpreter on {args.preset}; sum(range(1000)) = {ref:.1f} us in this run; "
        f"compile {compile_s:.2f} s, load {load_s * 1e3:.1f} ms"
    )
    print(
        f"{'kernel':<11} {'grid':>12} {'wall s':>7} {'waves':>7} {'wave-instr':>11} "
        f"{'wave-instr/s':>13} {'lane-instr/s':>13} {'wall/ref':>10} {'sim us':>9}  ok"
    )
    for r in rows:
        wi, li, w = r["wave_instructions"], r["lane_instructions"], r["wall_s"]
        r["wave_instructions_per_s"] = wi / w
        r["lane_instructions_per_s"] = li / w
        r["wall_over_reference"] = w / (ref * 1e-6)
        print(
            f"{r['kernel']:<11} {str(r['grid']):>12} {w:7.2f} {r['waves']:>7} {wi:>11} "
            f"{wi / w:13.3g} {li / w:13.3g} {r['wall_over_reference']:10.3g} "
            f"{r['simulated_us']:9.1f}  {'yes' if r['correct'] else 'NO'}"
        )
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "preset": args.preset,
                "reference_us": ref,
                "compile_s": compile_s,
                "load_s": load_s,
                "rows": rows,
            },
            indent=2,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
