"""Lab 1 check: grades build_packet(), launch() and the task C publishers from a student's file,
from what the machine recorded (the packet the CP retired, the workgroups that ran on the CUs,
the completion signal the CP wrote), and the numbers in answers.toml.

python labs/01-hand-launch/check.py path/to/starter.py
"""

from __future__ import annotations

import importlib.util
import struct
import sys
from pathlib import Path

import numpy as np

import rocr
from hw_model import aql

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _grading import Choice, Number, grade, report  # noqa: E402


def load(path: str):
    spec = importlib.util.spec_from_file_location("student", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _setup(rt, n: int):
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
    return gpu, k, ka, dst, src


def _packet(k, ka, signal, n: int, wg: int) -> bytes:
    return aql.KernelDispatchPacket(
        header=aql.make_header(aql.PacketType.KERNEL_DISPATCH),
        setup=1,
        workgroup_size_x=wg,
        workgroup_size_y=1,
        workgroup_size_z=1,
        grid_size_x=n,
        grid_size_y=1,
        grid_size_z=1,
        kernel_object=k.kernel_object,
        kernarg_address=ka.address,
        completion_signal=signal.handle,
    ).to_bytes()


def _launched(rt, queue, index: int) -> dict | None:
    """The kernel the CP launched for packet `index` of `queue` (the GPU's kernel records)."""
    for r in reversed(rt.system.gpus[0].kernel_records):
        if r["queue_id"] == queue.queue_id and r["dispatch_id"] == index:
            return r
    return None


def _workgroups(events, queue, index: int) -> list:
    return [
        e
        for e in events
        if e.cat == "wg"
        and e.args.get("queue") == queue.queue_id
        and e.args.get("dispatch_id") == index
    ]


def _cp_completed(events, signal) -> bool:
    """The CP (not the host) decremented `signal` to 0 when a packet retired."""
    return any(
        e.name == "completion signal"
        and e.args.get("signal") == hex(signal.handle)
        and e.args.get("new") == 0
        for e in events
    )


def _race(publish) -> dict:
    """Packet 64 published by `publish` into slot 0 of a 64-packet ring whose packet 0 was an
    older launch (square over 256 floats), the doorbell rung before the packet is written."""
    n = 1024
    with rocr.init(preset="teaching", trace=True) as rt:
        gpu, k, ka, dst, src = _setup(rt, n)
        q = gpu.create_queue(64)
        old, drained = rt.create_signal(1), rt.create_signal(1)
        old_ka = rt.cpu.pools(kernarg=True)[0].allocate(k.kernarg_size)
        rt.allow_access([gpu], old_ka)
        old_ka.write(k.pack_args(dst, src, 256))
        q.write_packet(q.add_write_index(1), _packet(k, old_ka, old, 256, 64))
        nop = bytes([aql.PacketType.BARRIER_AND, 0]) + bytes(62)
        for _ in range(62):
            q.write_packet(q.add_write_index(1), nop)
        q.write_packet(q.add_write_index(1), nop[:56] + struct.pack("<Q", drained.handle))
        q.ring_doorbell(63)
        drained.wait(rocr.Condition.LT, 1)
        done = rt.create_signal(1)
        mark = rt.system.tracer.events.total
        i = q.add_write_index(1)
        q.ring_doorbell(i)
        publish(q, i, _packet(k, ka, done, n, 256))
        done.wait(rocr.Condition.LT, 1, timeout_ns=100_000)
        rec = _launched(rt, q, i)
        events = rt.system.tracer.events.since(mark)
        return {
            "grid": None if rec is None else rec["grid"][0],
            "done": done.load(),
            "old": old.load(),
            "stalled": any(e.name == "stall: header INVALID" for e in events),
            "correct": bool(np.array_equal(dst.view(np.float32), np.arange(n) ** 2)),
            "header_after": q.packet_bytes(i)[0] if rec is not None else None,
        }


def _reference_header_first(q, i: int, raw: bytes) -> None:
    q._ring.mapping.write(q._slot(i), raw[:4])
    q.rt.thunk.host_elapse(5_000_000)
    q._ring.mapping.write(q._slot(i) + 4, raw[4:])


def truths() -> dict:
    """The answers, measured on the machine: the starter's launch (10,000 floats, workgroups
    of 256) published correctly, and the header race."""
    n = 10_000
    with rocr.init(preset="teaching", trace=True) as rt:
        gpu, k, ka, dst, src = _setup(rt, n)
        q = gpu.create_queue(64)
        done = rt.create_signal(1)
        mark = rt.system.tracer.events.total
        q.submit(_packet(k, ka, done, n, 256))
        done.wait(rocr.Condition.LT, 1)
        events = rt.system.tracer.events.since(mark)
        bell = min(e.ts for e in events if e.name == "doorbell")
        first = min(e.ts for e in events if e.cat == "wg")
        launch = next(e for e in events if e.name == "launch square")
        header = aql.PacketType(q.packet_bytes(0)[0]).name
    race = _race(_reference_header_first)
    return {
        "doorbell_to_first_workgroup_us": (first - bell) / 1e6,
        "workgroups": launch.args["workgroups"],
        "waves_per_workgroup": launch.args["waves_per_wg"],
        "slot_header_after_retire": header,
        "race_launched_grid": race["grid"],
        "race_old_signal": race["old"],
    }


def questions() -> list:
    t = truths()
    return [
        Number("doorbell_to_first_workgroup_us", t["doorbell_to_first_workgroup_us"], 0.05, 0.05),
        Number("workgroups", t["workgroups"], 0),
        Number("waves_per_workgroup", t["waves_per_workgroup"], 0),
        Choice(
            "slot_header_after_retire",
            ("KERNEL_DISPATCH", "INVALID", "BARRIER_AND", "VENDOR_SPECIFIC"),
            truth=t["slot_header_after_retire"],
        ),
        Number("race_launched_grid", t["race_launched_grid"], 0),
        Number("race_old_signal", t["race_old_signal"], 0),
    ]


def check_packet(mod) -> list[str]:
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
        return [f"build_packet: an AQL packet is 64 bytes, yours has {len(raw)}"]
    problems = []
    if raw != expect:
        got = aql.KernelDispatchPacket.from_bytes(raw)
        want = aql.KernelDispatchPacket.from_bytes(expect)
        for name in aql.KernelDispatchPacket.FIELD_OFFSETS:
            if getattr(got, name) != getattr(want, name):
                problems.append(
                    f"build_packet: {name} is {getattr(got, name)!r}, "
                    f"expected {getattr(want, name)!r} (offset "
                    f"{aql.KernelDispatchPacket.FIELD_OFFSETS[name]})"
                )
    return problems


def check_launch(mod) -> list[str]:
    n, wg = 3000, 64
    problems = []
    with rocr.init(preset="teaching", trace=True) as rt:
        gpu, k, ka, dst, src = _setup(rt, n)
        q = gpu.create_queue(64)
        done = rt.create_signal(1)
        mark = rt.system.tracer.events.total
        try:
            i = mod.launch(q, mod.build_packet(k.kernel_object, ka.address, done.handle, n, wg))
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
        events = rt.system.tracer.events.since(mark)
        rec = _launched(rt, q, i)
        wgs = _workgroups(events, q, i)
        want_wgs = -(-n // wg)
        if rec is None or rec["grid"] != (n, 1, 1) or rec["workgroup"] != (wg, 1, 1):
            problems.append(f"launch: the CP launched no packet {i} of grid {n}, workgroup {wg}")
        if len(wgs) != want_wgs:
            problems.append(
                f"launch: {len(wgs)} workgroups of packet {i} ran on the CUs, not {want_wgs}"
            )
        if q.load_read_index() != i + 1:
            problems.append(f"launch: read_dispatch_id is {q.load_read_index()}, not {i + 1}")
        if not _cp_completed(events, done):
            problems.append("launch: the CP never decremented the completion signal")
        if not np.array_equal(dst.view(np.float32), np.arange(n, dtype=np.float32) ** 2):
            problems.append("launch: the kernel ran but the result is wrong")
    return problems


def check_race(mod) -> list[str]:
    problems = []
    try:
        bad = _race(mod.publish_header_first)
    except NotImplementedError as e:
        problems.append(f"publish_header_first: not done yet ({e})")
    else:
        if bad["grid"] is None:
            problems.append("publish_header_first: the CP launched nothing for the new packet")
        elif bad["grid"] == 1024 or bad["done"] == 0:
            problems.append(
                "publish_header_first: the CP launched the packet you meant; store the header "
                "before the body, and be preempted between the two stores"
            )
    try:
        good = _race(mod.publish_body_first)
    except NotImplementedError as e:
        problems.append(f"publish_body_first: not done yet ({e})")
    else:
        if good["grid"] != 1024 or good["done"] != 0 or not good["correct"]:
            problems.append("publish_body_first: the CP did not launch the packet you meant")
        elif not good["stalled"]:
            problems.append(
                "publish_body_first: the CP never saw the slot unpublished; keep the "
                "preemption between the two stores, so the order is what protects the packet"
            )
    return problems


def check(path: str) -> list[str]:
    """Problems found (empty when everything passes)."""
    mod = load(path)
    problems = check_packet(mod)
    if not problems:
        problems += check_launch(mod)
    problems += check_race(mod)
    return problems + grade(path, questions())


def main() -> int:
    path = sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).with_name("starter.py"))
    return report("lab 1", check(path), "your packet launched, raced and retired as it should")


if __name__ == "__main__":
    sys.exit(main())
