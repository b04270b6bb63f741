"""Lab 1 check: grades build_packet() and launch() from a student's file.

python labs/01-hand-launch/check.py path/to/starter.py
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

import rocr
from hw_model import aql


def load(path: str):
    spec = importlib.util.spec_from_file_location("student", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def check(path: str) -> list[str]:
    """Problems found (empty when everything passes)."""
    mod = load(path)
    problems: list[str] = []
    try:
        raw = mod.build_packet(0x1000_0000, 0x2000_0000, 0x3000_0040, 10_000, 256)
    except NotImplementedError as e:
        return [f"build_packet: not done yet ({e})"]
    expect = aql.KernelDispatchPacket(
        header=aql.make_header(aql.PacketType.KERNEL_DISPATCH),
        setup=1,
        workgroup_size_x=256,
        workgroup_size_y=1,
        workgroup_size_z=1,
        grid_size_x=10_000,
        grid_size_y=1,
        grid_size_z=1,
        kernel_object=0x1000_0000,
        kernarg_address=0x2000_0000,
        completion_signal=0x3000_0040,
    ).to_bytes()
    if len(raw) != 64:
        problems.append(f"build_packet: an AQL packet is 64 bytes, yours has {len(raw)}")
    elif raw != expect:
        got = aql.KernelDispatchPacket.from_bytes(raw)
        want = aql.KernelDispatchPacket.from_bytes(expect)
        for name in aql.KernelDispatchPacket.FIELD_OFFSETS:
            if getattr(got, name) != getattr(want, name):
                problems.append(
                    f"build_packet: {name} is {getattr(got, name)!r}, "
                    f"expected {getattr(want, name)!r} (offset "
                    f"{aql.KernelDispatchPacket.FIELD_OFFSETS[name]})"
                )
    if problems:
        return problems
    n = 3000
    with rocr.init(preset="teaching") as rt:
        gpu = rt.gpus[0]
        pool = rt.cpu.pools(fine_grained=True, kernarg=False)[0]
        src, dst = pool.allocate(4 * n), pool.allocate(4 * n)
        for b in (src, dst):
            rt.allow_access([gpu], b)
        src.view(np.float32)[:] = np.arange(n, dtype=np.float32)
        k = rt.load_code_object("builtin:square").kernel("square")
        ka = rt.cpu.pools(kernarg=True)[0].allocate(k.kernarg_size)
        rt.allow_access([gpu], ka)
        ka.write(k.pack_args(dst, src, n))
        q = gpu.create_queue(64)
        done = rt.create_signal(1)
        try:
            i = mod.launch(q, mod.build_packet(k.kernel_object, ka.address, done.handle, n, 64))
        except NotImplementedError as e:
            return [f"launch: not done yet ({e})"]
        if q.load_write_index() != 1:
            problems.append("launch: reserve exactly one slot with queue.add_write_index(1)")
        if q.doorbell_value != i:
            problems.append(
                f"launch: ring the doorbell with the packet index {i}, not {q.doorbell_value}"
            )
        try:
            done.wait(rocr.Condition.LT, 1)
        except rocr.HsaError as e:
            return problems + [f"launch: the kernel never completed:\n{e.message}"]
        if not np.array_equal(dst.view(np.float32), np.arange(n, dtype=np.float32) ** 2):
            problems.append("launch: the kernel ran but the result is wrong")
    return problems


def main() -> int:
    path = sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).with_name("starter.py"))
    problems = check(path)
    for p in problems:
        print(f"FAIL {p}")
    if not problems:
        print("PASS lab 1: your packet launched square and the result is correct")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
