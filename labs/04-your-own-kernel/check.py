"""Lab 4 check: grades build(), registers(), launch() and predict_us() from a student's file,
and the numbers in answers.toml, from what the machine recorded: the code object is compiled
again from the student's own source and compared with the descriptor and code the CP read
from GPU memory for the packet it retired; the kernel record (and its interpreter counts) of
that packet; the kernarg bytes the packet points at; the sums in VRAM against numpy; and the
kernel run again by the check itself on data of its own.

python labs/04-your-own-kernel/check.py path/to/starter.py
"""

from __future__ import annotations

import importlib.util
import math
import struct
import sys
import tempfile
from pathlib import Path

import numpy as np

import rocr
from hw_model import aql
from hw_model import structs as st
from hw_model.config import system_spec
from hw_model.occupancy import occupancy
from rocr import toolchain
from rocr.loader import parse_code_object

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _grading import Choice, Number, grade, report  # noqa: E402

LAB = "lab4"
KERNEL = "tile_sum"
MCPU = "gfx900"
TILE = 2048
WG = 256
LIMITS = ("wave_slots", "vgprs", "sgprs", "lds", "barriers")
SPEC = system_spec("teaching").gpu


def load(path: str):
    spec = importlib.util.spec_from_file_location("student", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class Machine:
    """The teaching GPU with the student's code object loaded, and the check's reference:
    the same source compiled by the check."""

    def __init__(self, blob: bytes, ref: bytes) -> None:
        self.rt = rocr.init(preset="teaching", trace=True)
        self.gpu = self.rt.gpus[0]
        self.exe = self.rt.load_code_object(blob)
        self.kernel = self.exe.kernel(KERNEL)
        co = parse_code_object(ref)
        info = co.kernel(KERNEL)
        self.ref_descriptor = info.descriptor
        self.ref_code = co.read_va(info.code_vaddr, info.code_size)
        self.host = self.rt.cpu.pools(fine_grained=True, kernarg=False)[0]
        self.vram = self.gpu.pools()[0]

    def data(self, workgroups: int, seed: int) -> tuple:
        """(src, dst) in VRAM, src holding random floats; and the sums numpy expects."""
        n = workgroups * TILE
        x = np.random.default_rng(seed).random(n, dtype=np.float32)
        staging = self.host.allocate(4 * n)
        staging.view(np.float32)[:] = x
        src, dst = self.vram.allocate(4 * n), self.vram.allocate(4 * workgroups)
        self.rt.memory_copy(src, staging, 4 * n)
        self.rt.memory_fill(dst, 0x7FC00000, workgroups)  # NaN: nothing written yet
        return src, dst, x.reshape(workgroups, TILE).sum(axis=1, dtype=np.float64)

    def sums(self, dst, workgroups: int) -> np.ndarray:
        out = self.host.allocate(4 * workgroups)
        self.rt.memory_copy(out, dst, 4 * workgroups)
        return out.view(np.float32)[:workgroups].astype(np.float64)

    def record(self, queue, index: int) -> dict | None:
        """The kernel record of packet `index` of `queue`: what the CP launched for it."""
        for r in reversed(self.rt.system.gpus[0].kernel_records):
            if r["queue_id"] == queue.queue_id and r["dispatch_id"] == index:
                return r
        return None

    def read(self, pasid: int, va: int, size: int) -> bytes:
        """GPU memory as the CP sees it (through the process's page tables)."""
        return bytes(self.rt.system.gpus[0].memory.read(pasid, va, size))

    def run(self, workgroups: int, lds: int | None = None, seed: int = 7) -> tuple:
        """The check's own dispatch: (kernel time in us, kernel record, sums, expected)."""
        src, dst, want = self.data(workgroups, seed)
        q = self.gpu.create_queue(64)
        h = q.dispatch(
            self.kernel, workgroups * WG, WG, (src, dst, workgroups * TILE), group_segment_size=lds
        )
        h.wait()
        start, end = h.dispatch_time()
        rec = self.record(q, h.index)
        q.destroy()
        return (end - start) / 1e3, rec, self.sums(dst, workgroups), want

    def shutdown(self) -> None:
        self.rt.shutdown()


def close(got: np.ndarray, want: np.ndarray) -> bool:
    return bool(np.allclose(got, want, rtol=1e-4, atol=1e-3))


def compile_both(mod, tmp: Path) -> tuple[bytes | None, bytes | None, list[str]]:
    """The student's build() output and the check's own compilation of their SOURCE."""
    source = Path(getattr(mod, "SOURCE", ""))
    if not source.is_file():
        return None, None, [f"build: SOURCE = {str(source)!r} is not your kernel's .cl file"]
    try:
        toolchain.compile_cl(source, tmp / "ref.hsaco", mcpu=MCPU)
    except toolchain.ToolchainError as e:
        return None, None, [f"build: {source.name} does not compile: {str(e).splitlines()[-1]}"]
    ref = (tmp / "ref.hsaco").read_bytes()
    try:
        out = mod.build(tmp / "student.hsaco")
    except NotImplementedError as e:
        return None, ref, [f"build: not done yet ({e})"]
    except toolchain.ToolchainError as e:
        return None, ref, [f"build: {str(e).splitlines()[0]}"]
    path = Path(out) if out is not None else tmp / "student.hsaco"
    if not path.is_file():
        return None, ref, [f"build: no code object at {path}"]
    return path.read_bytes(), ref, []


def check_kernel(m: Machine) -> list[str]:
    """The kernel itself, run by the check: it must compute the sums, stage its tile in LDS
    and be the compiled code (interpreter counts in its kernel record)."""
    problems = []
    k = m.kernel
    if k.group_segment_size < 4 * TILE:
        problems.append(
            f"kernel: tile_sum declares {k.group_segment_size} bytes of LDS; stage the whole "
            f"tile ({4 * TILE} bytes) in a __local array"
        )
    for workgroups in (3, 5):
        _, rec, got, want = m.run(workgroups, seed=workgroups)
        if rec is None or "execution" not in rec:
            return problems + ["kernel: the GPU ran no compiled tile_sum"]
        if not close(got, want):
            bad = int(np.count_nonzero(~np.isclose(got, want, rtol=1e-4, atol=1e-3)))
            problems.append(
                f"kernel: run by the check over {workgroups} workgroups, tile_sum wrote "
                f"{bad} wrong sums of {workgroups}"
            )
            break
    return problems


def check_registers(mod, m: Machine) -> list[str]:
    raw = bytes(m.kernel.code.descriptor)
    cases = [raw]
    for field, lds in ((0x00, 0), (0x4C, 16384), (0x3F | 0x3C0, 65536), (0x105, 512)):
        (rsrc1,) = struct.unpack_from("<I", raw, 48)
        b = bytearray(raw)
        struct.pack_into("<I", b, 48, (rsrc1 & ~0x3FF) | field)
        struct.pack_into("<I", b, 0, lds)
        cases.append(bytes(b))
    for d in cases:
        kd = st.KernelDescriptor.from_bytes(d)
        want = {
            "vgprs": st.decode_vgpr_count(kd.compute_pgm_rsrc1, SPEC.vgpr_alloc_granule),
            "sgprs": st.decode_sgpr_count(kd.compute_pgm_rsrc1),
            "lds": kd.group_segment_fixed_size,
        }
        try:
            got = mod.registers(d)
        except NotImplementedError as e:
            return [f"registers: not done yet ({e})"]
        if not isinstance(got, dict):
            return [f"registers: return a dict with {', '.join(want)}, not {type(got).__name__}"]
        wrong = [key for key in want if got.get(key) != want[key]]
        if wrong:
            what = "your kernel's descriptor" if d is raw else f"a descriptor with RSRC1 {field:#x}"
            return [f"registers: {', '.join(wrong)} wrong for {what}"]
    return []


def check_launch(mod, m: Machine) -> list[str]:
    """The student's launch() on the check's machine, judged from the machine's records."""
    workgroups = 20  # more than one round: 16 fit at once
    n = workgroups * TILE
    rt = m.rt
    src, dst, want = m.data(workgroups, seed=11)
    q = m.gpu.create_queue(64)
    done = rt.create_signal(1)
    helped: list[str] = []
    # The runtime's packet builders, watched: queue.dispatch (on the student's queue; the
    # runtime's own copies and fills use queues of their own) and rt.dispatch_packet.
    dispatch, dispatch_packet = rt._dispatch, rt.dispatch_packet

    def spy_dispatch(queue, *a, **kw):
        if queue is q:
            helped.append("queue.dispatch")
        return dispatch(queue, *a, **kw)

    def spy_packet(*a, **kw):
        helped.append("rt.dispatch_packet")
        return dispatch_packet(*a, **kw)

    rt._dispatch, rt.dispatch_packet = spy_dispatch, spy_packet
    mark = rt.system.tracer.events.total
    try:
        i = mod.launch(rt, q, m.kernel, src, dst, n, done)
    except NotImplementedError as e:
        return [f"launch: not done yet ({e})"]
    finally:
        del rt._dispatch, rt.dispatch_packet  # the class's methods again
    if helped:
        return [
            "launch: the runtime built the packet (queue.dispatch or rt.dispatch_packet); "
            "write the kernarg and the 64-byte packet yourself"
        ]
    try:
        done.wait(rocr.Condition.LT, 1, timeout_ns=10_000_000)
    except rocr.HsaError as e:
        return [f"launch: the completion signal never reached 0: {e.message.splitlines()[0]}"]
    problems = []
    if not isinstance(i, int) or i < 0:
        return [f"launch: return the packet index, not {i!r}"]
    rec = m.record(q, i)
    if rec is None:
        return [f"launch: the CP launched nothing for packet {i} of your queue"]
    raw = q.packet_bytes(i)  # the retired slot: header INVALID again, body as written
    pkt = aql.KernelDispatchPacket.from_bytes(bytes([aql.PacketType.KERNEL_DISPATCH]) + raw[1:])
    pasid = rec["pasid"]
    kd_bytes = m.read(pasid, pkt.kernel_object, st.KERNEL_DESCRIPTOR_SIZE)
    if kd_bytes != m.ref_descriptor:
        problems.append(
            f"launch: the descriptor at the packet's kernel_object {pkt.kernel_object:#x} is "
            "not the one the compiler wrote for your kernel"
        )
    else:
        kd = st.KernelDescriptor.from_bytes(kd_bytes)
        entry = pkt.kernel_object + kd.kernel_code_entry_byte_offset
        if m.read(pasid, entry, len(m.ref_code)) != m.ref_code:
            problems.append("launch: the code at the descriptor's entry is not your kernel's")
    if rec["name"] != KERNEL or "execution" not in rec:
        problems.append(f"launch: the CP ran {rec['name']}, not your compiled {KERNEL}")
    elif rec["execution"].get("waves") != workgroups * WG // 64:
        problems.append(
            f"launch: the interpreter ran {rec['execution'].get('waves')} waves, not "
            f"{workgroups * WG // 64}"
        )
    if rec["grid"] != (workgroups * WG, 1, 1) or rec["workgroup"] != (WG, 1, 1):
        problems.append(
            f"launch: the CP launched grid {rec['grid']} of workgroups {rec['workgroup']}, not "
            f"one workgroup of {WG} per tile ({workgroups * WG} work-items)"
        )
    k = m.kernel
    dims = max(1, pkt.setup & 3)  # the hidden arguments follow the packet's dimensions
    expect = k.pack_args(src, dst, n, grid=rec["grid"][:dims], workgroup=rec["workgroup"][:dims])
    got = m.read(pasid, pkt.kernarg_address, len(expect))
    skip = {a.offset for a in k.hidden_args if a.value_kind == "hidden_queue_ptr"}
    for a in (*k.args, *k.hidden_args):
        if a.offset in skip:
            continue
        if got[a.offset : a.offset + a.size] != expect[a.offset : a.offset + a.size]:
            problems.append(
                f"launch: kernarg {a.name or a.value_kind} at offset {a.offset} is not what "
                "the runtime would pass (kernel.pack_args(..., grid=, workgroup=))"
            )
            break
    if not any(
        e.name == "completion signal" and e.args.get("signal") == hex(done.handle)
        for e in rt.system.tracer.events.since(mark)
    ):
        problems.append("launch: the CP never decremented your completion signal")
    if not close(m.sums(dst, workgroups), want):
        problems.append("launch: the sums in dst are wrong")
    return problems


def check_prediction(mod, m: Machine) -> list[str]:
    problems = []
    for workgroups, lds in ((1, None), (16, None), (24, None), (40, None), (12, 16384)):
        t, rec, _, _ = m.run(workgroups, lds)
        occ = occupancy(SPEC, workgroup_size=WG, vgprs=rec["vgprs"], sgprs=rec["sgprs"],
                        lds=rec["lds"])  # fmt: skip
        try:
            p = mod.predict_us(dict(rec), occ.workgroups_per_cu)
        except NotImplementedError as e:
            return [f"predict_us: not done yet ({e})"]
        if not isinstance(p, int | float) or not math.isfinite(p) or abs(p - t) > 0.1 * t:
            what = f" with {lds} bytes of LDS" if lds else ""
            problems.append(
                f"predict_us: {workgroups} workgroups{what}: off by more than 10% of the "
                "measured time"
            )
    return problems


def truths(m: Machine) -> dict:
    k = m.kernel
    kd = k.code.kd
    vgprs = st.decode_vgpr_count(kd.compute_pgm_rsrc1, SPEC.vgpr_alloc_granule)
    sgprs = st.decode_sgpr_count(kd.compute_pgm_rsrc1)
    occ = occupancy(SPEC, workgroup_size=WG, vgprs=vgprs, sgprs=sgprs, lds=k.group_segment_size)
    big = occupancy(SPEC, workgroup_size=WG, vgprs=vgprs, sgprs=sgprs, lds=16384)
    # Memory round trips per wave, from one workgroup alone on a CU: its time is the wave's
    # issue time (4 clocks per instruction) plus one DRAM latency per round trip.
    mark = m.rt.system.tracer.events.total
    _, rec, _, _ = m.run(1)
    dur = next(
        e.dur for e in m.rt.system.tracer.events.since(mark) if e.cat == "wg" and e.name == KERNEL
    )
    c, waves = rec["execution"]["instructions"], rec["execution"]["waves"]
    issue = sum(
        -(-x // waves)
        for x in (
            c["valu"] + 4 * c["trans"] + 16 * c["valu64"],
            c["salu"] + c["smem"] + c["branch"] + c["waitcnt"],
            c["lds"],
            c["vmem_load"] + c["vmem_store"],
        )
    )
    clock_ps = 1e6 / SPEC.engine_clock_mhz
    rounds = round((dur - 4 * issue * clock_ps) / (SPEC.memory_latency_ns * 1000))
    return {
        "vgprs": vgprs,
        "sgprs": sgprs,
        "lds_bytes": k.group_segment_size,
        "wg_per_cu": occ.workgroups_per_cu,
        "limited_by": occ.limited_by[0],
        "waves_per_simd": occ.waves_per_simd,
        "wg_per_cu_16k": big.workgroups_per_cu,
        "mem_rounds_per_wave": rounds,
        "time_40_us": m.run(40)[0],
    }


def questions(m: Machine) -> list:
    t = truths(m)
    return [
        Number("vgprs", t["vgprs"], 0),
        Number("sgprs", t["sgprs"], 0),
        Number("lds_bytes", t["lds_bytes"], 0),
        Number("wg_per_cu", t["wg_per_cu"], 0),
        Choice("limited_by", LIMITS, truth=t["limited_by"]),
        Number("waves_per_simd", t["waves_per_simd"], 0, 0.01),
        Number("wg_per_cu_16k", t["wg_per_cu_16k"], 0),
        Number("mem_rounds_per_wave", t["mem_rounds_per_wave"], 0),
        Number("time_40_us", t["time_40_us"], 0.05),
    ]


def check(path: str) -> list[str]:
    """Problems found (empty when everything passes)."""
    absent = toolchain.missing()
    if absent:
        return [
            f"toolchain: the AMDGPU toolchain is not installed (missing: {', '.join(absent)}); "
            f"apt-get install -y {' '.join(absent)}"
        ]
    mod = load(path)
    with tempfile.TemporaryDirectory(prefix="lab4-") as tmp:
        blob, ref, problems = compile_both(mod, Path(tmp))
    if ref is None:
        return problems + grade(path, [])
    # Without a build of the student's, their source as the check compiled it stands in.
    m = Machine(blob if blob is not None else ref, ref)
    try:
        problems += check_registers(mod, m)
        try:
            problems += check_kernel(m)
            problems += check_launch(mod, m)
            problems += check_prediction(mod, m)
            return problems + grade(path, questions(m))
        except rocr.HsaError as e:
            # A kernel that faults or never ends (the interpreter's step limit) stops the queue.
            why = e.message.splitlines()[0]
            return problems + [f"kernel: the queue running tile_sum stopped: {why}"]
    finally:
        m.shutdown()


def main() -> int:
    path = sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).with_name("starter.py"))
    return report("lab 4", check(path), "your kernel compiled, launched by hand and timed")


if __name__ == "__main__":
    sys.exit(main())
