"""Lab 2 reference solution: the starter's scenarios, each fixed with the smallest change."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_spec = importlib.util.spec_from_file_location("starter", Path(__file__).with_name("starter.py"))
starter = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(starter)
N = starter.N


def scenario_doorbell(rt):
    done, dst = starter.scenario_doorbell(rt)
    q = rt.queues()[-1]
    q.ring_doorbell(q.load_write_index() - 1)  # the missing doorbell
    return done, dst


def scenario_header(rt):
    done, dst = starter.scenario_header(rt)
    q = rt.queues()[-1]
    i = q.load_read_index()
    raw = bytearray(q.packet_bytes(i))
    raw[0:2] = starter.aql.make_header(starter.aql.PacketType.KERNEL_DISPATCH).to_bytes(2, "little")
    q.write_packet(i, bytes(raw))  # publish the header, last: the stalled CP sees the store
    return done, dst


def scenario_barrier(rt):
    done, dst = starter.scenario_barrier(rt)
    q = rt.queues()[-1]
    dep = q.packet(q.load_read_index()).dep_signal[0]  # what the barrier waits for
    ready = rt.signal(dep)
    ready.store(0)  # "input ready": the barrier-AND's dependency reaches 0
    return done, dst


SCENARIOS = [scenario_doorbell, scenario_header, scenario_barrier]

if __name__ == "__main__":
    starter.SCENARIOS = SCENARIOS
    sys.exit(starter.main(sys.argv[1:]))
