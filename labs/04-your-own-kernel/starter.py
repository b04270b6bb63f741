"""Lab 4 starter: write a kernel, compile it, read its descriptor, launch it by hand, and
predict its time from occupancy and the instructions it executed."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

import rocr
from rocr import toolchain  # noqa: F401 (task A compiles with it)

SOURCE = Path(__file__).with_name("kernel.cl")  # your kernel (TODO 1-3 inside)
KERNEL = "tile_sum"
MCPU = "gfx900"  # the teaching GPU's target (hsaemu kernels shows it too)
TILE = 2048  # floats summed by one workgroup
WG = 256  # work-items per workgroup: 4 waves of 64

HSA_PACKET_TYPE_KERNEL_DISPATCH = 2
HSA_FENCE_SCOPE_SYSTEM = 2


# -- task A: compile ---------------------------------------------------------------------------
def build(out: Path) -> Path:
    """Compile SOURCE for MCPU into the code object `out` (clang-15, then ld.lld-15); returns
    `out`. rocr.toolchain.compile_cl runs both and raises ToolchainError with clang's message."""
    # TODO (task A)
    raise NotImplementedError("task A: compile kernel.cl with rocr.toolchain.compile_cl")


# -- task B: the kernel descriptor -------------------------------------------------------------
def registers(descriptor: bytes) -> dict:
    """From the 64-byte kernel descriptor (llvm::amdhsa::kernel_descriptor_t, LLVM
    AMDGPUUsage "Kernel Descriptor"): {"vgprs": VGPRs per work-item, "sgprs": SGPRs per wave,
    "lds": bytes of LDS per workgroup}. On gfx9 COMPUTE_PGM_RSRC1 (offset 48) holds
    GRANULATED_WORKITEM_VGPR_COUNT in bits 0-5 (VGPRs = (field + 1) * 4) and
    GRANULATED_WAVEFRONT_SGPR_COUNT in bits 6-9 (SGPRs = (field + 1) * 8);
    group_segment_fixed_size (offset 0) is the LDS the kernel declares."""
    # TODO (task B): struct.unpack_from the two fields and decode them.
    raise NotImplementedError("task B: decode the descriptor's registers and LDS")


# -- task C: launch by hand --------------------------------------------------------------------
def launch(rt, queue, kernel, src, dst, n: int, signal) -> int:
    """Launch `kernel` over n floats of `src` (one workgroup of WG work-items per TILE floats,
    sums into `dst`) with a packet you write yourself, as in lab 1: kernarg memory from the
    kernarg pool, filled with kernel.pack_args(src, dst, n, grid=..., workgroup=...) (the
    explicit arguments and the hidden ones the runtime fills), a 64-byte
    hsa_kernel_dispatch_packet_t with `signal` as its completion signal, published into a
    reserved slot, and the doorbell. Returns the packet index. Not queue.dispatch: that is
    the runtime doing it for you."""
    # TODO (task C)
    raise NotImplementedError("task C: kernarg, packet, slot, doorbell")


# -- task D: predict the kernel time -----------------------------------------------------------
MEM_ROUNDS = 0  # TODO (task D): dependent memory round trips per wave, from the disassembly
FIXED_US = 0.0  # TODO (task D): what the CP adds around the kernel's rounds (measure it)


def predict_us(record: dict, wg_per_cu: int) -> float:
    """The kernel time (completion signal's dispatch_time, end - start, in us) of the dispatch
    that `record` (a kernel record: "grid", "workgroup", "execution") describes, when one CU
    holds `wg_per_cu` of its workgroups at once. See the README, "Predicting the time"."""
    # TODO (task D)
    raise NotImplementedError("task D: predict the kernel time")


# -- running it (given) ------------------------------------------------------------------------
def main(argv: list[str]) -> int:
    out = Path(tempfile.gettempdir()) / "lab4-tile_sum.hsaco"
    build(out)
    print(f"built {out}  (hsaemu kernels {out} --disasm)")
    workgroups = int(argv[argv.index("--workgroups") + 1]) if "--workgroups" in argv else 40
    n = workgroups * TILE
    with rocr.init(preset="teaching", trace=True) as rt:
        gpu = rt.gpus[0]
        k = rt.load_code_object(out).kernel(KERNEL)
        regs = registers(k.code.descriptor)
        print(f"{k.signature}: {regs}")
        # The data lives in VRAM, as a real kernel's would: the GPU reads host memory only
        # over the (slow) host link. hsa_memory_copy moves it in and the sums out.
        host = rt.cpu.pools(fine_grained=True, kernarg=False)[0]
        x_host, sums = host.allocate(4 * n), host.allocate(4 * workgroups)
        x = np.random.default_rng(4).random(n, dtype=np.float32)
        x_host.view(np.float32)[:] = x
        vram = gpu.pools()[0]
        src, dst = vram.allocate(4 * n), vram.allocate(4 * workgroups)
        rt.memory_copy(src, x_host, 4 * n)
        queue = gpu.create_queue(64)
        done = rt.create_signal(1)
        i = launch(rt, queue, k, src, dst, n, done)
        done.wait(rocr.Condition.LT, 1)
        rt.memory_copy(sums, dst, 4 * workgroups)
        want = x.reshape(workgroups, TILE).sum(axis=1, dtype=np.float64)
        ok = np.allclose(sums.view(np.float32)[:workgroups], want, rtol=1e-5)
        start, end = done.dispatch_time()
        rec = next(
            r
            for r in rt.system.gpus[0].kernel_records
            if r["queue_id"] == queue.queue_id and r["dispatch_id"] == i
        )
        print(f"packet {i}: {workgroups} workgroups, result {'correct' if ok else 'WRONG'}")
        print(f"kernel time (signal timestamps): {(end - start) / 1e3:.3f} us")
        print(f"on the CUs (kernel record):      {(rec['end_ps'] - rec['start_ps']) / 1e6:.3f} us")
        ex = rec["execution"]
        print(
            f"executed: {ex['waves']} waves, {ex['issues']} issues, "
            f"{ex['lane_instructions']} lane-instructions"
        )
        print("  by class: " + ", ".join(f"{c} {v}" for c, v in ex["instructions"].items()))
        if "--predict" in argv:
            from hw_model.occupancy import occupancy

            occ = occupancy(
                rt.system.spec.gpu,
                workgroup_size=WG,
                vgprs=rec["vgprs"],
                sgprs=rec["sgprs"],
                lds=rec["lds"],
            )
            print(f"predicted: {predict_us(rec, occ.workgroups_per_cu):.3f} us")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

# Numbers and choices go into answers.toml (next to this file). Discuss in comments here:
# why does every global load of your kernel cost a whole memory round trip (look at what the
# compiler put between one load and the next), and what would summing in registers before
# touching LDS do to the occupancy and to the time?
