"""The HTTP API end to end: a real uvicorn server on 127.0.0.1 and a free port.

The same lab script (square, then a barrier-AND across queues, then vector_add) runs locally
and against the server, and must leave the same bytes in memory and the same trace. Then:
tokens isolate systems, many clients work at once, a wait blocks without stopping the other
callers of its system, and a client that hangs up mid-wait leaves the server healthy.
"""

import threading
import time

import httpx
import numpy as np
import pytest

import rocr
from rocr.service.schemas import ServerLimits
from rocr.service.testing import ServeProcess, ServerThread

N = 4096
CLIENTS = 4


@pytest.fixture(scope="module")
def server():
    with ServerThread(limits=ServerLimits(max_wait_ms=10_000)) as url:
        yield url


def lab(rt):
    """square on one queue; a barrier-AND on another waits for it; then vector_add."""
    gpu = rt.gpus[0]
    fine = rt.cpu.pools(fine_grained=True, kernarg=False)[0]
    a, b, c, d = (fine.allocate(4 * N) for _ in range(4))
    for x in (a, b, c, d):
        rt.allow_access([gpu], x)
    a.view(np.float32)[:] = np.arange(N, dtype=np.float32) / 7
    b.view(np.float32)[:] = 1.5
    exe = rt.load_code_object("builtin:square,vector_add")
    square, vector_add = exe.kernel("square"), exe.kernel("vector_add")
    q1, q2 = gpu.create_queue(256), gpu.create_queue(256)
    first = q1.dispatch(square, grid=N, workgroup=256, args=(c, a, N))
    joined = rt.create_signal(1)
    q2.submit(
        rocr.BarrierAndPacket(
            header=rocr.make_header(rocr.PacketType.BARRIER_AND),
            dep_signal=[first.signal.handle, 0, 0, 0, 0],
            completion_signal=joined.handle,
        )
    )
    second = q2.dispatch(vector_add, grid=N, workgroup=256, args=(c, b, d, N), barrier=True)
    second.wait()
    assert joined.load() == 0 and first.done
    return {
        "square": c.read(),
        "vector_add": d.read(),
        "dispatch_time": second.dispatch_time(),
        "now_ns": rt.now_ns,
        "stats": rt.system.stats(),
        "trace": rt.system.tracer.dumps(),
    }


def test_same_script_same_memory_same_trace(server):
    with rocr.init(preset="teaching", trace=True) as local:  # traced, as served systems are
        want = lab(local)
    with rocr.connect(server, preset="teaching") as remote:
        got = lab(remote)
    x = np.arange(N, dtype=np.float32) / 7
    assert np.array_equal(np.frombuffer(got["square"], np.float32), x * x)
    assert np.array_equal(np.frombuffer(got["vector_add"], np.float32), x * x + 1.5)
    for key in want:
        assert got[key] == want[key], key


def test_tokens_isolate_systems(server):
    with rocr.connect(server, preset="teaching") as mine, rocr.connect(server) as theirs:
        buf = mine.cpu.pools()[1].allocate(4096)
        stolen = httpx.get(
            f"{mine.url}/buffers/{buf.address}/bytes",
            headers={"Authorization": f"Bearer {theirs.token}"},
        )
        assert stolen.status_code == 404
        assert stolen.json()["status"] == "HSA_STATUS_ERROR_NOT_INITIALIZED"
        with pytest.raises(rocr.HsaError):
            rocr.connect(mine.url, token=theirs.token)
        assert httpx.get(mine.url).status_code == 401
        assert httpx.get(mine.url, headers={"Authorization": f"Bearer {mine.token}"}).is_success


def test_many_clients_at_once(server):
    with rocr.init(preset="teaching", trace=True) as local:  # traced, as served systems are
        want = lab(local)
    results, errors = [], []

    def student():
        try:
            with rocr.connect(server, preset="teaching") as rt:
                results.append(lab(rt))
        except Exception as e:  # reported below, with the others
            errors.append(e)

    threads = [threading.Thread(target=student) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert len(results) == CLIENTS
    for got in results:
        assert got == want  # each system is its own machine: concurrency changes nothing


def test_a_wait_leaves_the_system_to_its_other_callers(server):
    with rocr.connect(server, preset="teaching") as owner:
        gpu = owner.gpus[0]
        k = owner.load_code_object("builtin:square").kernel("square")
        buf = owner.cpu.pools()[1].allocate(4 * N)
        owner.allow_access([gpu], buf)
        q = gpu.create_queue(64)
        done = owner.create_signal(1)
        waiter = rocr.connect(owner.url, token=owner.token, wall_timeout_ms=8000)
        seen = {}

        def wait():
            seen["value"] = waiter.signal(done.handle).wait(rocr.Condition.LT, 1)

        t = threading.Thread(target=wait)
        t.start()
        deadline = time.monotonic() + 10
        while (
            httpx.get(owner.url, headers={"Authorization": f"Bearer {owner.token}"}).json()[
                "waiters"
            ]
            == 0
        ):
            assert time.monotonic() < deadline, "the wait never started"
            time.sleep(0.01)
        # While the waiter blocks, this caller writes the packet and rings the doorbell.
        q.dispatch(k, grid=N, workgroup=256, args=(buf, buf, N), completion_signal=done)
        t.join(timeout=20)
        waiter.shutdown()
        assert seen == {"value": 0}


def test_a_client_hanging_up_mid_wait_leaves_the_server_healthy(server):
    with rocr.connect(server, preset="teaching") as rt:
        sig = rt.create_signal(1)
        auth = {"Authorization": f"Bearer {rt.token}"}
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(
                f"{rt.url}/signals/{sig.handle}/wait",
                json={"condition": "EQ", "compare_value": 0, "wall_timeout_ms": 8000},
                headers=auth,
                timeout=0.5,
            )
        deadline = time.monotonic() + 8
        while httpx.get(rt.url, headers=auth).json()["waiters"]:
            assert time.monotonic() < deadline, "the abandoned wait never ended"
            time.sleep(0.02)
        assert httpx.get(server + "/healthz").json()["status"] == "ok"
        sig.store(0)
        assert sig.wait(rocr.Condition.EQ, 0) == 0


def test_hsaemu_serve_needs_nothing_else():
    with ServeProcess("--preset", "teaching") as serve:
        assert "swagger" in httpx.get(serve.url + "/docs").text.lower()
        with rocr.connect(serve.url) as rt:
            assert rt.gpus[0].compute_unit_count == 2  # the --preset default
        serve.proc.terminate()
        serve.proc.wait(timeout=10)
