"""Lab 3 reference solution."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import rocr

_spec = importlib.util.spec_from_file_location("starter", Path(__file__).with_name("starter.py"))
starter = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(starter)
N, X, host_buffers = starter.N, starter.X, starter.host_buffers


def square_in_vram(rt: rocr.Runtime, src: rocr.Buffer, dst: rocr.Buffer) -> None:
    gpu = rt.gpus[0]
    square = rt.load_code_object("builtin:square").kernel("square")
    queue = gpu.create_queue(64)
    vram = gpu.pools()[0]
    d_in, d_out = vram.allocate(4 * N), vram.allocate(4 * N)
    copy_in = rt.memory_async_copy(d_in, gpu, src, rt.cpu, 4 * N)
    copy_in.wait()  # or: a barrier-AND packet on copy_in.signal ahead of the kernel
    queue.dispatch(square, grid=N, workgroup=256, args=(d_out, d_in, N)).wait()
    rt.memory_async_copy(dst, rt.cpu, d_out, gpu, 4 * N).wait()


def copy_bandwidth(rt: rocr.Runtime, nbytes: int) -> float:
    gpu = rt.gpus[0]
    src = rt.cpu.pools(fine_grained=True, kernarg=False)[0].allocate(nbytes)
    rt.allow_access([gpu], src)
    dev = gpu.pools()[0].allocate(nbytes)
    rt.profiling_async_copy_enable(True)
    h = rt.memory_async_copy(dev, gpu, src, rt.cpu, nbytes).wait()
    start_ns, end_ns = rt.async_copy_time(h.signal)
    return nbytes / (end_ns - start_ns)  # bytes per ns = GB/s


def square_coarse(rt: rocr.Runtime) -> rocr.Buffer:
    gpu = rt.gpus[0]
    src, dst = host_buffers(rt, fine_grained=False)
    square = rt.load_code_object("builtin:square").kernel("square")
    queue = gpu.create_queue(64)
    # A system-scope release writes the L2's dirty lines back before the completion signal.
    # (Or: allocate from the fine-grained pool, which the L2 does not cache.)
    queue.dispatch(
        square, grid=N, workgroup=256, args=(dst, src, N), release=rocr.FenceScope.SYSTEM
    ).wait()
    return dst


if __name__ == "__main__":
    starter.square_in_vram = square_in_vram
    starter.copy_bandwidth = copy_bandwidth
    starter.square_coarse = square_coarse
    sys.exit(starter.main())

# Why (the answers themselves are in solution.answers.toml):
# 1. The VRAM version moves the same 128 KiB over the link (64 KiB in, 64 KiB out) as the
#    kernel over host memory did, so one pass is no faster; it pays once the data is used
#    more than once (several kernels, or a kernel reading each byte many times), since VRAM
#    is ~30x faster than the link on this GPU and ~37x on an MI25.
# 2. setup latency + link latency + bytes / min(SDMA engine, link bandwidth): small copies
#    are dominated by the fixed part, large ones approach the link's bandwidth.
# 3. The kernel's stores to coarse-grained memory stay in the GPU's L2; an agent-scope
#    release only makes them visible to the agent itself. The host needs a system-scope
#    release (the "L2 writeback" in the trace), or fine-grained memory the L2 does not cache.
# 4. On real hardware the same: the host reads stale data, silently, or sees it only by
#    luck when the lines are evicted; nothing faults.
