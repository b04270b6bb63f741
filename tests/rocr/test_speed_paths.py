"""The round trip's fast paths keep their behaviour, and their cost does not follow the number
of queues: counted in calls, never in wall-clock time."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import rocr
from hw_model import aql
from hw_model import command_processor as cp
from hw_model.structs import KernelDescriptor
from rocr.queue import Queue

ROOT = Path(__file__).resolve().parents[2]


def _bad_packet(k) -> aql.KernelDispatchPacket:
    """A dispatch the CP refuses: zero dimensions (HSA_STATUS_ERROR_INCOMPATIBLE_ARGUMENTS)."""
    return aql.KernelDispatchPacket(
        header=aql.make_header(aql.PacketType.KERNEL_DISPATCH),
        setup=0,
        workgroup_size_x=64,
        workgroup_size_y=1,
        workgroup_size_z=1,
        grid_size_x=64,
        grid_size_y=1,
        grid_size_z=1,
        kernel_object=k.kernel_object,
    )


def test_a_dispatch_looks_at_no_idle_queue(rt, monkeypatch):
    """ROCr's async events thread sleeps on the queues' inactive-signal events: a dispatch on
    one queue never reads the error state of the 40 idle ones."""
    k = rt.load_code_object("builtin:empty").kernel("empty")
    queues = [rt.gpus[0].create_queue(64) for _ in range(40)]
    looked: list[Queue] = []
    real = Queue._poll_error
    monkeypatch.setattr(Queue, "_poll_error", lambda q: (looked.append(q), real(q))[1])
    for _ in range(3):
        queues[0].dispatch(k, grid=64, workgroup=64).wait()
    assert looked == []


def test_an_error_on_one_of_many_queues_reaches_its_callback(rt):
    """The inactive-signal event wakes the async events thread: the callback of the queue the
    CP stopped runs, with ROCr's status, and no other queue's does."""
    k = rt.load_code_object("builtin:empty").kernel("empty")
    heard: list[tuple[int, rocr.Status]] = []
    queues = [
        rt.gpus[0].create_queue(64, callback=lambda e, q: heard.append((q.id, e.status)))
        for _ in range(20)
    ]
    bad = queues[13]
    sig = rt.create_signal(1)
    pkt = _bad_packet(k).model_copy(update={"completion_signal": sig.handle})
    bad.submit(pkt)
    queues[2].dispatch(k, grid=64, workgroup=64).wait()  # the machine runs on
    assert sig.wait(rocr.Condition.LT, 1, timeout_ns=1_000_000) == 1  # never completes
    assert heard == [(bad.id, rocr.Status.ERROR_INCOMPATIBLE_ARGUMENTS)]
    assert bad.error is not None and bad.error.status == rocr.Status.ERROR_INCOMPATIBLE_ARGUMENTS
    assert all(q.error is None for q in queues if q is not bad)


def test_dispatch_writes_the_packet_without_building_a_pydantic_model(rt, monkeypatch, buffers):
    """queue.dispatch checks its arguments itself and packs the 64 bytes directly; the bytes
    in the ring are those of the equivalent packet model."""
    k = rt.load_code_object("builtin:square").kernel("square")
    src = buffers(np.arange(64, dtype=np.float32))
    dst = buffers(64)
    q = rt.gpus[0].create_queue(64)
    expected = rt.dispatch_packet(k, 64, 64, (dst, src, 64))

    def refuse(*a, **kw):
        raise AssertionError("a packet model was built")

    monkeypatch.setattr(aql.KernelDispatchPacket, "__init__", refuse)
    h = q.dispatch(k, grid=64, workgroup=64, args=(dst, src, 64))
    raw = q.packet_bytes(h.index)
    h.wait()
    assert np.array_equal(dst.view(np.float32, 64), np.arange(64, dtype=np.float32) ** 2)
    got = aql.KernelDispatchPacket.from_bytes(raw)
    # header back to INVALID once retired; kernargs and completion signal differ per dispatch
    same = ("setup", "grid_size_x", "workgroup_size_x", "kernel_object", "group_segment_size")
    assert {f: getattr(got, f) for f in same} == {f: getattr(expected, f) for f in same}
    assert got.completion_signal == h.signal.handle


def test_each_kernel_descriptor_is_decoded_once(rt, monkeypatch):
    """The CP keeps what it decoded of a kernel descriptor (and the occupancy it computed):
    ten dispatches of one kernel decode its descriptor at most once."""
    k = rt.load_code_object("builtin:empty").kernel("empty")
    q = rt.gpus[0].create_queue(64)
    decoded = []
    real = KernelDescriptor.from_bytes.__func__

    def counting(cls, b, offset=0):
        decoded.append(bytes(b))
        return real(cls, b, offset)

    monkeypatch.setattr(KernelDescriptor, "from_bytes", classmethod(counting))
    monkeypatch.setattr(cp, "_KD_CACHE", {})
    for _ in range(10):
        q.dispatch(k, grid=64, workgroup=64).wait()
    assert len(decoded) == 1


def test_a_rewritten_kernel_descriptor_is_read_again(rt):
    """The cache is keyed by the descriptor's bytes: changing them in memory changes what the
    CP sees (a descriptor asking for more LDS than a CU has now stops the queue)."""
    exe = rt.load_code_object("builtin:empty")
    k = exe.kernel("empty")
    q = rt.gpus[0].create_queue(64)
    q.dispatch(k, grid=64, workgroup=64).wait()
    code = exe._alloc.mapping.array
    off = k.kernel_object - exe._alloc.address
    kd = KernelDescriptor.from_bytes(bytes(code[off : off + 64]))
    bad = kd.model_copy(update={"group_segment_fixed_size": 1 << 20})
    code[off : off + 64] = np.frombuffer(bad.to_bytes(), dtype=np.uint8)
    q2 = rt.gpus[0].create_queue(64, callback=lambda e, q: None)
    h = q2.dispatch(k, grid=64, workgroup=64)
    assert h.signal.wait(rocr.Condition.LT, 1, timeout_ns=1_000_000) == 1
    assert q2.error is not None and q2.error.status == rocr.Status.ERROR_INVALID_ALLOCATION


def test_dropped_handles_give_their_signals_back(rt):
    """Completion signals of dropped handles are reused: 50 dispatches, a few signals."""
    k = rt.load_code_object("builtin:empty").kernel("empty")
    q = rt.gpus[0].create_queue(64)
    before = len(rt._signals)
    for _ in range(50):
        q.dispatch(k, grid=64, workgroup=64).wait()
    assert len(rt._signals) - before <= 2
    kept = q.dispatch(k, grid=64, workgroup=64)
    sig = kept.detach_signal()
    kept.wait()
    del kept
    assert sig not in rt._spare_signals and not sig.destroyed


@pytest.mark.parametrize("module", ["rocr", "rocr.cli"])
def test_import_leaves_the_machine_model_and_ioctl_validators_for_later(module):
    """`import rocr` (and the CLI, for --help) load neither the emulated driver nor the
    hardware model behind it, and build no ioctl struct validator: those come with the first
    machine."""
    code = (
        f"import sys, {module}\n"
        "from rock_emu import ioctl\n"
        "assert 'hw_model.system' not in sys.modules, 'hw_model.system'\n"
        "assert 'rock_emu.kfd' not in sys.modules, 'rock_emu.kfd'\n"
        "assert not ioctl.CreateQueueArgs.__pydantic_complete__, 'validator built'\n"
        "import rocr\n"
        "rt = rocr.init(preset='teaching'); rt.shutdown()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
