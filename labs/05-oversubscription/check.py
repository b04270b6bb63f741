"""Lab 5 check: the student's HWS measurements against the KFD's runlist and the trace on a
workload of the check's own, the starvation rescue from the GPU's kernel records, and the
numbers in answers.toml against runs of the lab's workloads.

python labs/05-oversubscription/check.py path/to/starter.py
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import rocr
from hw_model.config import system_spec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _grading import Choice, Number, grade, report  # noqa: E402

LAB = "lab5"
N, HOG_N, HOG_KERNELS = 1 << 16, 1 << 18, 10
QUANTUM_PS = 100_000_000  # the teaching preset's quantum
WHY_NO_SWAP = (
    "the-hogs-have-higher-priority",
    "a-queue-with-a-kernel-in-flight-is-never-idle",
    "the-quantum-is-too-long",
    "the-runlist-is-full",
)
WHY_WAIT = (
    "the-hws-only-swaps-on-the-quantum",
    "queue-0-was-still-running",
    "a-swap-takes-that-long",
    "queue-2-has-a-lower-priority",
)
KEYS = {"why_no_swap": "7a342c76a788bab4", "why_wait_for_quantum": "e88234eacbd950f1"}


def load(path: str):
    spec = importlib.util.spec_from_file_location("student", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def machine(policy: str) -> rocr.Runtime:
    rt = rocr.init(spec=system_spec("teaching", functional=False), trace=True)
    rt.system.gpus[0].scheduler.set_policy(policy)
    return rt


def queues_with_kernels(rt, priorities, sizes) -> list:
    gpu = rt.gpus[0]
    square = rt.load_code_object("builtin:square").kernel("square")
    vram = gpu.pools()[0]
    n = max(sizes)
    a, b = vram.allocate(4 * n), vram.allocate(4 * n)
    queues = [gpu.create_queue(64, priority=p) for p in priorities]
    return [
        q.dispatch(square, grid=s, workgroup=256, args=(b, a, s))
        for q, s in zip(queues, sizes, strict=True)
    ]


def true_summary(rt) -> dict:
    dev = rt.runlist()[0]
    return {
        "context_switches": dev["stats"]["context_switches"],
        "queues": {
            q["queue_id"]: (q["swaps_in"], q["swaps_out"], q["runnable_unmapped_ps"] / 1e6)
            for q in dev["queues"]
        },
    }


def true_map_order(rt) -> list[int]:
    maps = sorted(
        (e for e in rt.system.tracer.events if e.track == "HWS" and e.name.startswith("map ")),
        key=lambda e: e.ts,
    )
    return [int(e.name.split()[2]) for e in maps]


def check_measurements(mod) -> list[str]:
    """Tasks A and B on a workload the starter does not have: five queues, priority policy."""
    problems = []
    with machine("priority") as rt:
        for h in queues_with_kernels(rt, (0, 1, -1, 2, 0), (N, 2 * N, N // 2, N, 3 * N)):
            h.wait()
        truth = true_summary(rt)
        try:
            got = mod.hws_summary(rt)
        except NotImplementedError as e:
            problems.append(f"hws_summary: not done yet ({e})")
        else:
            if (
                not isinstance(got, dict)
                or got.get("context_switches") != truth["context_switches"]
            ):
                problems.append("hws_summary: context_switches differs from the KFD's runlist")
            queues = got.get("queues", {}) if isinstance(got, dict) else {}
            for qid, (sin, sout, waited) in truth["queues"].items():
                mine = queues.get(qid)
                if not isinstance(mine, dict):
                    problems.append(f"hws_summary: queue {qid} is missing")
                    continue
                if (mine.get("swaps_in"), mine.get("swaps_out")) != (sin, sout):
                    problems.append(f"hws_summary: queue {qid}'s swaps differ from the runlist")
                w = mine.get("waited_us")
                if not isinstance(w, int | float) or abs(w - waited) > 0.01 + 1e-3 * waited:
                    problems.append(
                        f"hws_summary: queue {qid}'s waited_us differs from the runlist"
                    )
        try:
            order = mod.map_order(rt)
        except NotImplementedError as e:
            problems.append(f"map_order: not done yet ({e})")
        else:
            if list(order) != true_map_order(rt):
                problems.append("map_order: not the order of the HWS track's map events")
    return problems


def check_rescue(mod) -> list[str]:
    with machine("round_robin") as rt:
        try:
            short, last = mod.rescue(rt)
        except NotImplementedError as e:
            return [f"rescue: not done yet ({e})"]
        short.wait()
        for h in last:
            h.wait()
        recs = list(rt.system.gpus[0].kernel_records)
        policy = rt.runlist()[0]["policy"]
    problems = []
    if policy != "round_robin":
        problems.append(f"rescue: the policy must stay round_robin, not {policy}")
    by_queue: dict[int, list] = {}
    for r in recs:
        by_queue.setdefault(r["queue_id"], []).append(r)
    hog_queues = [
        q
        for q, rs in by_queue.items()
        if len(rs) == HOG_KERNELS
        and all(r["name"] == "square" and r["grid"] == (HOG_N, 1, 1) for r in rs)
    ]
    short_queues = [q for q, rs in by_queue.items() if [r["name"] for r in rs] == ["empty"]]
    if len(by_queue) != 3 or len(hog_queues) != 2 or len(short_queues) != 1:
        problems.append(
            f"rescue: the GPU ran {len(recs)} kernels in {len(by_queue)} queues; the work is "
            f"{HOG_KERNELS} square kernels over {HOG_N} floats in each of two queues and one "
            "empty kernel in a third"
        )
        return problems
    first_hog = min(r["start_ps"] for q in hog_queues for r in by_queue[q])
    start = by_queue[short_queues[0]][0]["start_ps"]
    if start - first_hog > 2 * QUANTUM_PS:
        problems.append(
            f"rescue: the short kernel started {(start - first_hog) / 1e6:.1f} us after the first "
            "hog kernel, more than two quanta"
        )
    return problems


def truths() -> dict:
    out = {}
    for policy in ("round_robin", "priority"):
        with machine(policy) as rt:
            hs = queues_with_kernels(rt, (-1, -1, 0, 1), (N,) * 4)
            for h in hs:
                h.wait()
            ends = [h.dispatch_time()[1] for h in hs]
            out[policy] = {
                "switches": rt.runlist()[0]["stats"]["context_switches"],
                "last": ends.index(max(ends)),
                "order": true_map_order(rt),
            }
    with machine("round_robin") as rt:
        gpu = rt.gpus[0]
        square = rt.load_code_object("builtin:square").kernel("square")
        empty = rt.load_code_object("builtin:empty").kernel("empty")
        vram = gpu.pools()[0]
        a, b = vram.allocate(4 * HOG_N), vram.allocate(4 * HOG_N)
        t0 = rt.now_ns
        hog_queues = [gpu.create_queue(64) for _ in range(2)]
        short_queue = gpu.create_queue(64)
        for q in hog_queues:
            for _ in range(HOG_KERNELS):
                q.dispatch(square, grid=HOG_N, workgroup=1024, args=(b, a, HOG_N))
        short = short_queue.dispatch(empty, grid=64, workgroup=64)
        short.wait()
        out["short_start_us"] = (short.dispatch_time()[0] - t0) / 1e3
    return out


def questions() -> list:
    t = truths()
    rr, prio = t["round_robin"], t["priority"]
    return [
        Number("rr_context_switches", rr["switches"], 0),
        Number("rr_last_queue", rr["last"], 0),
        Number("prio_context_switches", prio["switches"], 0),
        Number("prio_last_queue", prio["last"], 0),
        Number("prio_first_swapped_in", prio["order"][2], 0),
        Number("hogs_short_start_us", t["short_start_us"], 0.05),
        Choice("why_no_swap", WHY_NO_SWAP, key=KEYS["why_no_swap"], lab=LAB),
        Choice("why_wait_for_quantum", WHY_WAIT, key=KEYS["why_wait_for_quantum"], lab=LAB),
    ]


def check(path: str) -> list[str]:
    mod = load(path)
    return check_measurements(mod) + check_rescue(mod) + grade(path, questions())


def main() -> int:
    path = sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).with_name("starter.py"))
    return report(
        "lab 5", check(path), "measured from the runlist, and the short kernel got through"
    )


if __name__ == "__main__":
    sys.exit(main())
