"""hsa_amd_ipc_signal_create / attach between two processes of one machine (in-process here;
tests/e2e/test_kfd_service.py does it between OS processes)."""

from __future__ import annotations

import pytest

import rocr
from hw_model import aql
from rock_emu import ioctl as io


@pytest.fixture
def two(rt):
    other = rocr.init(system=rt.system, name="second process")
    yield rt, other
    other.shutdown()


def _gated(rt, sig):
    q = rt.gpus[0].create_queue(64)
    q.submit(
        rocr.BarrierAndPacket(
            header=aql.make_header(aql.PacketType.BARRIER_AND),
            dep_signal=[sig.handle, 0, 0, 0, 0],
        )
    )
    return q.dispatch(rt.load_code_object("builtin:empty").kernel("empty"), grid=64, workgroup=64)


def test_a_barrier_waits_on_another_process_ipc_signal(two):
    a, b = two
    mine = a.create_signal(1, ipc=True)
    handle = a.ipc_signal_create(mine)
    assert isinstance(handle, bytes) and len(handle) == 32  # sizeof(hsa_amd_ipc_signal_t)
    theirs = b.ipc_signal_attach(handle)
    assert theirs.load() == 1  # (its address is this process's own VA)
    h = _gated(b, theirs)
    with pytest.raises(rocr.HsaError, match="did not complete"):
        h.wait(timeout_ns=1_000_000)
    mine.store(0)  # process a's store wakes process b's barrier
    h.wait()
    assert h.done and theirs.load() == 0
    theirs.store(5)
    assert mine.load() == 5  # one amd_signal_t, two mappings


def test_ipc_misuse_is_invalid_argument_naming_it(two):
    a, b = two
    plain = a.create_signal(1)
    with pytest.raises(rocr.HsaError) as info:
        a.ipc_signal_create(plain)
    assert info.value.status == rocr.Status.ERROR_INVALID_ARGUMENT
    assert "ipc=True" in info.value.message
    with pytest.raises(rocr.HsaError) as info:
        b.ipc_signal_attach(b"\0" * 31)
    assert (
        info.value.status == rocr.Status.ERROR_INVALID_ARGUMENT and "32 bytes" in info.value.message
    )
    forged = bytearray(a.ipc_signal_create(a.create_signal(0, ipc=True)))
    forged[0:4] = (0x7777).to_bytes(4, "little")  # a dma-buf nobody exported
    with pytest.raises(rocr.HsaError) as info:
        b.ipc_signal_attach(bytes(forged))
    assert info.value.status == rocr.Status.ERROR_INVALID_ARGUMENT
    assert "dmabuf_fd 30583" in info.value.message


def test_get_dmabuf_info_describes_an_exported_bo(rt):
    sig = rt.create_signal(0, ipc=True)
    fd, size = rt.thunk.share_memory(sig._ipc_alloc)
    a = rt.thunk._ioctl(io.AMDKFD_IOC_GET_DMABUF_INFO, io.GetDmabufInfoArgs(dmabuf_fd=fd))
    assert a.size == size == 4096 and a.gpu_id == rt.gpus[0].props.KFDGpuID
    assert a.flags & io.AllocMemFlags.GTT and a.flags & io.AllocMemFlags.COHERENT
