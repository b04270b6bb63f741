"""rocr.client: the local API's names and behavior over HTTP (against the app in-process)."""

import numpy as np
import pytest

import rocr
from hw_model.kernels import builtin_code_object
from rocr.client import RemoteHsaError, RemoteView
from rocr.service.schemas import ServerLimits
from rocr.service.testing import in_process_client

N = 2048


@pytest.fixture
def http():
    with in_process_client(limits=ServerLimits(max_body_bytes=8192, max_queues_per_process=4)) as c:
        yield c


@pytest.fixture
def remote(http):
    rt = rocr.connect("http://testserver", preset="teaching", client=http)
    yield rt
    rt.shutdown()


def square_lab(rt):
    """A lab script: nothing in it knows whether `rt` is local or remote."""
    gpu = rt.gpus[0]
    fine = rt.cpu.pools(fine_grained=True, kernarg=False)[0]
    src, dst = fine.allocate(4 * N), fine.allocate(4 * N)
    rt.allow_access([gpu], src)
    rt.allow_access([gpu], dst)
    src.view(np.float32)[:] = np.linspace(-2, 2, N, dtype=np.float32)
    k = rt.load_code_object("builtin:square").kernel("square")
    q = gpu.create_queue(256)
    h = q.dispatch(k, grid=N, workgroup=256, args=(dst, src, N)).wait()
    return dst.read(), h.dispatch_time(), rt.system.stats(), rt.system.tracer.dumps()


def test_a_lab_script_runs_unchanged(remote):
    with rocr.init(preset="teaching", trace=True) as local:  # traced, as served systems are
        expected = square_lab(local)
    got = square_lab(remote)
    assert got[0] == expected[0]  # memory
    assert got[1] == expected[1]  # hsa_amd_profiling_get_dispatch_time
    assert got[2] == expected[2]  # stats
    assert got[3] == expected[3]  # the trace, byte for byte


def test_objects_mirror_the_local_ones(remote):
    with rocr.init(preset="teaching") as local:
        for lo, re in zip(local.agents(), remote.agents(), strict=True):
            assert repr(lo) == repr(re) and lo.info() == re.info()
            assert lo.is_gpu == re.is_gpu and lo.compute_unit_count == re.compute_unit_count
            assert lo.workgroup_max_dim == re.workgroup_max_dim
            assert [repr(p) for p in lo.pools()] == [repr(p) for p in re.pools()]
            assert [p.info() for p in lo.pools()] == [p.info() for p in re.pools()]
        assert len(remote.cpu.pools(kernarg=True)) == len(local.cpu.pools(kernarg=True))
        lexe = local.load_code_object("builtin")
    rexe = remote.load_code_object("builtin")
    assert repr(rexe) == repr(lexe)
    for name, sym in lexe.symbols.items():
        assert repr(rexe.kernel(name + ".kd")) == repr(sym)
        assert rexe.kernel(name).info() == {**sym.info(), "args": sym.info()["args"]}
        # 0x10000: a value every argument kind takes (a pointer must be above the null page)
        assert rexe.kernel(name).pack_args(*[0x10000] * len(sym.args)) == sym.pack_args(
            *[0x10000] * len(sym.args)
        )


def test_errors_are_the_local_errors(remote):
    with rocr.init(preset="teaching") as local:
        for rt in (local, remote):
            with pytest.raises(rocr.HsaError) as e1:
                rt.gpus[0].create_queue(100)
            with pytest.raises(rocr.HsaError) as e2:
                rt.load_code_object("builtin:square").kernel("cube")
            with pytest.raises(rocr.HsaError) as e3:
                rt.cpu.pools()[0].allocate(1 << 50)
            sig = rt.create_signal(1)
            with pytest.raises(rocr.HsaError) as e4:
                sig.wait(rocr.Condition.EQ, 0)
            rt.msgs = [(e.value.status, str(e.value)) for e in (e1, e2, e3)]
            rt.stuck = e4.value.status
    assert remote.msgs == local.msgs
    assert remote.stuck == local.stuck == rocr.Status.ERROR
    assert isinstance(remote.stuck, rocr.Status)


def test_queue_errors_reach_the_wait_and_the_callback(remote):
    seen = []
    for rt in (remote,):
        gpu = rt.gpus[0]
        q = gpu.create_queue(64, callback=lambda err, queue: seen.append((err.status, queue.id)))
        done = rt.create_signal(1)
        pkt = rocr.KernelDispatchPacket(
            header=rocr.make_header(rocr.PacketType.KERNEL_DISPATCH),
            setup=1,
            workgroup_size_x=64,
            workgroup_size_y=1,
            workgroup_size_z=1,
            grid_size_x=64,
            grid_size_y=1,
            grid_size_z=1,
            kernel_object=0,
            completion_signal=done.handle,
        )
        q.submit(pkt)
        with pytest.raises(rocr.HsaError) as e:
            done.wait(rocr.Condition.LT, 1)
        assert e.value.status == rocr.Status.ERROR_INVALID_CODE_OBJECT
        assert seen == [(rocr.Status.ERROR_INVALID_CODE_OBJECT, q.id)]
        assert q.error.status == rocr.Status.ERROR_INVALID_CODE_OBJECT
        q.ring_doorbell(0)  # with a callback, calls go on
        assert len(seen) == 1


def test_views_write_back_what_is_assigned(remote):
    buf = remote.cpu.pools(fine_grained=True, kernarg=False)[0].allocate(64)
    v = buf.view(np.float32)
    assert isinstance(v, RemoteView) and v.shape == (16,)
    v[:] = np.arange(16)
    v[3] = 30
    v[-1] = -1
    v[4:8] += 100
    w = v.view(np.uint32)
    w[0] = 0x3F800000  # 1.0f through a reinterpreting view
    np.copyto(v[8:10], [7, 8])
    copy = v.copy()
    copy[:] = 999  # a copy is not the buffer
    doubled = v * 2  # nor is arithmetic
    doubled[0] = 555
    got = np.frombuffer(buf.read(), np.float32)
    want = np.arange(16, dtype=np.float32)
    want[3], want[-1], want[0] = 30, -1, 1
    want[4:8] += 100
    want[8:10] = [7, 8]
    assert np.array_equal(got, want)
    v2 = buf.view(np.float32, count=4)
    v2.fill(2)
    assert np.array_equal(np.frombuffer(buf.read(0, 16), np.float32), [2, 2, 2, 2])
    with pytest.raises(rocr.HsaError):
        buf.view(np.float64, count=9)


def test_big_transfers_are_split_to_the_body_limit(remote):
    buf = remote.cpu.pools()[1].allocate(40000)
    data = np.random.default_rng(1).integers(0, 255, 40000, dtype=np.uint8).tobytes()
    buf.write(data)
    assert buf.read() == data
    assert bytes(buf.view()) == data
    with pytest.raises(rocr.HsaError) as e:
        buf.read(39999, 2)
    assert "outside the 40000-byte buffer" in str(e.value)


def test_attach_with_the_token(http, remote):
    other = rocr.connect(remote.url, token=remote.token, client=http)
    assert [a.name for a in other.agents()] == [a.name for a in remote.agents()]
    sig = remote.create_signal(3)
    assert other.signal(sig.handle).load() == 3
    buf = remote.cpu.pools()[1].allocate(64)
    buf.write(b"\1" * 64)
    assert other.buffer(buf.address).read() == b"\1" * 64
    q = remote.gpus[0].create_queue(64)
    assert [x.id for x in other.queues()] == [q.id] and other.queue(q.id).size == 64
    other.shutdown()  # leaves the system to its owner
    assert sig.load() == 3


def test_attach_to_a_deleted_system_fails(http):
    rt = rocr.connect("http://testserver", preset="teaching", client=http)
    url, token = rt.url, rt.token
    rt.shutdown()
    with pytest.raises(rocr.HsaError) as e:
        rocr.connect(url, token=token, client=http)
    assert e.value.status == rocr.Status.ERROR_NOT_INITIALIZED
    with pytest.raises(rocr.HsaError) as e:
        rt.create_signal()
    assert e.value.status == rocr.Status.ERROR_NOT_INITIALIZED


def test_connect_refuses_what_it_cannot_do(http):
    with pytest.raises(rocr.HsaError):
        rocr.connect("http://testserver/v1/systems/abc", client=http)
    with pytest.raises(rocr.HsaError):
        rocr.connect("http://testserver", token="t", client=http)
    with pytest.raises(rocr.HsaError):
        rocr.connect("http://testserver/v1/systems/abc", token="t", preset="teaching", client=http)
    with pytest.raises(RemoteHsaError) as e:
        rocr.connect("http://127.0.0.1:9", preset="teaching", timeout=5)
    assert e.value.status == rocr.Status.ERROR and e.value.http_status is None


def test_limits_come_back_as_typed_errors(remote):
    gpu = remote.gpus[0]
    queues = [gpu.create_queue(64) for _ in range(4)]
    with pytest.raises(RemoteHsaError) as e:
        gpu.create_queue(64)
    assert e.value.status == rocr.Status.ERROR_OUT_OF_RESOURCES
    assert e.value.http_status == 429 and e.value.limit.name == "max_queues_per_process"
    queues[0].destroy()
    gpu.create_queue(64)


def test_code_objects_from_a_file_are_uploaded(remote, tmp_path):
    path = tmp_path / "kernels.co"
    path.write_bytes(builtin_code_object(["vector_add"]))
    exe = remote.load_code_object(path)
    assert list(exe.symbols) == ["vector_add"]
    with rocr.init(preset="teaching") as local, pytest.raises(rocr.HsaError) as lo:
        local.load_code_object(tmp_path / "missing.co")
    with pytest.raises(rocr.HsaError) as re:
        remote.load_code_object(tmp_path / "missing.co")
    assert str(re.value) == str(lo.value)


def test_inspection_through_rt_system(remote):
    square_lab(remote)
    sysm = remote.system
    assert sysm.now_ns > 0 and sysm.now_ps == sysm.host_now
    names = [e.name for e in sysm.tracer.events]
    assert "hsa_init" in names and "ring doorbell" in names
    assert sysm.tracer.to_chrome()["traceEvents"]
    assert sysm.gpus[0].scheduler.describe()["hqd_slots"] == 2
    assert len(sysm.gpus[0].dispatcher.occupancy()) == 2
    assert sysm.gpus[0].state()["node"] == 1
    kfd = sysm.kfd()
    assert kfd.processes[0]["queues"][0]["doorbell_id"] is not None
    assert sysm.runlist().runlist["queues"] == 1
    before = sysm.now_ps
    sysm.run_for(5000)
    assert sysm.now_ps == before + 5000
    sysm.run_until_idle()
    q = remote.queues()[0]
    assert "empty" in " ".join(remote.queue_report(q))
    remote.trace("lab", "step 3 done", n=N)
    assert sysm.tracer.events[-1].name == "step 3 done"
    assert sysm.spec["gpu"]["num_cus"] == 2
