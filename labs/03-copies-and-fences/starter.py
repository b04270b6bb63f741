"""Lab 3 starter: move data to VRAM and back, time the copies, and fix a missing fence."""

from __future__ import annotations

import sys

import numpy as np

import rocr

N = 1 << 14  # floats: 64 KiB per buffer
X = np.arange(N, dtype=np.float32)


def host_buffers(rt: rocr.Runtime, fine_grained: bool = True) -> tuple[rocr.Buffer, rocr.Buffer]:
    """(src, dst) in system memory, both reachable by the GPU; src holds X, dst holds -1."""
    pool = rt.cpu.pools(fine_grained=fine_grained, kernarg=False)[0]
    src, dst = pool.allocate(4 * N), pool.allocate(4 * N)
    rt.allow_access([rt.gpus[0]], src)
    rt.allow_access([rt.gpus[0]], dst)
    src.view(np.float32)[:] = X
    dst.view(np.float32)[:] = -1
    return src, dst


# -- Part 1: copy in, compute in VRAM, copy back -------------------------------------------
def square_in_vram(rt: rocr.Runtime, src: rocr.Buffer, dst: rocr.Buffer) -> None:
    """Leave X**2 in the host buffer `dst`, computed by `square` over buffers in VRAM."""
    gpu = rt.gpus[0]
    square = rt.load_code_object("builtin:square").kernel("square")
    queue = gpu.create_queue(64)
    # TODO (part 1): as it is, every byte the kernel loads or stores crosses the host link.
    #   a. allocate two VRAM buffers from gpu.pools()[0];
    #   b. rt.memory_async_copy(dst, dst_agent, src, src_agent, size) the input into VRAM;
    #   c. launch square on the VRAM buffers (after the copy has finished!);
    #   d. copy the result back into `dst` and wait for it.
    queue.dispatch(square, grid=N, workgroup=256, args=(dst, src, N)).wait()


# -- Part 2: how fast is the link? ---------------------------------------------------------
def copy_bandwidth(rt: rocr.Runtime, nbytes: int) -> float:
    """GB/s of one host-to-VRAM copy of `nbytes`, from the copy's own GPU timestamps."""
    # TODO (part 2): rt.profiling_async_copy_enable(True), copy, wait, then
    #   start_ns, end_ns = rt.async_copy_time(handle.signal)
    raise NotImplementedError("part 2: time a copy with rt.async_copy_time")


# -- Part 3: the missing fence -------------------------------------------------------------
def square_coarse(rt: rocr.Runtime) -> rocr.Buffer:
    """Square X into a buffer the host then reads; returns that buffer."""
    gpu = rt.gpus[0]
    src, dst = host_buffers(rt, fine_grained=False)  # coarse-grained: cached in the GPU's L2
    square = rt.load_code_object("builtin:square").kernel("square")
    queue = gpu.create_queue(64)
    # TODO (part 3): the completion signal fires, yet the host reads -1. Why? Fix it.
    queue.dispatch(
        square, grid=N, workgroup=256, args=(dst, src, N), release=rocr.FenceScope.AGENT
    ).wait()
    return dst


def main() -> int:
    failures = 0
    with rocr.init(preset="teaching", trace=True) as rt:
        src, dst = host_buffers(rt)
        t0 = rt.now_ns
        square_in_vram(rt, src, dst)
        ok = np.array_equal(dst.view(np.float32), X * X)
        failures += not ok
        print(f"part 1: {rt.now_ns - t0:10.1f} ns of host time, result {'ok' if ok else 'WRONG'}")
        for ev in rt.system.tracer.events:
            if ev.cat in ("sdma", "kernel") and ev.dur:
                print(f"  {ev.ts / 1e6:9.3f} us  {ev.dur / 1e6:8.3f} us  {ev.track:<8} {ev.name}")
    with rocr.init(preset="teaching", trace=True) as rt:
        spec = rt.system.spec.gpu
        try:
            gbps = copy_bandwidth(rt, 1 << 20)
            print(f"part 2: {gbps:.2f} GB/s (link {spec.link_bandwidth_gbps} GB/s)")
        except NotImplementedError as e:
            failures += 1
            print(f"part 2: {e}")
    with rocr.init(preset="teaching", trace=True) as rt:
        out = square_coarse(rt)
        ok = np.array_equal(out.view(np.float32), X * X)
        failures += not ok
        print(f"part 3: the host reads {out.view(np.float32)[:4]} ... ({'ok' if ok else 'STALE'})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

# Answers: in answers.toml, next to this file.
