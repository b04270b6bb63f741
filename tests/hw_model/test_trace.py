"""Trace export: one flow arrow per dispatch across the layers, and the HQD tracks."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from hw_model.trace import FLOW_NAME, Tracer

pytestmark = pytest.mark.trace  # every test here reads the `rt` fixture's trace

# Elements of the long dispatch: on the teaching GPU it runs past ROCr's 200 us spin, so the
# host sleeps in AMDKFD_IOC_WAIT_EVENTS and the interrupt wakes it.
LONG = 1 << 16


def _run(rt, buffers, queues: int, n: int) -> dict:
    """`queues` dispatches of square, one per queue, then a wait on each; the trace JSON."""
    src, dst = buffers(np.ones(n, np.float32)), buffers(n)
    k = rt.load_code_object("builtin:square").kernel("square")
    qs = [rt.gpus[0].create_queue(256) for _ in range(queues)]
    handles = [q.dispatch(k, grid=n, workgroup=256, args=(dst, src, n)) for q in qs]
    for h in handles:
        h.wait()
    return json.loads(rt.system.tracer.dumps())


def _tracks(trace: dict) -> dict[tuple[int, int], str]:
    return {
        (e["pid"], e["tid"]): e["args"]["name"]
        for e in trace["traceEvents"]
        if e["ph"] == "M" and e["name"] == "thread_name"
    }


def _flows(trace: dict) -> dict[int, list[tuple[dict, dict]]]:
    """flow id -> [(flow event, the event it follows and binds to)] in time order."""
    out: dict[int, list[tuple[dict, dict]]] = {}
    bound = None
    for e in trace["traceEvents"]:
        if e["ph"] in ("s", "t", "f"):
            out.setdefault(e["id"], []).append((e, bound))
        elif e["ph"] != "M":
            bound = e
    return {fid: sorted(steps, key=lambda s: s[0]["ts"]) for fid, steps in out.items()}


def _no_number(name: str) -> str:
    return re.sub(r"^event \d+ ", "event N ", name)


def test_a_dispatch_is_one_flow_from_the_api_call_to_the_host_wake_up(rt, buffers):
    trace = _run(rt, buffers, 1, LONG)
    tracks = _tracks(trace)
    flows = _flows(trace)
    assert list(flows) == [1], "one dispatch, one flow"
    steps = flows[1]
    assert [s[0]["ph"] for s in steps] == ["s"] + ["t"] * (len(steps) - 2) + ["f"]
    assert all(s[0]["name"] == FLOW_NAME and s[0]["cat"] == "flow" for s in steps)
    ts = [s[0]["ts"] for s in steps]
    assert ts == sorted(ts)
    seen = [(tracks[(b["pid"], b["tid"])], _no_number(b["name"])) for _, b in steps]
    # The life of the packet, in time order, as the flow chains it.
    want = [
        ("rocr", "Queue.dispatch"),
        ("kfd", "AMDKFD_IOC_CREATE_EVENT"),  # the completion signal's event
        ("rocr", "write packet 0"),
        ("rocr", "ring doorbell"),
        ("queue 0", "doorbell"),
        ("queue 0", "fetch packet 0"),
        ("dispatcher", "launch square"),
        ("CU0", "square"),
        ("queue 0", "retire 0"),
        ("queue 0", "completion signal"),
        ("CP", "interrupt signal_event"),
        ("kfd", "event N signaled"),  # the completion signal's event, by the interrupt
        ("rocr", "wait returns"),
    ]
    pos = [seen.index(w) for w in want]
    assert pos == sorted(pos), seen
    assert seen[0] == want[0] and seen[-1] == want[-1]
    # Every CU that ran a workgroup of it is on the way.
    cus = {t for t, n in seen if t.startswith("CU")}
    assert cus == {f"CU{i}" for i in range(rt.gpus[0].compute_unit_count)}
    process = {
        e["pid"]: e["args"]["name"]
        for e in trace["traceEvents"]
        if e["ph"] == "M" and e["name"] == "process_name"
    }
    groups = {process[f["pid"]] for f, _ in steps}
    assert groups == {"host", "KFD (kernel driver)", "GPU command processor", "GPU compute units"}


def test_two_dispatches_are_two_flows_each_on_its_own_queue(rt, buffers):
    trace = _run(rt, buffers, 2, 4096)
    tracks = _tracks(trace)
    flows = _flows(trace)
    assert sorted(flows) == [1, 2]
    for fid, steps in flows.items():
        q = f"queue {fid - 1}"
        on_queues = {tracks[(b["pid"], b["tid"])] for _, b in steps} & {"queue 0", "queue 1"}
        assert on_queues == {q}, f"flow {fid} crosses into another queue's track"
        launch = [b for _, b in steps if b["name"] == "launch square"]
        assert [b["args"]["queue"] for b in launch] == [fid - 1]
        ts = [f["ts"] for f, _ in steps]
        assert ts == sorted(ts)
        # A short kernel: the host polled the value and woke at the completion signal, before
        # the KFD handled the interrupt; the flow ends at the wake-up.
        assert steps[-1][1]["name"] == "wait returns" and steps[-1][0]["ph"] == "f"
        retire = [b for _, b in steps if b["name"] == "retire 0"]
        signal = [b for _, b in steps if b["name"] == "wait returns"]
        assert retire[0]["args"]["completion_signal"] == signal[0]["args"]["signal"]


def test_every_flow_step_binds_to_an_event_on_its_track_at_its_time(rt, buffers):
    trace = _run(rt, buffers, 2, 4096)
    json.loads(json.dumps(trace))
    steps = [s for flow in _flows(trace).values() for s in flow]
    assert steps
    for flow_ev, bound in steps:
        assert bound is not None and bound["ph"] in ("i", "X")
        assert (bound["pid"], bound["tid"], bound["ts"]) == (
            flow_ev["pid"],
            flow_ev["tid"],
            flow_ev["ts"],
        )
        assert flow_ev["bp"] == "e", "binds to the enclosing slice (the event it follows)"


def test_each_hqd_is_a_track_showing_the_queue_mapped_to_it(rt, buffers):
    trace = _run(rt, buffers, 2, 4096)
    tracks = _tracks(trace)
    hqd = sorted(
        (tracks[(e["pid"], e["tid"])], e["name"])
        for e in trace["traceEvents"]
        if e.get("cat") == "hqd"
    )
    assert hqd == [("HQD 0", "queue 0"), ("HQD 1", "queue 1")]


def test_flows_cost_nothing_until_export():
    """The flows are derived from the recorded events when the trace is written: a disabled
    tracer records nothing and exports no flow."""
    tr = Tracer(enabled=False)
    tr.instant("rocr", "write packet 0", 0, {"queue": 0})
    assert len(tr.events) == 0
    assert not [e for e in tr.to_chrome()["traceEvents"] if e["ph"] in ("s", "t", "f")]
