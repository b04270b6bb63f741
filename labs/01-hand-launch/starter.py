"""Lab 1 starter: build a kernel dispatch packet by hand and launch it."""

from __future__ import annotations

import struct
import sys

import numpy as np

import rocr

HSA_PACKET_TYPE_KERNEL_DISPATCH = 2
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


def main(argv: list[str]) -> int:
    n = 10_000
    with rocr.init(preset="teaching") as rt:
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
        for ev in rt.system.tracer.events[mark:]:
            if ev.cat != "wg" or ev.args["wg"] == (0, 0, 0):
                print(f"  {ev.ts / 1e6:9.3f} us  {ev.track:<10} {ev.name}")
        if "--trace" in argv:
            path = argv[argv.index("--trace") + 1]
            with open(path, "w") as f:
                f.write(rt.system.tracer.dumps())
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

# Answers:
# 1.
# 2.
# 3.
