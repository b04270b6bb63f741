"""Lab 6 reference solution."""

from __future__ import annotations

import importlib.util
import struct
import sys
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "lab6_starter", Path(__file__).with_name("starter.py")
)
starter = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(starter)
Graph, machine = starter.Graph, starter.machine


def barrier_packet(kind: str, deps: list[int], completion_signal: int = 0) -> bytes:
    ptype = {"and": starter.HSA_PACKET_TYPE_BARRIER_AND, "or": starter.HSA_PACKET_TYPE_BARRIER_OR}
    scope = starter.HSA_FENCE_SCOPE_SYSTEM
    header = ptype[kind] | scope << 9 | scope << 11
    dep = list(deps) + [0] * (5 - len(deps))
    return struct.pack("<HHI5QQQ", header, 0, 0, *dep, 0, completion_signal)


def pipeline(g, queues) -> None:
    q0, q1, q2, q3 = queues
    s = g.signals
    g.kernel(q0, "A")
    q1.submit(barrier_packet("and", [s["A"].handle]))
    g.kernel(q1, "B")
    q2.submit(barrier_packet("and", [s["A"].handle]))
    g.kernel(q2, "C")
    q0.submit(barrier_packet("and", [s["B"].handle, s["C"].handle]))
    g.kernel(q0, "D")
    q3.submit(barrier_packet("or", [s["B"].handle, s["C"].handle]))
    g.kernel(q3, "E")


def scenario_deadlock(g, queues) -> None:
    q0, q1 = queues[0], queues[1]
    s = g.signals
    g.kernel(q0, "K1")
    q0.submit(barrier_packet("and", [s["K3"].handle]))
    g.kernel(q0, "K2")
    # The bug: K3 waited for K2, which waits (behind queue 0's barrier) for K3. K3 reads K1.
    q1.submit(barrier_packet("and", [s["K1"].handle]))
    g.kernel(q1, "K3")


if __name__ == "__main__":
    starter.barrier_packet, starter.pipeline = barrier_packet, pipeline
    starter.scenario_deadlock = scenario_deadlock
    sys.exit(starter.main(sys.argv[1:]))
