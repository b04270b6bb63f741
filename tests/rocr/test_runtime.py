"""rocr: agents, pools, signals and their waits, code objects."""

from __future__ import annotations

import numpy as np
import pytest

import rocr


def test_agents_report_the_preset(rt):
    gpu = rt.gpus[0]
    assert rt.cpu.device_type == rocr.DeviceType.CPU
    assert gpu.name == "gfx900" and gpu.device_type == rocr.DeviceType.GPU
    assert gpu.wavefront_size == 64
    assert gpu.compute_unit_count == 2
    assert gpu.simds_per_cu == 4 and gpu.max_waves_per_cu == 40
    assert gpu.workgroup_max_size == 1024 and gpu.workgroup_max_dim == (1024, 1024, 1024)
    assert gpu.grid_max_size == 0xFFFFFFFF
    assert (gpu.queue_min_size, gpu.queue_max_size, gpu.queues_max) == (64, 0x20000, 128)


def test_default_preset_is_gfx900_with_64_cus(monkeypatch):
    monkeypatch.delenv("HSAEMU_PRESET", raising=False)
    with rocr.init() as rt:
        assert rt.gpus[0].compute_unit_count == 64


def test_pools_as_rocr_exposes_them(rt):
    cpu = rt.cpu.pools()
    assert [p.kernarg for p in cpu] == [True, False, False]
    assert [p.fine_grained for p in cpu] == [True, True, False]
    gpu = rt.gpus[0].pools()
    assert gpu[0].coarse_grained and gpu[0].segment == rocr.Segment.GLOBAL
    assert gpu[1].segment == rocr.Segment.GROUP and gpu[1].size == 65536
    with pytest.raises(rocr.HsaError) as info:
        gpu[1].allocate(16)
    assert info.value.status == rocr.Status.ERROR_INVALID_ALLOCATION


def test_vram_is_not_host_visible(rt):
    buf = rt.gpus[0].pools()[0].allocate(4096)
    with pytest.raises(rocr.HsaError) as info:
        buf.view()
    assert info.value.status == rocr.Status.ERROR_INVALID_AGENT


def test_buffer_view_read_write_free(rt):
    buf = rt.cpu.pools(fine_grained=True, kernarg=False)[0].allocate(64)
    buf.view(np.float32)[:4] = [1, 2, 3, 4]
    assert buf.read(0, 8) == np.array([1, 2], np.float32).tobytes()
    buf.write(b"\xff" * 4, 60)
    assert buf.view(np.uint8)[60:].tolist() == [255] * 4
    with pytest.raises(rocr.HsaError):
        buf.write(b"12345", 60)
    buf.free()
    with pytest.raises(rocr.HsaError):
        buf.view()


@pytest.mark.parametrize("interrupt", [True, False])
def test_signal_operations(rt, interrupt):
    s = rt.create_signal(10, interrupt=interrupt)
    assert s.load() == 10
    s.store(5)
    assert s.add(3) == 5 and s.load() == 8
    assert s.subtract(8) == 8 and s.load() == 0
    assert s.exchange(7) == 0 and s.load() == 7
    assert s.cas(7, 9) == 7 and s.load() == 9
    assert s.cas(1, 2) == 9 and s.load() == 9
    assert s.and_(0b1100) == 9 and s.load() == 8
    assert s.or_(1) == 8 and s.xor(0xF) == 9 and s.load() == 6


@pytest.mark.parametrize(
    ("cond", "cmp", "value"),
    [
        (rocr.Condition.EQ, 3, 3),
        (rocr.Condition.NE, 3, 4),
        (rocr.Condition.LT, 3, 2),
        (rocr.Condition.GTE, 3, 3),
    ],
)
def test_wait_conditions_satisfied_return_at_once(rt, cond, cmp, value):
    s = rt.create_signal(value)
    assert s.wait(cond, cmp) == value


def test_signal_lives_in_memory_with_amd_signal_layout(rt):
    from hw_model.structs import AmdSignal, AmdSignalKind

    s = rt.create_signal(42)
    raw = rt.system.memory.read(rt.transport.process.pasid, s.handle, 64)
    sig = AmdSignal.from_bytes(raw)
    assert sig.kind == AmdSignalKind.USER and sig.value == 42
    assert sig.event_mailbox_ptr == s.event.HWData2 and sig.event_id == s.event.EventId


def test_code_objects(rt):
    exe = rt.load_code_object("builtin")
    assert set(exe.symbols) == {"square", "vector_add", "saxpy", "empty"}
    k = exe.kernel("saxpy.kd")
    assert [a.name for a in k.args] == ["alpha", "x", "y", "n"]
    assert k.kernarg_size == 32
    assert k.kernel_object % 64 == 0
    assert len(k.pack_args(2.0, 0x1000, 0x2000, 10)) == 32
    with pytest.raises(rocr.HsaError) as info:
        k.pack_args(1.0)
    assert info.value.status == rocr.Status.ERROR_INVALID_ARGUMENT
    with pytest.raises(rocr.HsaError) as info:
        exe.kernel("nope")
    assert info.value.status == rocr.Status.ERROR_INVALID_SYMBOL_NAME
    with pytest.raises(rocr.HsaError) as info:
        rt.load_code_object(b"\x7fELF" + bytes(60))
    assert info.value.status == rocr.Status.ERROR_INVALID_CODE_OBJECT
    with pytest.raises(rocr.HsaError) as info:
        rt.load_code_object("builtin:nope")
    assert info.value.status == rocr.Status.ERROR_INVALID_CODE_OBJECT


def test_kernel_descriptor_in_memory_matches_the_metadata(rt):
    from hw_model.structs import KernelDescriptor, decode_vgpr_count

    k = rt.load_code_object("builtin:vector_add").kernel("vector_add")
    raw = rt.system.memory.read(rt.transport.process.pasid, k.kernel_object, 64)
    kd = KernelDescriptor.from_bytes(raw)
    assert kd.kernarg_size == 32
    assert decode_vgpr_count(kd.compute_pgm_rsrc1, 4) >= k.vgprs
    entry = rt.system.memory.read(
        rt.transport.process.pasid, k.kernel_object + kd.kernel_code_entry_byte_offset, 16
    )
    assert entry.startswith(b"HSAEMU")


def test_shutdown_releases_memory_and_later_calls_fail(rt):
    used = rt.system.memory.used[0]
    buf = rt.cpu.pools(fine_grained=True, kernarg=False)[0].allocate(1 << 20)
    assert rt.system.memory.used[0] >= used + (1 << 20)
    q = rt.gpus[0].create_queue(64)
    rt.shutdown()
    assert rt.system.memory.used[0] == 0
    assert rt.system.gpus[0].scheduler.runlist == []
    with pytest.raises(rocr.HsaError) as info:
        rt.create_signal(1)
    assert info.value.status == rocr.Status.ERROR_NOT_INITIALIZED
    del buf, q


_TWO_PROCESSES = """
import hashlib, rocr
from hw_model.config import system_spec
a = rocr.init(spec=system_spec("teaching"), trace=True)
b = rocr.init(system=a.system)
hs = []
for rt in (a, b):
    k = rt.load_code_object("builtin:empty").kernel("empty")
    for _ in range(3):
        q = rt.gpus[0].create_queue(64)
        hs += [q.dispatch(k, grid=256, workgroup=64, barrier=True) for _ in range(2)]
for h in hs:
    h.wait()
del hs
b.shutdown()
d = a.system.tracer.dumps()
a.shutdown()
print(hashlib.sha256(d.encode() if isinstance(d, str) else d).hexdigest())
"""


def test_the_same_program_gives_the_same_trace_in_every_run():
    """Two processes oversubscribing the HQDs, one of them shutting down: its queues go in
    creation order, not in the order a set of them iterates (their addresses, which differ
    from one run of the interpreter to the next), so the HWS's unmaps and runlists match."""
    import subprocess
    import sys

    runs = {
        subprocess.run(
            [sys.executable, "-c", _TWO_PROCESSES],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        ).stdout.strip()
        for _ in range(3)
    }
    assert len(runs) == 1, runs
