"""Lab 2 check: every scenario of the student's file must complete — launched, run and retired
by the GPU, as the machine's own records show — and the answers in answers.toml must be right.

python labs/02-stuck-wait/check.py path/to/starter.py
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

import rocr
from hw_model import aql

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _grading import Choice, Number, grade, report  # noqa: E402

LAB = "lab2"
# Packets each scenario writes into its queue: a kernel, a kernel, a barrier and a kernel.
PACKETS = {"scenario_doorbell": 1, "scenario_header": 1, "scenario_barrier": 2}
# Fixed answers, as salted digests (labs/_grading.py digest): the values are in docs/teaching.md.
KEYS = {
    "header_byte": "6abc9d741131d7f0",
    "barrier_fixer": "f4c1866cb2386dbc",
    "real_gpu_doorbell": "db145996bb6bcbb8",
    "real_gpu_header": "ae094e9b7b09d3c9",
    "real_gpu_barrier": "a434016deeb1c567",
}
REAL_GPU = ("hang", "memory-fault", "queue-error", "wrong-result")


def _verify(rt, name: str, done, dst, n: int) -> list[str]:
    """What the machine recorded: the scenario's one queue retired every packet written into
    it, one of them the kernel whose workgroups ran on the CUs, and the CP wrote 0 into the
    completion signal when that packet retired."""
    queues = rt.queues()
    if len(queues) != 1:
        return [f"{name}: fix the scenario in its own queue ({len(queues)} queues now)"]
    q = queues[0]
    problems = []
    written, retired = q.load_write_index(), q.load_read_index()
    if written != PACKETS.get(name, written):
        problems.append(
            f"{name}: {written} packets in the queue, the scenario wrote {PACKETS[name]}"
        )
    if retired != written:
        problems.append(f"{name}: read_dispatch_id {retired} < write index {written}")
    events = rt.system.tracer.events
    retire = [
        e
        for e in events
        if e.track == f"queue {q.queue_id}"
        and e.name.startswith("retire ")
        and e.args.get("completion_signal") == hex(done.handle)
    ]
    cp_wrote = any(
        e.name == "completion signal"
        and e.args.get("signal") == hex(done.handle)
        and e.args.get("new") == 0
        for e in events
    )
    if not retire or not cp_wrote:
        problems.append(f"{name}: the CP never retired a packet with this completion signal")
        return problems
    index = int(retire[-1].name.split()[1])
    rec = [
        r
        for r in rt.system.gpus[0].kernel_records
        if r["queue_id"] == q.queue_id and r["dispatch_id"] == index
    ]
    wgs = [
        e
        for e in events
        if e.cat == "wg"
        and e.args.get("queue") == q.queue_id
        and e.args.get("dispatch_id") == index
    ]
    if not rec or rec[-1]["name"] != "square" or rec[-1]["grid"] != (n, 1, 1):
        problems.append(f"{name}: packet {index} did not launch square over {n} work-items")
    elif len(wgs) != -(-n // rec[-1]["workgroup"][0]):
        problems.append(f"{name}: only {len(wgs)} workgroups of packet {index} ran on the CUs")
    if not np.array_equal(dst.view(np.float32), np.arange(n, dtype=np.float32) ** 2):
        problems.append(f"{name}: completes, but the result is wrong")
    return problems


def truths() -> dict:
    """Measured on the machine: the header the CP found, the barrier's dependency value."""
    with rocr.init(preset="teaching", trace=True) as rt:
        gpu = rt.gpus[0]
        k = rt.load_code_object("builtin:empty").kernel("empty")
        q = gpu.create_queue(64)
        done = rt.create_signal(1)
        raw = rt.dispatch_packet(k, grid=64, workgroup=64, completion_signal=done).to_bytes()
        i = q.add_write_index(1)
        q.write_packet(i, bytes([aql.PacketType.INVALID, 0]) + raw[2:])
        q.ring_doorbell(i)
        done.wait(rocr.Condition.LT, 1, timeout_ns=20_000)
        header_type = q.packet_bytes(i)[0]
        stalled = [e.name for e in rt.system.tracer.events if e.track == f"queue {q.queue_id}"]
    with rocr.init(preset="teaching", trace=True) as rt:
        q = rt.gpus[0].create_queue(64)
        ready = rt.create_signal(1)
        q.submit(
            aql.BarrierAndPacket(
                header=aql.make_header(aql.PacketType.BARRIER_AND),
                dep_signal=[ready.handle, 0, 0, 0, 0],
            )
        )
        ready.wait(rocr.Condition.LT, 1, timeout_ns=20_000)
        blocked = q.packet(q.load_read_index()).dep_signal[0]
        dep_value = rt.signal(blocked).load()
    return {"header_type": header_type, "header_event": stalled[-1], "dep_value": dep_value}


def questions() -> list:
    t = truths()
    qs: list = [
        Number("header_type_seen", t["header_type"], 0),
        Choice(
            "header_cause_event",
            ("doorbell", "fetch packet 0", "stall: header INVALID", "retire 0"),
            truth=t["header_event"],
        ),
        Number("barrier_dep_value", t["dep_value"], 0),
        Choice("header_byte", ("0", "1", "2", "4", "56"), key=KEYS["header_byte"], lab=LAB),
        Choice(
            "barrier_fixer",
            ("host", "gpu", "cp", "kfd"),
            key=KEYS["barrier_fixer"],
            lab=LAB,
        ),
    ]
    for s in ("doorbell", "header", "barrier"):
        name = f"real_gpu_{s}"
        qs.append(Choice(name, REAL_GPU, key=KEYS[name], lab=LAB))
    return qs


def check(path: str) -> list[str]:
    spec = importlib.util.spec_from_file_location("student", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    problems = []
    for scenario in mod.SCENARIOS:
        with rocr.init(preset="teaching", trace=True) as rt:
            try:
                done, dst = scenario(rt)
                done.wait(rocr.Condition.LT, 1)
            except rocr.HsaError as e:
                first = e.message.splitlines()[0].strip()
                problems.append(f"{scenario.__name__}: still stuck ({first})")
                continue
            problems += _verify(rt, scenario.__name__, done, dst, mod.N)
    return problems + grade(path, questions())


def main() -> int:
    path = sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).with_name("starter.py"))
    return report("lab 2", check(path), "every launch completes, run and retired by the GPU")


if __name__ == "__main__":
    sys.exit(main())
