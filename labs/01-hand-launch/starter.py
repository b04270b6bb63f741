"""Lab 1 starter: build a kernel dispatch packet by hand and launch it."""

from __future__ import annotations

import struct
import sys

import numpy as np

import rocr

HSA_PACKET_TYPE_KERNEL_DISPATCH = 2
HSA_PACKET_TYPE_BARRIER_AND = 3
HSA_FENCE_SCOPE_SYSTEM = 2


def build_packet(
    kernel_object: int,
    kernarg_address: int,
    completion_signal: int,
    grid: int,
    workgroup: int,
) -> bytes:
    """A 1-D hsa_kernel_dispatch_packet_t, as 64 bytes."""
    # TODO (task A): build the header from its bit fields, then pack every field in order.
    header = 0
    raise NotImplementedError("task A: build the 64-byte packet with struct.pack")
    return struct.pack("<H", header)


def launch(queue: rocr.Queue, packet: bytes) -> int:
    """Reserve a slot, publish the packet (body first, header last), ring the doorbell.
    Returns the packet index."""
    # TODO (task B)
    raise NotImplementedError("task B: reserve a slot, write the packet, ring the doorbell")


# -- task C: the header race -------------------------------------------------------------------
# hsa_queue_t has no call that stores part of a slot: a producer writes the ring in memory
# (queue.base_address) with plain CPU stores. These two helpers are such stores, and a
# producer thread that loses the CPU between two of them.


def store_slot(queue: rocr.Queue, index: int, offset: int, data: bytes) -> None:
    """One CPU store of `data` into the slot of packet `index`, at byte `offset` of the slot."""
    queue._ring.mapping.write(queue._slot(index) + offset, bytes(data))
    queue.rt.trace("host", f"store packet {index} bytes {offset}..{offset + len(data) - 1}")


def preempted(queue: rocr.Queue, ns: int) -> None:
    """The producer thread is descheduled for `ns` nanoseconds; the GPU runs on meanwhile."""
    queue.rt.thunk.host_elapse(ns * 1000)


def publish_header_first(queue: rocr.Queue, index: int, packet: bytes) -> None:
    """The wrong order: header+setup (bytes 0..3) first, preempted for 5 us, then bytes 4..63."""
    # TODO (task C): two store_slot calls with preempted(queue, 5000) between them.
    raise NotImplementedError("task C: publish the header first, then the body")


def publish_body_first(queue: rocr.Queue, index: int, packet: bytes) -> None:
    """The right order: bytes 4..63 first, preempted for 5 us, then header+setup (bytes 0..3)."""
    # TODO (task C): the same two stores and the same preemption, in the other order.
    raise NotImplementedError("task C: publish the body first, then the header")


def race(rt, publish) -> dict:
    """Reuse slot 0 of a 64-packet ring and publish a new packet there with `publish`, the
    doorbell rung *before* the packet is written (legal: ROCr's AqlQueue::StoreRelaxed notes
    the CP stalls on an INVALID header until the packet is valid). Returns what happened."""
    gpu = rt.gpus[0]
    pool = rt.cpu.pools(fine_grained=True, kernarg=False)[0]
    n = 1024
    src, dst = pool.allocate(4 * n), pool.allocate(4 * n)
    for b in (src, dst):
        rt.allow_access([gpu], b)
    src.view(np.float32)[:] = np.arange(n, dtype=np.float32)
    square = rt.load_code_object("builtin:square").kernel("square")
    queue = gpu.create_queue(64)
    # Packet 0: an old launch over the first 256 floats; packets 1..63: empty barriers.
    old = rt.create_signal(1)
    queue.dispatch(square, grid=256, workgroup=64, args=(dst, src, 256), completion_signal=old)
    drained = rt.create_signal(1)
    nop = bytes([HSA_PACKET_TYPE_BARRIER_AND, 0]) + bytes(62)
    for _ in range(62):
        queue.write_packet(queue.add_write_index(1), nop)
    queue.write_packet(queue.add_write_index(1), nop[:56] + struct.pack("<Q", drained.handle))
    queue.ring_doorbell(63)
    drained.wait(rocr.Condition.LT, 1)
    dst.view(np.float32)[:] = 0
    # The new packet, into slot 0 again: square over all n floats.
    done = rt.create_signal(1)
    kernarg = rt.cpu.pools(kernarg=True)[0].allocate(square.kernarg_size)
    rt.allow_access([gpu], kernarg)
    kernarg.write(square.pack_args(dst, src, n))
    pkt = build_packet(square.kernel_object, kernarg.address, done.handle, n, 256)
    mark = len(rt.system.tracer.events)
    i = queue.add_write_index(1)
    queue.ring_doorbell(i)  # early: the CP looks at slot i as soon as the doorbell arrives
    publish(queue, i, pkt)
    done.wait(rocr.Condition.LT, 1, timeout_ns=100_000)
    launched = [
        r for r in rt.system.gpus[0].kernel_records if r["dispatch_id"] == i
    ]  # what the CP launched for packet i
    return {
        "index": i,
        "launched_grid": launched[-1]["grid"][0] if launched else None,
        "done": done.load(),
        "old": old.load(),
        "correct": bool(np.array_equal(dst.view(np.float32), np.arange(n) ** 2)),
        "events": rt.system.tracer.events[mark:],
    }


def print_timeline(events) -> None:
    """Trace events in time order with their arguments (one workgroup per CU, the rest
    counted)."""
    seen_cu: set[str] = set()
    hidden = 0
    for ev in sorted(events, key=lambda e: e.ts):
        if ev.cat == "wg":
            if ev.track in seen_cu:
                hidden += 1
                continue
            seen_cu.add(ev.track)
        args = " ".join(f"{k}={v}" for k, v in (ev.args or {}).items())
        dur = f" ({ev.dur / 1e6:.3f} us)" if ev.ph == "X" else ""
        print(f"  {ev.ts / 1e6:9.3f} us  {ev.track:<10} {ev.name}{dur}  {args}")
    if hidden:
        print(f"  ... and {hidden} more workgroups (the first on each CU is shown)")


def main(argv: list[str]) -> int:
    n = 10_000
    with rocr.init(preset="teaching", trace=True) as rt:
        gpu = rt.gpus[0]
        pool = rt.cpu.pools(fine_grained=True, kernarg=False)[0]
        src, dst = pool.allocate(4 * n), pool.allocate(4 * n)
        rt.allow_access([gpu], src)
        rt.allow_access([gpu], dst)
        src.view(np.float32)[:] = np.arange(n, dtype=np.float32)
        square = rt.load_code_object("builtin:square").kernel("square")
        kernarg = rt.cpu.pools(kernarg=True)[0].allocate(square.kernarg_size)
        rt.allow_access([gpu], kernarg)
        kernarg.write(square.pack_args(dst, src, n))
        done = rt.create_signal(1)
        queue = gpu.create_queue(64)

        pkt = build_packet(square.kernel_object, kernarg.address, done.handle, n, 256)
        mark = len(rt.system.tracer.events)  # print only what the launch causes
        i = launch(queue, pkt)
        done.wait(rocr.Condition.LT, 1)

        ok = np.array_equal(dst.view(np.float32), np.arange(n, dtype=np.float32) ** 2)
        print(f"packet {i} retired; result {'correct' if ok else 'WRONG'}")
        print_timeline(rt.system.tracer.events[mark:])
        if "--trace" in argv:
            path = argv[argv.index("--trace") + 1]
            with open(path, "w") as f:
                f.write(rt.system.tracer.dumps())
    if "--race" in argv:
        for publish in (publish_header_first, publish_body_first):
            with rocr.init(preset="teaching", trace=True) as rt:
                r = race(rt, publish)
            print(f"\n== {publish.__name__}: packet {r['index']} in slot 0 again")
            print_timeline(r["events"])
            print(
                f"  the CP launched grid {r['launched_grid']}; new signal {r['done']}, "
                f"old signal {r['old']}; result {'correct' if r['correct'] else 'WRONG'}"
            )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

# Numbers and choices go into answers.toml (next to this file). Discuss in comments here:
# why must the CP write the header back to INVALID when a packet retires, and why does the
# body-first order make the early doorbell harmless?
