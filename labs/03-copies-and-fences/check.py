"""Lab 3 check: grades square_in_vram(), copy_bandwidth() and square_coarse() from a student's
file, and the answers in answers.toml. Right values are not enough: the check reads what the
machine recorded — the SDMA queues the KFD created, the SDMA packets the engines executed and
their sizes, the kernel's dispatch packet and kernel arguments in memory, its release fence,
the L2 writebacks in the trace.

python labs/03-copies-and-fences/check.py path/to/starter.py
"""

from __future__ import annotations

import importlib.util
import struct
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np

import rocr
from hw_model import aql
from hw_model.memory import MemKind

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _grading import Choice, Number, grade, report  # noqa: E402

N = 1 << 14
X = np.arange(N, dtype=np.float32)
TIMED_BYTES = 1 << 20
SMALL_BYTES = 4096
LAB = "lab3"
# Fixed answers, as salted digests (labs/_grading.py digest); the values are in
# solution.answers.toml.
KEYS = {
    "vram_pays": "f81ff55d33f04ae2",
    "small_copy_cost": "a32a9443893e92cc",
    "stale_where": "e5249ae969bd1447",
    "real_gpu": "ee01928573f883ef",
}


def load(path: str):
    spec = importlib.util.spec_from_file_location("student", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def host_buffers(rt, fine_grained: bool = True):
    pool = rt.cpu.pools(fine_grained=fine_grained, kernarg=False)[0]
    src, dst = pool.allocate(4 * N), pool.allocate(4 * N)
    rt.allow_access([rt.gpus[0]], src)
    rt.allow_access([rt.gpus[0]], dst)
    src.view(np.float32)[:] = X
    dst.view(np.float32)[:] = -1
    return src, dst


# -- what the machine recorded -------------------------------------------------------------
class Copy(NamedTuple):
    """One COPY_LINEAR an SDMA engine executed (from its trace event)."""

    src: int
    dst: int
    nbytes: int
    pasid: int
    start: int
    end: int


class Run(NamedTuple):
    """One run of `square`: its kernel record, and its dispatch packet read back from the
    queue's ring (the CP resets only the packet type when it retires a packet)."""

    dst: int
    src: int
    n: int
    release: int
    pasid: int
    start: int
    end: int


def sdma_copies(rt) -> list[Copy]:
    return [
        Copy(
            int(e.args["src"], 16),
            int(e.args["dst"], 16),
            e.args["bytes"],
            e.args["pasid"],
            e.ts,
            e.ts + e.dur,
        )
        for e in rt.system.tracer.events
        if e.cat == "sdma" and e.name == "COPY_LINEAR"
    ]


def sdma_packets(rt, name: str) -> int:
    return sum(1 for e in rt.system.tracer.events if e.cat == "sdma" and e.name == name)


def square_runs(rt) -> list[Run]:
    gpu = rt.system.gpus[0]
    mem = rt.system.memory
    runs = []
    for rec in gpu.kernel_records:
        if rec["name"] != "square":
            continue
        pp = gpu.queue_by_id(rec["pasid"], rec["queue_id"])
        if pp is None:
            continue  # the queue is gone and its ring with it
        mqd = pp.mqd
        slot = mqd.ring_base + (rec["dispatch_id"] % mqd.ring_packets) * aql.PACKET_SIZE
        pkt = aql.KernelDispatchPacket.from_bytes(mem.read(rec["pasid"], slot, aql.PACKET_SIZE))
        dst, src, n = struct.unpack("<QQQ", mem.read(rec["pasid"], pkt.kernarg_address, 24))
        runs.append(
            Run(
                dst,
                src,
                n,
                aql.header_release(pkt.header),
                rec["pasid"],
                rec["start_ps"],
                rec["end_ps"],
            )
        )
    return runs


def bo(rt, pasid: int, va: int):
    return rt.system.memory.find(pasid, va)


def in_vram(rt, pasid: int, va: int) -> bool:
    b = bo(rt, pasid, va)
    return b is not None and b.kind == MemKind.VRAM


def inside(buf, va: int) -> bool:
    return buf.address <= va < buf.address + buf.size


def show(copies: list[Copy]) -> str:
    return ", ".join(f"{c.nbytes} bytes {c.src:#x} -> {c.dst:#x}" for c in copies) or "none"


def _call(what: str, fn, *args):
    try:
        return fn(*args), None
    except NotImplementedError as e:
        return None, f"{what}: not done yet ({e})"
    except rocr.HsaError as e:
        return None, f"{what}: {e.status.name}: {e.message.splitlines()[0]}"


# -- part 1 --------------------------------------------------------------------------------
def check_part1(mod) -> list[str]:
    what = "square_in_vram"
    with rocr.init(preset="teaching", trace=True) as rt:
        src, dst = host_buffers(rt)
        _, err = _call(what, mod.square_in_vram, rt, src, dst)
        if err:
            return [err]
        problems = []
        if not np.array_equal(dst.view(np.float32), X * X):
            problems.append(f"{what}: the host reads wrong values in dst")
        kinds = [q["type"] for q in rt.runlist()[0]["sdma_queues"]]
        made = [
            e.args["direction"] for e in rt.system.tracer.events if e.name == "SDMA queue created"
        ]
        if "sdma" not in kinds or not made:
            problems.append(
                f"{what}: the KFD created no SDMA queue (runlist: {kinds or 'none'}): copy "
                "with rt.memory_async_copy, whose first copy creates one"
            )
        copies = sdma_copies(rt)
        into = [c for c in copies if inside(src, c.src) and in_vram(rt, c.pasid, c.dst)]
        runs = square_runs(rt)
        if sum(c.nbytes for c in into) != 4 * N:
            return problems + [
                f"{what}: the SDMA engines did not copy the {4 * N} bytes of src into VRAM "
                f"(COPY_LINEAR packets executed: {show(copies)})"
            ]
        vram_in = {bo(rt, c.pasid, c.dst).handle for c in into}
        good = [
            r
            for r in runs
            if in_vram(rt, r.pasid, r.src)
            and bo(rt, r.pasid, r.src).handle in vram_in
            and in_vram(rt, r.pasid, r.dst)
            and r.n == N
        ]
        if not good:
            seen = ", ".join(f"square({r.dst:#x}, {r.src:#x}, {r.n})" for r in runs) or "none"
            return problems + [
                f"{what}: no run of square read the copied VRAM buffer and wrote VRAM "
                f"(its runs, from their dispatch packets' kernel arguments: {seen})"
            ]
        run = good[-1]
        if run.start < max(c.end for c in into):
            problems.append(
                f"{what}: square started at {run.start / 1e6:.3f} us, before the copy into "
                f"VRAM had finished ({max(c.end for c in into) / 1e6:.3f} us): wait for it"
            )
        out_bo = bo(rt, run.pasid, run.dst)
        back = [
            c
            for c in copies
            if inside(dst, c.dst) and bo(rt, c.pasid, c.src) is out_bo and c.start >= run.end
        ]
        if sum(c.nbytes for c in back) != 4 * N:
            problems.append(
                f"{what}: the SDMA engines did not copy square's {4 * N}-byte result from VRAM "
                f"into dst after the kernel (COPY_LINEAR packets executed: {show(copies)})"
            )
        return problems


# -- part 2 --------------------------------------------------------------------------------
def check_part2(mod) -> list[str]:
    what = "copy_bandwidth"
    with rocr.init(preset="teaching", trace=True) as rt:
        link = rt.system.spec.gpu.link_bandwidth_gbps
        gbps, err = _call(what, mod.copy_bandwidth, rt, TIMED_BYTES)
        if err:
            return [err]
        copies = [
            c for c in sdma_copies(rt) if c.nbytes == TIMED_BYTES and in_vram(rt, c.pasid, c.dst)
        ]
        if not copies:
            return [
                f"{what}: no SDMA engine copied {TIMED_BYTES} bytes into VRAM "
                f"(COPY_LINEAR packets executed: {show(sdma_copies(rt))})"
            ]
        if sdma_packets(rt, "TIMESTAMP") < 2:
            return [
                f"{what}: the copy carried no SDMA TIMESTAMP packets, so it has no GPU "
                "timestamps: rt.profiling_async_copy_enable(True) before copying"
            ]
        c = copies[-1]
        measured = TIMED_BYTES / ((c.end - c.start) / 1000)  # bytes per ns = GB/s
        try:
            value = float(gbps)
        except (TypeError, ValueError):
            return [f"{what}: returns {gbps!r}, not a number of GB/s"]
        if abs(value - measured) > 0.05 * measured:
            return [
                f"{what}: returns {value:.3f} GB/s, but the engine moved {TIMED_BYTES} bytes "
                f"in {(c.end - c.start) / 1e6:.3f} us ({measured:.3f} GB/s; the link: {link} "
                "GB/s): bytes / (end_ns - start_ns)"
            ]
        return []


# -- part 3 --------------------------------------------------------------------------------
def check_part3(mod) -> list[str]:
    what = "square_coarse"
    with rocr.init(preset="teaching", trace=True) as rt:
        out, err = _call(what, mod.square_coarse, rt)
        if err:
            return [err]
        node = rt.gpus[0].node
        mem = rt.system.memory
        runs = [r for r in square_runs(rt) if inside(out, r.dst) and r.n == N]
        if not runs:
            return [f"{what}: no run of square wrote the buffer it returns"]
        run = runs[-1]
        problems = []
        if not np.array_equal(out.view(np.float32), X * X):
            problems.append(
                f"{what}: the host reads stale values {out.view(np.float32)[:3]} ...: "
                f"square's results are still in the GPU's L2 ({mem.l2_dirty_bytes(node)} dirty "
                "bytes)"
            )
        target = bo(rt, run.pasid, run.dst)
        if target.coherent:
            return problems  # fine-grained: the L2 does not hold it
        scope = aql.FenceScope(run.release).name
        wb = [
            e
            for e in rt.system.tracer.events
            if e.name == "L2 writeback" and e.args["node"] == node and e.ts >= run.end
        ]
        if not wb or mem.l2_dirty_bytes(node):
            problems.append(
                f"{what}: square wrote coarse-grained memory and its release fence has "
                f"{scope} scope; no system-scope release wrote the GPU's L2 back "
                f"(L2 writebacks after the kernel: {len(wb)}, dirty bytes left: "
                f"{mem.l2_dirty_bytes(node)})"
            )
        return problems


# -- answers.toml ----------------------------------------------------------------------------
def _timed_copy(nbytes: int) -> float:
    """GB/s of one host-to-VRAM copy of `nbytes`, from its GPU timestamps."""
    with rocr.init(preset="teaching", trace=True) as rt:
        gpu = rt.gpus[0]
        src = rt.cpu.pools(fine_grained=True, kernarg=False)[0].allocate(nbytes)
        rt.allow_access([gpu], src)
        dev = gpu.pools()[0].allocate(nbytes)
        rt.profiling_async_copy_enable(True)
        h = rt.memory_async_copy(dev, gpu, src, rt.cpu, nbytes).wait()
        start, end = rt.async_copy_time(h.signal)
        return nbytes / (end - start)


def truths() -> dict:
    """Measured on the machine: the bytes part 1 moves over the link, the two copy rates, the
    dirty bytes an agent-scope release leaves in the L2."""
    out = {"gbps_1mib": _timed_copy(TIMED_BYTES), "gbps_4kib": _timed_copy(SMALL_BYTES)}
    with rocr.init(preset="teaching", trace=True) as rt:
        gpu = rt.gpus[0]
        link = rt.system.gpus[0].host_link
        src, dst = host_buffers(rt)
        vram = gpu.pools()[0]
        d_in, d_out = vram.allocate(4 * N), vram.allocate(4 * N)
        before = link.bytes_moved
        rt.memory_async_copy(d_in, gpu, src, rt.cpu, 4 * N).wait()
        k = rt.load_code_object("builtin:square").kernel("square")
        q = gpu.create_queue(64)
        q.dispatch(k, grid=N, workgroup=256, args=(d_out, d_in, N)).wait()
        rt.memory_async_copy(dst, rt.cpu, d_out, gpu, 4 * N).wait()
        out["link_bytes"] = link.bytes_moved - before
        csrc, cdst = host_buffers(rt, fine_grained=False)
        q.dispatch(
            k, grid=N, workgroup=256, args=(cdst, csrc, N), release=rocr.FenceScope.AGENT
        ).wait()
        out["dirty_bytes"] = rt.system.memory.l2_dirty_bytes(gpu.node)
    return out


def questions() -> list[Number | Choice]:
    t = truths()
    return [
        Number("link_bytes", t["link_bytes"], rel=0.0),
        Choice(
            "vram_pays",
            ("never", "always", "when-data-is-reused"),
            key=KEYS["vram_pays"],
            lab=LAB,
        ),
        Number("gbps_1mib", t["gbps_1mib"], rel=0.05),
        Number("gbps_4kib", t["gbps_4kib"], rel=0.10),
        Choice(
            "small_copy_cost",
            ("bandwidth", "setup-and-latency", "the-host"),
            key=KEYS["small_copy_cost"],
            lab=LAB,
        ),
        Choice(
            "stale_where",
            ("host-cache", "gpu-l2", "sdma-ring", "nowhere"),
            key=KEYS["stale_where"],
            lab=LAB,
        ),
        Number("dirty_bytes", t["dirty_bytes"], rel=0.0),
        Choice(
            "real_gpu",
            ("hang", "memory-fault", "queue-error", "wrong-result"),
            key=KEYS["real_gpu"],
            lab=LAB,
        ),
    ]


def check(path: str) -> list[str]:
    """Problems found (empty when everything passes)."""
    mod = load(path)
    problems = check_part1(mod) + check_part2(mod) + check_part3(mod)
    return problems + grade(path, questions())


def main() -> int:
    path = sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).with_name("starter.py"))
    return report("lab 3", check(path), "through VRAM and back by SDMA, timed, and fenced")


if __name__ == "__main__":
    sys.exit(main())
