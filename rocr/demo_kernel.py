"""`hsaemu demo --kernel k.cl`: your own kernel through the whole launch flow.

Compiles OpenCL C with the packaged toolchain (rocr.toolchain), loads the code object as
ROCr's loader does, reads back the kernel descriptor the compiler wrote (LLVM AMDGPUUsage,
"Kernel Descriptor"), says what initial state the CP/SPI will give each wave, disassembles
the first instructions, then launches it over buffers it makes up from the argument
metadata and reports what the gfx9 interpreter executed and how long the kernel took.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import rocr
from hw_model import structs as st
from rocr import toolchain

# OpenCL C element types by the metadata's `.type_name` (pointee of a global pointer).
_NUMPY = {
    "float": np.float32,
    "double": np.float64,
    "half": np.float16,
    "int": np.int32,
    "uint": np.uint32,
    "unsigned int": np.uint32,
    "long": np.int64,
    "ulong": np.uint64,
    "unsigned long": np.uint64,
    "short": np.int16,
    "ushort": np.uint16,
    "char": np.int8,
    "uchar": np.uint8,
}

# The user SGPRs in the order the SPI loads them (AMDGPUUsage, "Initial Kernel Execution
# State"): (kernel_code_properties bit, name, SGPRs).
_USER_SGPRS = (
    (st.KERNEL_CODE_PROPERTY_ENABLE_SGPR_PRIVATE_SEGMENT_BUFFER, "private segment buffer V#", 4),
    (st.KERNEL_CODE_PROPERTY_ENABLE_SGPR_DISPATCH_PTR, "dispatch packet pointer", 2),
    (st.KERNEL_CODE_PROPERTY_ENABLE_SGPR_QUEUE_PTR, "queue pointer (amd_queue_t)", 2),
    (st.KERNEL_CODE_PROPERTY_ENABLE_SGPR_KERNARG_SEGMENT_PTR, "kernarg segment pointer", 2),
    (st.KERNEL_CODE_PROPERTY_ENABLE_SGPR_DISPATCH_ID, "dispatch id", 2),
    (st.KERNEL_CODE_PROPERTY_ENABLE_SGPR_FLAT_SCRATCH_INIT, "flat scratch init", 2),
    (st.KERNEL_CODE_PROPERTY_ENABLE_SGPR_PRIVATE_SEGMENT_SIZE, "private segment size", 1),
)
_SYSTEM_SGPRS = (
    (st.COMPUTE_PGM_RSRC2_ENABLE_SGPR_WORKGROUP_ID_X, "workgroup id X"),
    (st.COMPUTE_PGM_RSRC2_ENABLE_SGPR_WORKGROUP_ID_Y, "workgroup id Y"),
    (st.COMPUTE_PGM_RSRC2_ENABLE_SGPR_WORKGROUP_ID_Z, "workgroup id Z"),
    (st.COMPUTE_PGM_RSRC2_ENABLE_SGPR_WORKGROUP_INFO, "workgroup info"),
)


def element_type(type_name: str | None) -> type | None:
    """numpy type of a global pointer's pointee ("float*" -> float32), None if unknown."""
    if not type_name:
        return None
    t = type_name.replace("__global", "").replace("const", "").replace("*", "").strip()
    return _NUMPY.get(t)


def initial_state(kd: st.KernelDescriptor, packed_tid: bool) -> list[str]:
    """What the SPI puts in each wave's registers before its first instruction, in words."""
    lines = []
    s = 0
    for bit, name, count in _USER_SGPRS:
        if bit.get(kd.kernel_code_properties):
            regs = f"s{s}" if count == 1 else f"s[{s}:{s + count - 1}]"
            lines.append(f"{regs:<9} {name}")
            s += count
    user = st.COMPUTE_PGM_RSRC2_USER_SGPR_COUNT.get(kd.compute_pgm_rsrc2)
    s = max(s, user)
    for bit, name in _SYSTEM_SGPRS:
        if bit.get(kd.compute_pgm_rsrc2):
            lines.append(f"{'s' + str(s):<9} {name}")
            s += 1
    if st.COMPUTE_PGM_RSRC2_ENABLE_PRIVATE_SEGMENT.get(kd.compute_pgm_rsrc2):
        lines.append(f"{'s' + str(s):<9} private segment wave offset")
    dims = st.COMPUTE_PGM_RSRC2_ENABLE_VGPR_WORKITEM_ID.get(kd.compute_pgm_rsrc2) + 1
    if packed_tid:
        lines.append("v0        work-item id x | y << 10 | z << 20 (packed, gfx90a and later)")
    else:
        lines.append(
            ", ".join(f"v{i}" for i in range(dims)).ljust(9)
            + " work-item id "
            + ", ".join("xyz"[:dims])
        )
    lines.append("EXEC      the lanes whose work-items exist (a partial wave has fewer)")
    return lines


def run(args: argparse.Namespace, narrator_cls, cli_error: type[Exception]) -> int:
    """The --kernel demo. `narrator_cls`: the CLI's Narrator (trace events, layer by layer);
    `cli_error`: its one-line usage error."""
    from hw_model.config import PRESETS
    from hw_model.isa.decoder import DecodeError, decode
    from hw_model.isa.disasm import format_instruction

    CliError = cli_error  # noqa: N806 (the CLI's class, by its name)

    path = Path(args.kernel)
    if not path.is_file():
        raise CliError(f"--kernel {args.kernel}: no such file (an OpenCL C .cl or a .hsaco)")
    spec = PRESETS[args.preset]
    wall = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hsaemu-kernel-") as tmp:
        if path.suffix == ".cl":
            out = Path(tmp) / (path.stem + ".hsaco")
            try:
                cmds = toolchain.compile_cl(path, out, mcpu=spec.name)
            except toolchain.ToolchainError as e:
                first, _, rest = str(e).partition("\n")
                if rest:  # the compiler's own diagnostics, as it printed them
                    print(rest, file=sys.stderr)
                    first = first.rstrip(":") + " (its messages above)"
                raise CliError(f"--kernel {args.kernel}: {first}") from None
            print(f"== 0. compile for {spec.name}")
            for c in cmds:
                print("  " + " ".join(Path(a).name if a.startswith(tmp) else a for a in c))
            blob = out.read_bytes()
        else:
            blob = path.read_bytes()
    rt = rocr.init(preset=args.preset, trace=True)  # the narration reads the trace
    nar = narrator_cls(rt.system)
    gpu = rt.gpus[0]
    try:
        exe = rt.load_code_object(blob)
    except rocr.HsaError as e:
        rt.shutdown()
        raise CliError(f"--kernel {args.kernel}: {e.status.name}: {e.message}") from None
    names = sorted(exe.symbols)
    name = args.name or names[0]
    if name not in exe.symbols:
        rt.shutdown()
        raise CliError(f"--name {name}: the code object has kernels {', '.join(names)}")
    k = exe.kernel(name)
    info = k.code
    kd = info.kd
    nar.step(f"1. load: {len(blob)} bytes, kernels {', '.join(names)}; the demo runs {name}")
    nar.say(f"  {k.signature}")
    nar.say(f"  kernel descriptor (64 bytes at {k.kernel_object:#x}), as the compiler wrote it:")
    vgprs = st.decode_vgpr_count(kd.compute_pgm_rsrc1, spec.vgpr_alloc_granule)
    sgprs = st.decode_sgpr_count(kd.compute_pgm_rsrc1)
    entry = k.kernel_object + kd.kernel_code_entry_byte_offset
    nar.say(f"    group_segment_fixed_size      {kd.group_segment_fixed_size} bytes of LDS")
    nar.say(f"    private_segment_fixed_size    {kd.private_segment_fixed_size} bytes/work-item")
    nar.say(f"    kernarg_size                  {kd.kernarg_size}")
    nar.say(
        f"    kernel_code_entry_byte_offset {kd.kernel_code_entry_byte_offset} -> code at "
        f"{entry:#x}"
    )
    r1, r2 = kd.compute_pgm_rsrc1, kd.compute_pgm_rsrc2
    denorm = st.FloatDenormMode(st.COMPUTE_PGM_RSRC1_FLOAT_DENORM_MODE_32.get(r1)).name
    nar.say(
        f"    COMPUTE_PGM_RSRC1 {r1:#010x}: {vgprs} VGPRs, {sgprs} SGPRs allocated, "
        f"f32 denormals {denorm}"
        f", IEEE mode {st.COMPUTE_PGM_RSRC1_GFX6_GFX11_ENABLE_IEEE_MODE.get(r1)}"
    )
    nar.say(
        f"    COMPUTE_PGM_RSRC2 {r2:#010x}: {st.COMPUTE_PGM_RSRC2_USER_SGPR_COUNT.get(r2)} user "
        f"SGPRs, scratch {'on' if st.COMPUTE_PGM_RSRC2_ENABLE_PRIVATE_SEGMENT.get(r2) else 'off'}"
    )
    nar.say(f"    kernel_code_properties {kd.kernel_code_properties:#06x}")
    nar.step("2. initial wave state (what the SPI loads before the first instruction)")
    for line in initial_state(kd, packed_tid=spec.name != "gfx900"):
        nar.say("  " + line)

    co = exe.code_object
    code = co.read_va(info.code_vaddr, info.code_size) if co is not None else b""
    nar.step(f"3. the first instructions of a wave ({info.code_size} bytes of code)")
    try:
        listing = decode(code, co.processor if co is not None else spec.name, entry)
    except (DecodeError, ValueError) as e:
        listing = []
        nar.say(f"  cannot decode: {e}")
    for ins in listing[: args.instructions]:
        nar.say(f"  {ins.pc:#x}  {format_instruction(ins, co.processor if co else spec.name):<50} "
                + "// " + " ".join(f"{w:08X}" for w in ins.words))  # fmt: skip
    if len(listing) > args.instructions:
        nar.say(f"  ... {len(listing) - args.instructions} more (hsaemu kernels FILE --disasm)")

    n = args.n
    pool = rt.cpu.pools(fine_grained=True, kernarg=False)[0]
    values: list = []
    arrays: list[tuple[str, np.ndarray, object]] = []
    for a in k.args:
        if a.type == "ptr":
            t = element_type(getattr(a, "type_name", None)) or np.uint32
            buf = pool.allocate(max(n * np.dtype(t).itemsize, 4))
            rt.allow_access([gpu], buf)
            view = buf.view(t, n)
            view[:] = np.arange(n).astype(t)
            arrays.append((a.name, view.copy(), buf))
            values.append(buf)
        elif a.type in ("f32", "f64", "f16"):
            values.append(2.0)
        elif a.type == "bytes":
            values.append(bytes(a.size))
        else:
            values.append(n)
    wg = min(args.workgroup, info.max_flat_workgroup_size, spec.max_workgroup_size)
    q = gpu.create_queue(64)
    nar.step(
        f"4. dispatch over {n} work-items, workgroups of {wg}: each pointer argument gets "
        f"{n} elements 0, 1, 2, ...; numbers get {n} (ints) or 2.0 (floats)"
    )
    h = q.dispatch(k, n, wg, tuple(values))
    try:
        h.wait()
    except rocr.HsaError as e:
        nar.flush()
        nar.say(f"\n  the queue stopped: {e.status.name}: {e.message}")
        rt.shutdown()
        return 1
    nar.flush()
    records = list(rt.system.gpus[0].kernel_records)
    rec = records[-1] if records else {}
    start, end = h.dispatch_time()
    nar.step("5. what the interpreter executed")
    stats = rec.get("execution")
    if stats:
        inst = stats.get("instructions", {})
        nar.say(
            f"  {stats.get('waves', 0)} waves, {stats.get('issues', 0)} instruction issues, "
            f"{stats.get('lane_instructions', 0)} lane-instructions, "
            f"{stats.get('mem_rounds', 0)} waits on memory (s_waitcnt)"
        )
        if inst:
            nar.say("  by class: " + ", ".join(f"{c} {v}" for c, v in inst.items() if v))
    if end > start:
        nar.say(f"  kernel time {(end - start) / 1000:.3f} us of simulated time")
    for aname, before, buf in arrays:
        after = buf.view(before.dtype, n)
        changed = int(np.count_nonzero(after != before))
        nar.say(
            f"  {aname}: {changed} of {n} elements changed; first 8: "
            + ", ".join(f"{v:g}" if before.dtype.kind == "f" else str(v) for v in after[:8])
        )
    rt.shutdown()
    nar.say(f"wall time {time.perf_counter() - wall:.2f} s")
    return 0
