"""Lab 6 starter: a dependency graph across queues, built from barrier packets and signals."""

from __future__ import annotations

import json
import struct  # noqa: F401 (task A packs with it)
import sys

import rocr
from hw_model.config import system_spec

HSA_PACKET_TYPE_BARRIER_AND = 3
HSA_PACKET_TYPE_BARRIER_OR = 5
HSA_FENCE_SCOPE_SYSTEM = 2

# fma_loop iterations per work-item of each kernel of the graph (~50 us per 1000 on gfx900).
ITERS = {"A": 1000, "B": 600, "C": 1600, "D": 200, "E": 200}


# -- task A ------------------------------------------------------------------------------------
def barrier_packet(kind: str, deps: list[int], completion_signal: int = 0) -> bytes:
    """hsa_barrier_and_packet_t ("and") or hsa_barrier_or_packet_t ("or"), as 64 bytes:

    offset 0 header (u16: type bits 0-7, barrier bit 8, acquire scope 9-10 and release scope
    11-12, both HSA_FENCE_SCOPE_SYSTEM here), 2 reserved0 (u16), 4 reserved1 (u32),
    8 dep_signal[5] (u64 handles, 0 = none), 48 reserved2 (u64), 56 completion_signal (u64).
    `deps` has at most five signal handles."""
    # TODO (task A): struct.pack only
    raise NotImplementedError("task A: pack the barrier packet")


# -- the machine and the kernels (given) -------------------------------------------------------
class Graph:
    """A GPU with one fma_loop kernel per name; `kernel(queue, name)` submits kernel `name`
    into `queue` with its own completion signal `signals[name]`."""

    def __init__(self, rt: rocr.Runtime, names: str = "ABCDE") -> None:
        self.rt = rt
        gpu = rt.gpus[0]
        self.fma = rt.load_code_object("builtin:fma_loop").kernel("fma_loop")
        self.out = gpu.pools()[0].allocate(4 * 256)
        self.signals = {n: rt.create_signal(1) for n in names}

    def kernel(self, queue: rocr.Queue, name: str) -> None:
        queue.dispatch(
            self.fma,
            grid=256,
            workgroup=64,
            args=(self.out, 256, ITERS[name]),
            completion_signal=self.signals[name],
        )


def machine() -> rocr.Runtime:
    """gfx900 (24 HQDs: every queue of this lab has one), timing only."""
    return rocr.init(spec=system_spec("gfx900", functional=False), trace=True)


# -- task B ------------------------------------------------------------------------------------
def pipeline(g: Graph, queues: list[rocr.Queue]) -> None:
    """Submit this graph into four queues, all at once (no host waits: the GPU orders it):

        A              queue 0
       / \\
      B   C            B in queue 1, C in queue 2, each after A
      |\\ /|
      | X |
      |/ \\|
      D   E            D in queue 0, after B AND C; E in queue 3, after B OR C

    Submit a packet with `queue.submit(raw)` and a kernel with `g.kernel(queue, name)`."""
    # TODO (task B): barrier packets (task A) on g.signals
    raise NotImplementedError("task B: submit the graph")


# -- task C ------------------------------------------------------------------------------------
def scenario_deadlock(g: Graph, queues: list[rocr.Queue]) -> None:
    """Meant: K1, then K3 (which reads K1's output), then K2 (which reads K3's output).
    It never finishes. Find out why from the machine, then fix it: change as little as you
    can and keep every packet."""
    q0, q1 = queues[0], queues[1]
    s = g.signals
    g.kernel(q0, "K1")
    q0.submit(barrier_packet("and", [s["K3"].handle]))
    g.kernel(q0, "K2")
    q1.submit(barrier_packet("and", [s["K2"].handle]))
    g.kernel(q1, "K3")


ITERS.update({"K1": 400, "K2": 400, "K3": 400})


def kernel_times(g: Graph, t0: float) -> dict[str, tuple[float, float]]:
    """(start, end) of each kernel that retired, in us since t0, from its completion
    signal's timestamps (hsa_amd_profiling_get_dispatch_time)."""
    out = {}
    for name, sig in g.signals.items():
        if sig.load() < 1:
            start, end = sig.dispatch_time()
            out[name] = ((start - t0) / 1e3, (end - t0) / 1e3)
    return out


def queue_facts(rt: rocr.Runtime) -> list[str]:
    """What the KFD's debugfs says about each queue (/sys/kernel/debug/kfd/mqds)."""
    lines = []
    for proc in json.loads(rt.thunk.read_debugfs("mqds")):
        for q in proc["queues"]:
            hw = q["hw"] or {}
            lines.append(
                f"queue {q['queue_id']}: {hw.get('state')}, read_dispatch_id "
                f"{hw.get('read_dispatch_id')}, barrier {hw.get('blocked_on')}"
            )
    return lines


def main(argv: list[str]) -> int:
    print("== the pipeline")
    with machine() as rt:
        g = Graph(rt)
        queues = [rt.gpus[0].create_queue(64) for _ in range(4)]
        t0 = rt.now_ns
        pipeline(g, queues)
        for sig in g.signals.values():
            sig.wait(rocr.Condition.LT, 1)
        for name, (start, end) in sorted(kernel_times(g, t0).items(), key=lambda x: x[1]):
            print(f"  {name}: {start:8.2f} .. {end:8.2f} us")
    print("== the deadlock")
    with machine() as rt:
        g = Graph(rt, names=("K1", "K2", "K3"))
        queues = [rt.gpus[0].create_queue(64) for _ in range(2)]
        t0 = rt.now_ns
        scenario_deadlock(g, queues)
        try:
            for name in ("K1", "K2", "K3"):
                g.signals[name].wait(rocr.Condition.LT, 1)
            print(f"  completed: {kernel_times(g, t0)}")
        except rocr.HsaError as e:
            print("  " + str(e).splitlines()[0])
            print("  signals: " + ", ".join(f"{n}={s.handle:#x}" for n, s in g.signals.items()))
            print(f"  retired so far: {kernel_times(g, t0)}")
            for line in queue_facts(rt):
                print("  " + line)
            if "--hint" in argv:
                print("  " + str(e).replace("\n", "\n  "))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
