"""Lab 5 starter: more queues than hardware queue slots (HQDs). Predict, then measure."""

from __future__ import annotations

import sys

import rocr
from hw_model.config import system_spec

# The teaching GPU: 2 HQDs, a 100 us scheduling quantum, 10 us to swap a queue (docs/scheduling.md).
PRESET = "teaching"
QUANTUM_US = 100
N = 1 << 16  # floats per square kernel in parts 1 and 2: ~16 us each
HOG_N = 1 << 18  # floats per hog kernel in part 3: ~85 us each
HOG_KERNELS = 10


def machine(policy: str) -> rocr.Runtime:
    """A fresh teaching GPU whose HW scheduler uses `policy`. Timing only: kernels take their
    modeled time but compute nothing, so the lab runs fast."""
    rt = rocr.init(spec=system_spec(PRESET, functional=False), trace=True)
    rt.system.gpus[0].scheduler.set_policy(policy)
    return rt


# -- task A ------------------------------------------------------------------------------------
def hws_summary(rt: rocr.Runtime) -> dict:
    """What the KFD records about the HW scheduler, from its debugfs runlist (`rt.runlist()`,
    i.e. /sys/kernel/debug/kfd/rls) of the first GPU:

        {"context_switches": int,
         "queues": {queue_id: {"swaps_in": int, "swaps_out": int, "waited_us": float}}}

    `waited_us`: the time the queue had work but no HQD (runnable_unmapped_ps, in us).
    """
    # TODO (task A)
    raise NotImplementedError("task A: read the runlist from debugfs")


# -- task B ------------------------------------------------------------------------------------
def map_order(rt: rocr.Runtime) -> list[int]:
    """KFD queue ids in the order the HW scheduler mapped them into HQDs, from the trace:
    the events on the "HWS" track named "map queue <id> -> HQD <slot>"."""
    # TODO (task B): rt.system.tracer.events; each event has .track, .name, .ts (ps)
    raise NotImplementedError("task B: read the map events from the trace")


# -- the workloads (given) ---------------------------------------------------------------------
def four_queues(rt: rocr.Runtime, priorities=(-1, -1, 0, 1)) -> list:
    """Four queues created in this order with these HSA priorities (-3..3), one square kernel
    each, submitted all at once. Returns the dispatch handles."""
    gpu = rt.gpus[0]
    square = rt.load_code_object("builtin:square").kernel("square")
    vram = gpu.pools()[0]
    a, b = vram.allocate(4 * N), vram.allocate(4 * N)
    queues = [gpu.create_queue(64, priority=p) for p in priorities]
    return [q.dispatch(square, grid=N, workgroup=256, args=(b, a, N)) for q in queues]


def hogs(rt: rocr.Runtime) -> tuple:
    """Two queues streaming HOG_KERNELS back-to-back kernels each, then a third queue with one
    short kernel. Returns (the short kernel's handle, the hogs' last handles)."""
    gpu = rt.gpus[0]
    square = rt.load_code_object("builtin:square").kernel("square")
    empty = rt.load_code_object("builtin:empty").kernel("empty")
    vram = gpu.pools()[0]
    a, b = vram.allocate(4 * HOG_N), vram.allocate(4 * HOG_N)
    hog_queues = [gpu.create_queue(64) for _ in range(2)]
    short_queue = gpu.create_queue(64)
    last = []
    for q in hog_queues:
        for _ in range(HOG_KERNELS):
            h = q.dispatch(square, grid=HOG_N, workgroup=1024, args=(b, a, HOG_N))
        last.append(h)
    short = short_queue.dispatch(empty, grid=64, workgroup=64)
    return short, last


# -- task C ------------------------------------------------------------------------------------
def rescue(rt: rocr.Runtime) -> tuple:
    """The same work as hogs() — two queues of HOG_KERNELS square kernels each, one queue with
    the short kernel — arranged so that the short kernel starts within two quanta of the first
    hog kernel, under round_robin. Returns what hogs() returns."""
    # TODO (task C): the HWS cannot take an HQD from a queue with a kernel in flight. What
    # decides which queues get the HQDs first?
    raise NotImplementedError("task C: let the short kernel through")


def timeline(rt: rocr.Runtime) -> None:
    for ev in sorted(rt.system.tracer.events, key=lambda e: e.ts):
        if ev.track == "HWS":
            print(f"    {ev.ts / 1e6:9.3f} us  {ev.name}")


def part(policy: str, workload) -> None:
    with machine(policy) as rt:
        t0 = rt.now_ns
        handles = workload(rt)
        for h in handles:
            h.wait()
        print(f"  policy {policy}: HWS timeline")
        timeline(rt)
        for i, h in enumerate(handles):
            start, end = h.dispatch_time()
            print(f"    queue {i}: kernel {(start - t0) / 1e3:8.1f} .. {(end - t0) / 1e3:8.1f} us")
        print(f"  map order {map_order(rt)}")
        print(f"  {hws_summary(rt)}")


def starvation(arrange) -> None:
    with machine("round_robin") as rt:
        t0 = rt.now_ns
        short, last = arrange(rt)
        short.wait()
        for h in last:
            h.wait()
        start = (short.dispatch_time()[0] - t0) / 1e3
        hogs_end = [round((h.dispatch_time()[1] - t0) / 1e3, 1) for h in last]
        print(f"  {arrange.__name__}: short kernel started at {start:.1f} us; hogs end {hogs_end}")
        print(f"  {hws_summary(rt)}")


def main(argv: list[str]) -> int:
    print("== part 1: four queues, two HQDs, round_robin")
    part("round_robin", four_queues)
    print("== part 2: the same, policy priority (HSA priorities -1, -1, 0, 1)")
    part("priority", four_queues)
    print("== part 3: starvation")
    starvation(hogs)
    starvation(rescue)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
