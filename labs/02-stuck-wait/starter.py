"""Lab 2 starter: three launches that never finish. Fix each scenario."""

from __future__ import annotations

import json
import sys

import numpy as np

import rocr
from hw_model import aql

N = 4096


def _setup(rt):
    gpu = rt.gpus[0]
    pool = rt.cpu.pools(fine_grained=True, kernarg=False)[0]
    src, dst = pool.allocate(4 * N), pool.allocate(4 * N)
    for b in (src, dst):
        rt.allow_access([gpu], b)
    src.view(np.float32)[:] = np.arange(N, dtype=np.float32)
    k = rt.load_code_object("builtin:square").kernel("square")
    ka = rt.cpu.pools(kernarg=True)[0].allocate(k.kernarg_size)
    rt.allow_access([gpu], ka)
    ka.write(k.pack_args(dst, src, N))
    return gpu.create_queue(64), k, ka, dst


def _dispatch_packet(k, ka, signal) -> aql.KernelDispatchPacket:
    return aql.KernelDispatchPacket(
        header=aql.make_header(aql.PacketType.KERNEL_DISPATCH),
        setup=1,
        workgroup_size_x=256,
        workgroup_size_y=1,
        workgroup_size_z=1,
        grid_size_x=N,
        grid_size_y=1,
        grid_size_z=1,
        kernel_object=k.kernel_object,
        kernarg_address=ka.address,
        completion_signal=signal.handle,
    )


def scenario_doorbell(rt):
    q, k, ka, dst = _setup(rt)
    done = rt.create_signal(1)
    i = q.add_write_index(1)
    q.write_packet(i, _dispatch_packet(k, ka, done))
    return done, dst


def scenario_header(rt):
    q, k, ka, dst = _setup(rt)
    done = rt.create_signal(1)
    raw = bytearray(_dispatch_packet(k, ka, done).to_bytes())
    i = q.add_write_index(1)
    body_first = bytes([aql.PacketType.INVALID, 0]) + bytes(raw[2:])
    q.write_packet(i, body_first)  # body written, header not yet published...
    q.ring_doorbell(i)
    return done, dst


def scenario_barrier(rt):
    q, k, ka, dst = _setup(rt)
    ready = rt.create_signal(1)  # the host means to say "input ready" with this
    done = rt.create_signal(1)
    barrier = aql.BarrierAndPacket(
        header=aql.make_header(aql.PacketType.BARRIER_AND), dep_signal=[ready.handle, 0, 0, 0, 0]
    )
    q.submit(barrier)
    q.submit(_dispatch_packet(k, ka, done))
    return done, dst


SCENARIOS = [scenario_doorbell, scenario_header, scenario_barrier]

HINTS = {
    "scenario_doorbell": "who tells the packet processor that a packet is waiting?",
    "scenario_header": "which byte of the slot does the packet processor decide by, and when "
    "was it written? (lab 1, task C)",
    "scenario_barrier": "a barrier-AND completes when all its signals are 0; who was meant to "
    "store 0 into this one?",
}


def machine_state(rt) -> list[str]:
    """What the machine itself records about each queue: the indices in amd_queue_t, the
    header at the read index, and the KFD's view from debugfs (/sys/kernel/debug/kfd/mqds)."""
    hw = {}
    for proc in json.loads(rt.thunk.read_debugfs("mqds")):
        for q in proc["queues"]:
            hw[q["queue_id"]] = q["hw"] or {}
    lines = []
    for q in rt.queues():
        r = q.load_read_index()
        header = int.from_bytes(q.packet_bytes(r)[:2], "little")
        h = hw.get(q.queue_id, {})
        bell = "never rung" if q.doorbell_value is None else q.doorbell_value
        lines.append(
            f"queue {q.id}: write_index {q.load_write_index()}, read_dispatch_id {r}, "
            f"doorbell {bell}, header at read index {header:#06x} (type {header & 0xFF})"
        )
        lines.append(
            f"  HQD state {h.get('state')}, CP read index {h.get('read_index')}, "
            f"in flight {h.get('inflight')}, barrier {h.get('blocked_on')}"
        )
    return lines


def main(argv: list[str]) -> int:
    hint = "--hint" in argv
    failures = 0
    for scenario in SCENARIOS:
        print(f"== {scenario.__name__}")
        with rocr.init(preset="teaching", trace=True) as rt:
            done, dst = scenario(rt)
            try:
                done.wait(rocr.Condition.LT, 1)
                ok = np.array_equal(dst.view(np.float32), np.arange(N, dtype=np.float32) ** 2)
                print("   completed" + ("" if ok else " but the result is WRONG"))
                failures += not ok
            except rocr.HsaError as e:
                failures += 1
                if hint:  # the runtime's whole diagnosis, advice included
                    print("   " + str(e).replace("\n", "\n   "))
                    print(f"   hint: {HINTS.get(scenario.__name__, '')}")
                else:  # the facts only: the first line, and what the machine records
                    print("   " + str(e).splitlines()[0])
                    for line in machine_state(rt):
                        print("   " + line)
    if failures and not hint:
        print("\n(stuck? `python starter.py --hint` adds the runtime's advice and a hint)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

# Numbers and choices go into answers.toml (next to this file).
