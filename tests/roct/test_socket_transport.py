"""roct's socket transport: a process of a KFD service, with zero-copy mappings."""

from __future__ import annotations

import errno
import threading

import numpy as np
import pytest

import rocr
from rock_emu.ioctl import KfdError
from rock_emu.service import KfdService
from roct.socket_transport import SocketTransport


@pytest.fixture
def service(tmp_path):
    svc = KfdService(str(tmp_path / "kfd.sock"), preset="teaching")
    svc.bind()
    t = threading.Thread(target=svc.serve_forever, kwargs={"install_signals": False}, daemon=True)
    t.start()
    yield svc
    svc.stop()
    t.join(timeout=30)


def test_rocr_init_uses_the_service_named_by_hsaemu_kfd(service, monkeypatch):
    monkeypatch.setenv("HSAEMU_KFD", f"unix:{service.path}")
    with rocr.init(name="env client") as rt:
        assert rt.system is None  # the machine lives in the service
        assert isinstance(rt.transport, SocketTransport)
        assert rt.gpus[0].name == "gfx900"
        names = [c["name"] for c in rt.transport.status()["clients"]]
        assert names == ["env client"]


def test_bad_hsaemu_kfd_is_an_hsa_error_naming_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HSAEMU_KFD", "tcp:1234")
    with pytest.raises(rocr.HsaError) as info:
        rocr.init()
    assert info.value.status == rocr.Status.ERROR_INVALID_ARGUMENT
    assert "HSAEMU_KFD='tcp:1234'" in info.value.message
    missing = tmp_path / "nobody.sock"
    monkeypatch.setenv("HSAEMU_KFD", f"unix:{missing}")
    with pytest.raises(rocr.HsaError) as info:
        rocr.init()
    assert str(missing) in info.value.message and "hsaemu kfd --socket" in info.value.message


def test_mappings_are_zero_copy_views_of_the_bos_pages(service):
    with rocr.init(transport=SocketTransport(service.path, name="zc")) as rt:
        gpu = rt.gpus[0]
        pool = rt.cpu.pools(fine_grained=True, kernarg=False)[0]
        n = 1024
        src, dst = pool.allocate(4 * n), pool.allocate(4 * n)
        rt.allow_access([gpu], src)
        rt.allow_access([gpu], dst)
        view = src.view(np.float32, n)
        view[:] = np.arange(n, dtype=np.float32)
        # the daemon's BO holds the very bytes written through the client's view
        pasid = rt.transport.pasid
        seen = service.memory.read(pasid, src.address, 4 * n)
        assert np.array_equal(np.frombuffer(seen, np.float32), view)
        # and what the daemon stores shows in the client's view with no message at all
        service.memory.write(pasid, src.address, np.float32(-1).tobytes())
        assert view[0] == -1
        view[0] = 0
        k = rt.load_code_object("builtin:square").kernel("square")
        gpu.create_queue(64).dispatch(k, grid=n, workgroup=64, args=(dst, src, n)).wait()
        assert np.array_equal(dst.view(np.float32, n), view * view)  # the GPU's writes, no copy


def test_mapping_stores_and_atomics_go_through_the_memory_model(service):
    tr = SocketTransport(service.path, name="atomics")
    with rocr.init(transport=tr) as rt:
        sig = rt.create_signal(10)
        assert sig.add(5) == 10 and sig.load() == 15
        assert sig.cas(15, -3) == 15 and sig.load() == -3
        assert sig.exchange(7) == -3 and sig.load() == 7
        assert sig.and_(3) == 7 and sig.or_(8) == 3 and sig.xor(1) == 11 and sig.load() == 10
        assert service.memory.load_i64(tr.pasid, sig.handle + 8) == 10


def test_host_clock_sysfs_and_status(service):
    with SocketTransport(service.path, name="clock") as tr:
        t0 = tr.host_now()
        assert tr.host_elapse(5_000) == t0 + 5_000 == tr.host_now()
        assert tr.host_cost("syscall_ps") == service.system.spec.host.syscall_ps
        with pytest.raises(AttributeError, match="no host cost 'nope'"):
            tr.host_cost("nope")
        tree = tr.sysfs_tree()
        assert tree["/sys/class/kfd/kfd/topology/nodes/1/name"] == "gfx900\n"
        name = tr.read_sysfs("/sys/class/kfd/kfd/topology/nodes/1/name")
        assert name == "gfx900\n"
        with pytest.raises(FileNotFoundError):
            tr.read_sysfs("/sys/class/kfd/kfd/topology/nodes/9/name")
        me = tr.status()["clients"][0]
        assert me["pasid"] == tr.pasid and me["clock_ps"] == tr.host_now()
        assert me["state"] == "idle" and not me["native"]
    with pytest.raises(KfdError) as info:
        tr.host_elapse(1)
    assert info.value.errno == errno.EBADF


def test_cli_kfd_rejects_bad_arguments_in_one_line(tmp_path, capsys):
    from rocr.cli import main

    assert main(["kfd", "--socket", str(tmp_path / "k.sock"), "--idle-lease-ms", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--idle-lease-ms 0" in err
    assert main(["kfd", "--socket", str(tmp_path / "no" / "k.sock")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["kfd", "--socket", str(tmp_path / "none.sock"), "--status"]) == 2
    assert "--socket" in capsys.readouterr().err


def test_a_second_daemon_on_a_live_socket_is_refused(service, capsys):
    from rocr.cli import main

    assert main(["kfd", "--socket", service.path]) == 2
    err = capsys.readouterr().err
    assert "already listens" in err and err.count("\n") == 1
