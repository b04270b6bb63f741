"""Lab 6 check: the barrier packets' bytes, the graph's order as the GPU ran it (completion
signal timestamps, the queue each packet retired in, the barrier packets the CP fetched), the
deadlock fixed without dropping a packet, and the answers in answers.toml.

python labs/06-barrier-packets/check.py path/to/starter.py
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import sys
from pathlib import Path

import rocr
from hw_model import aql
from hw_model.config import system_spec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _grading import Choice, grade, report  # noqa: E402

LAB = "lab6"
KEYS = {"q1_barrier_should_wait_for": "dfa9d97ee137a64d"}
STATES = ("unmapped", "mapped-idle", "mapped-running", "blocked-on-barrier", "error")
EMPTY = ("completes-at-once", "waits-forever", "queue-error")


def load(path: str):
    spec = importlib.util.spec_from_file_location("student", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def reference_barrier(kind: str, deps: list[int], completion_signal: int = 0) -> bytes:
    cls, ptype = (
        (aql.BarrierAndPacket, aql.PacketType.BARRIER_AND)
        if kind == "and"
        else (aql.BarrierOrPacket, aql.PacketType.BARRIER_OR)
    )
    return cls(
        header=aql.make_header(ptype),
        dep_signal=list(deps) + [0] * (5 - len(deps)),
        completion_signal=completion_signal,
    ).to_bytes()


ITERS = {"A": 1000, "B": 600, "C": 1600, "D": 200, "E": 200, "K1": 400, "K2": 400, "K3": 400}


class Graph:
    """The starter's Graph, the check's own copy (a student's file cannot change it)."""

    def __init__(self, rt, names="ABCDE") -> None:
        self.fma = rt.load_code_object("builtin:fma_loop").kernel("fma_loop")
        self.out = rt.gpus[0].pools()[0].allocate(4 * 256)
        self.signals = {n: rt.create_signal(1) for n in names}

    def kernel(self, queue, name: str) -> None:
        queue.dispatch(
            self.fma,
            grid=256,
            workgroup=64,
            args=(self.out, 256, ITERS[name]),
            completion_signal=self.signals[name],
        )


def machine(mod):
    rt = rocr.init(spec=system_spec("gfx900", functional=False), trace=True)
    return rt, Graph


def check_packet(mod) -> list[str]:
    problems = []
    for kind, deps, done in (
        ("and", [0x1000_0040, 0x1000_0080], 0x2000_00C0),
        ("or", [1, 2, 3, 4, 5], 0),
        ("and", [], 0x40),
    ):
        try:
            raw = mod.barrier_packet(kind, deps, done)
        except NotImplementedError as e:
            return [f"barrier_packet: not done yet ({e})"]
        want = reference_barrier(kind, deps, done)
        if bytes(raw) != want:
            bad = [i for i in range(64) if i >= len(raw) or raw[i] != want[i]]
            problems.append(
                f"barrier_packet: barrier-{kind.upper()} with {len(deps)} signals differs "
                f"from hsa.h's layout at byte {bad[0] if bad else len(want)}"
            )
    return problems


def _retired_in(rt, signal) -> int | None:
    """The KFD queue id whose CP retired the packet with this completion signal."""
    for e in rt.system.tracer.events:
        if e.name.startswith("retire ") and e.args.get("completion_signal") == hex(signal.handle):
            return int(e.track.split()[1])
    return None


def _barrier_types(rt, qid: int) -> list[int]:
    """Types of the barrier packets the CP fetched from queue `qid`."""
    types = []
    for e in rt.system.tracer.events:
        if e.track == f"queue {qid}" and e.name.startswith("fetch packet"):
            t = int(e.args["header"], 16) & 0xFF
            if t in (aql.PacketType.BARRIER_AND, aql.PacketType.BARRIER_OR):
                types.append(t)
    return types


def _times(g) -> dict[str, tuple[float, float]]:
    return {n: s.dispatch_time() for n, s in g.signals.items() if s.load() < 1}


def check_pipeline(mod) -> list[str]:
    rt, Graph = machine(mod)
    with rt:
        g = Graph(rt)
        queues = [rt.gpus[0].create_queue(64) for _ in range(4)]
        try:
            mod.pipeline(g, queues)
        except NotImplementedError as e:
            return [f"pipeline: not done yet ({e})"]
        if g.signals["A"].load() < 1:
            return [
                "pipeline: A finished before pipeline() returned; submit everything up "
                "front and let the barrier packets order the work, not host waits"
            ]
        try:
            for s in g.signals.values():
                s.wait(rocr.Condition.LT, 1)
        except rocr.HsaError as e:
            return [f"pipeline: never finishes ({e.message.splitlines()[0]})"]
        t = _times(g)
        where = {n: _retired_in(rt, s) for n, s in g.signals.items()}
        qid = [q.queue_id for q in queues]
        barriers = {i: _barrier_types(rt, qid[i]) for i in range(4)}
    problems = []
    want = {"A": 0, "B": 1, "C": 2, "D": 0, "E": 3}
    for n, i in want.items():
        if where[n] != qid[i]:
            problems.append(f"pipeline: {n} must run in queue {i}")
    (a0, a1), (b0, b1), (c0, c1), (d0, _), (e0, _) = (t[n] for n in "ABCDE")
    if b0 < a1 or c0 < a1:
        problems.append("pipeline: B and C must start after A has finished")
    if d0 < max(b1, c1):
        problems.append("pipeline: D must start after both B and C have finished")
    if e0 < min(b1, c1):
        problems.append("pipeline: E must start after B or C has finished")
    elif e0 >= max(b1, c1):
        problems.append("pipeline: E waited for both B and C; it needs only the first")
    if aql.PacketType.BARRIER_OR not in barriers[3]:
        problems.append("pipeline: queue 3 must order E with a barrier-OR packet")
    for i in (0, 1, 2):
        if aql.PacketType.BARRIER_AND not in barriers[i]:
            problems.append(f"pipeline: queue {i} must order its kernel with a barrier-AND packet")
    return problems


def _reference_deadlock(g, queues) -> None:
    q0, q1 = queues[0], queues[1]
    s = g.signals
    g.kernel(q0, "K1")
    q0.submit(reference_barrier("and", [s["K3"].handle]))
    g.kernel(q0, "K2")
    q1.submit(reference_barrier("and", [s["K2"].handle]))
    g.kernel(q1, "K3")


def check_deadlock(mod) -> list[str]:
    rt, Graph = machine(mod)
    with rt:
        g = Graph(rt, names=("K1", "K2", "K3"))
        queues = [rt.gpus[0].create_queue(64) for _ in range(2)]
        try:
            mod.scenario_deadlock(g, queues)
        except NotImplementedError as e:
            return [f"scenario_deadlock: needs barrier_packet ({e})"]
        try:
            for n in ("K1", "K2", "K3"):
                g.signals[n].wait(rocr.Condition.LT, 1)
        except rocr.HsaError as e:
            return [f"scenario_deadlock: still deadlocked ({e.message.splitlines()[0]})"]
        t = _times(g)
        written = [q.load_write_index() for q in queues]
        barriers = [_barrier_types(rt, q.queue_id) for q in queues[:2]]
    problems = []
    if written != [3, 2] or not all(barriers):
        problems.append(
            "scenario_deadlock: keep every packet (queue 0: K1, a barrier-AND, K2; "
            "queue 1: a barrier-AND, K3)"
        )
    if t["K3"][0] < t["K1"][1]:
        problems.append("scenario_deadlock: K3 started before K1 finished")
    if t["K2"][0] < t["K3"][1]:
        problems.append("scenario_deadlock: K2 started before K3 finished")
    return problems


def truths(mod) -> dict:
    out = {}
    rt, Graph = machine(mod)
    with rt:
        g = Graph(rt)
        q = [rt.gpus[0].create_queue(64) for _ in range(4)]
        s = g.signals
        g.kernel(q[0], "A")
        for i, n in ((1, "B"), (2, "C")):
            q[i].submit(reference_barrier("and", [s["A"].handle]))
            g.kernel(q[i], n)
        q[0].submit(reference_barrier("and", [s["B"].handle, s["C"].handle]))
        g.kernel(q[0], "D")
        q[3].submit(reference_barrier("or", [s["B"].handle, s["C"].handle]))
        g.kernel(q[3], "E")
        for sig in s.values():
            sig.wait(rocr.Condition.LT, 1)
        t = _times(g)
    for n in ("D", "E"):
        ends = {m: t[m][1] for m in "ABC" if t[m][1] <= t[n][0]}
        out[f"{n.lower()}_started_after"] = max(ends, key=ends.get)
    rt, Graph = machine(mod)
    with rt:
        g = Graph(rt, names=("K1", "K2", "K3"))
        queues = [rt.gpus[0].create_queue(64) for _ in range(2)]
        _reference_deadlock(g, queues)
        with contextlib.suppress(rocr.HsaError):  # it deadlocks: that is the point
            g.signals["K2"].wait(rocr.Condition.LT, 1)
        procs = json.loads(rt.thunk.read_debugfs("mqds"))
        out["deadlock_state"] = procs[0]["queues"][1]["hw"]["state"]
        out["retired_before_deadlock"] = sum(s.load() < 1 for s in g.signals.values())
        q = rt.gpus[0].create_queue(64)
        done = rt.create_signal(1)
        q.submit(reference_barrier("and", [], done.handle))
        v = done.wait(rocr.Condition.LT, 1, timeout_ns=1_000_000)
        out["empty_barrier"] = EMPTY[0] if v < 1 else EMPTY[2 if q.error else 1]
    return out


def questions(mod) -> list:
    t = truths(mod)
    names = ("A", "B", "C", "D", "E")
    return [
        Choice("d_started_after", names, truth=t["d_started_after"]),
        Choice("e_started_after", names, truth=t["e_started_after"]),
        Choice("deadlock_queue1_state", STATES, truth=t["deadlock_state"]),
        Choice(
            "retired_before_deadlock", ("0", "1", "2", "3"), truth=str(t["retired_before_deadlock"])
        ),
        Choice(
            "q1_barrier_should_wait_for",
            ("K1", "K2", "K3"),
            key=KEYS["q1_barrier_should_wait_for"],
            lab=LAB,
        ),
        Choice("empty_barrier", EMPTY, truth=t["empty_barrier"]),
    ]


def check(path: str) -> list[str]:
    mod = load(path)
    problems = check_packet(mod)
    if not problems:
        problems += check_pipeline(mod) + check_deadlock(mod)
    return problems + grade(path, questions(mod))


def main() -> int:
    path = sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).with_name("starter.py"))
    return report("lab 6", check(path), "the graph runs in order and the deadlock is gone")


if __name__ == "__main__":
    sys.exit(main())
