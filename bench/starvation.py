"""Where gem5's round-robin HWS stalls or starves, and what each policy does instead.

Three scenarios on a GPU whose HQDs are all taken (default: the teaching preset, 2 HQDs):

- `inversion`: every HQD holds a high-priority queue whose head is a barrier-AND waiting for
  a kernel in a low-priority queue that is not mapped. A blocked barrier is idle under gem5's
  rule, so round-robin swaps it out after a quantum; strict priority never lets the
  low-priority producer in, and the host's wait reports the deadlock, naming the queues.
- `chain`: queue i waits (barrier-AND) for queue i+1; only the last queue, unmapped at
  first, can start. Round-robin brings queues in one per quantum in runlist order.
- `hogs`: every HQD holds a queue streaming back-to-back kernels; one more queue has a single
  short kernel. No mapped queue is ever idle, so no policy may swap (no preemption of
  in-flight work, as in gem5): the short kernel waits for a hog to drain.

    python bench/starvation.py
    python bench/starvation.py --preset gem5 --hog-kernels 50
"""

from __future__ import annotations

import argparse
import json
import pathlib

import rocr
from hw_model import aql
from hw_model.config import system_spec
from hw_model.scheduler import SCHEDULER_POLICIES

POLICIES = ("round_robin", "gem5_round_robin", "priority", "ready_first")


def barrier_and(*signals, completion=None):
    return rocr.BarrierAndPacket(
        header=aql.make_header(aql.PacketType.BARRIER_AND),
        dep_signal=[s.handle for s in signals] + [0] * (5 - len(signals)),
        completion_signal=0 if completion is None else completion.handle,
    )


def inversion(rt, slots: int, args) -> tuple[list, str]:
    gpu = rt.gpus[0]
    k = rt.load_code_object("builtin:empty").kernel("empty")
    consumers = [gpu.create_queue(64, priority=3) for _ in range(slots)]
    producer = gpu.create_queue(64, priority=-3)
    produced = rt.create_signal(1)
    done = [rt.create_signal(1) for _ in consumers]
    for q, d in zip(consumers, done, strict=True):
        q.submit(barrier_and(produced, completion=d))
    producer.dispatch(k, grid=64, workgroup=64, completion_signal=produced)
    return done, f"{slots} consumers (high priority) wait for an unmapped producer (low)"


def chain(rt, slots: int, args) -> tuple[list, str]:
    gpu = rt.gpus[0]
    k = rt.load_code_object("builtin:empty").kernel("empty")
    n = slots + args.extra
    qs = [gpu.create_queue(64) for _ in range(n)]
    sigs = [rt.create_signal(1) for _ in qs]
    for i in range(n - 1):
        qs[i].submit(barrier_and(sigs[i + 1]))
        qs[i].dispatch(k, grid=64, workgroup=64, completion_signal=sigs[i])
    qs[-1].dispatch(k, grid=64, workgroup=64, completion_signal=sigs[-1])
    return [sigs[0]], f"{n} queues, queue i waits for queue i+1; target: queue 0's kernel"


def hogs(rt, slots: int, args) -> tuple[list, str]:
    gpu = rt.gpus[0]
    square = rt.load_code_object("builtin:square").kernel("square")
    empty = rt.load_code_object("builtin:empty").kernel("empty")
    n = 1 << 18  # 1 MiB each way: a kernel outlasts the next packet's processing
    # VRAM, as a real program's kernels use (host memory would make them link-bound); what
    # they compute does not matter here, only how long they hold their queues.
    vram = gpu.pools()[0]
    a, b = vram.allocate(4 * n), vram.allocate(4 * n)
    hog_q = [gpu.create_queue(256) for _ in range(slots)]
    victim = gpu.create_queue(64)
    last = []
    for q in hog_q:
        for _ in range(args.hog_kernels):
            h = q.dispatch(square, grid=n, workgroup=1024, args=(b, a, n))
        last.append(h.signal)
    small = victim.dispatch(empty, grid=64, workgroup=64)
    return [small.signal, *last], (  # target: the short kernel
        f"{slots} queues with {args.hog_kernels} back-to-back kernels each, 1 queue with one "
        "short kernel"
    )


SCENARIOS = {"inversion": inversion, "chain": chain, "hogs": hogs}


def run(scenario: str, policy: str, args) -> dict:
    spec = system_spec(args.preset, trace=False, functional=False)  # timing only
    with rocr.init(spec=spec) as rt:
        sched = rt.system.gpus[0].scheduler
        sched.set_policy(SCHEDULER_POLICIES[policy]())
        slots = len(sched.slots)
        t0 = rt.now_ns
        watch, what = SCENARIOS[scenario](rt, slots, args)
        out: dict = {"scenario": scenario, "policy": policy, "what": what}
        try:
            # No bound needed: a wait that can never return (nothing left to do, or only the
            # HWS rotating queues that cannot run) raises at once with the diagnosis.
            limit = None if args.timeout_us is None else args.timeout_us * 1000
            for s in watch:
                v = s.wait(rocr.Condition.LT, 1, timeout_ns=limit)
                if v >= 1:
                    out.update(outcome="timeout", detail=f"no progress in {args.timeout_us} us")
                    break
            else:
                first = watch[0].dispatch_time()[1] - t0
                out.update(outcome="done", first_us=first / 1000, all_us=(rt.now_ns - t0) / 1000)
        except rocr.HsaError as e:
            lines = str(e).splitlines()
            hws = [ln for ln in lines if ln.startswith(("HW scheduler", "  pasid"))]
            out.update(outcome="DEADLOCK", detail="\n".join(hws))
        st = sched.stats()
        out.update(context_switches=st["context_switches"], quanta=st["quanta"])
        return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="teaching")
    p.add_argument("--policies", default=",".join(POLICIES))
    p.add_argument("--scenarios", default=",".join(SCENARIOS))
    p.add_argument("--extra", type=int, default=3, help="chain: queues beyond the HQD count")
    p.add_argument("--hog-kernels", type=int, default=20)
    p.add_argument("--timeout-us", type=int, default=None, help="bound each wait (default: none)")
    p.add_argument("--out", default="bench/results/starvation.json")
    args = p.parse_args(argv)
    rows = []
    for scenario in args.scenarios.split(","):
        print(f"\n== {scenario}")
        for policy in args.policies.split(","):
            r = run(scenario, policy, args)
            rows.append(r)
            if policy == args.policies.split(",")[0]:
                print(f"   ({r['what']}, preset {args.preset})")
            if r["outcome"] == "done":
                res = f"target done at {r['first_us']:8.1f} us, all at {r['all_us']:8.1f} us"
            else:
                res = r["outcome"]
            print(f"  {policy:<17} {res}  ({r['context_switches']} swaps)")
            if r["outcome"] == "DEADLOCK":
                print("      " + r["detail"].replace("\n", "\n      "))
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "runs": rows}, indent=1))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
