"""Light calls (allocate, map, small reads and writes, queue and signal bookkeeping) run in the
event loop when their system's device is quiet: they need no emulation thread, so a server
whose emulation threads are all busy with another system's long wait still serves them, and
they give the same answers as in the executor. Route matching turns away paths a router does
not take without changing what is matched."""

import base64
import subprocess
import sys
import threading

import httpx
import numpy as np
import pytest

import rocr
from rocr.service.schemas import ServerLimits
from rocr.service.testing import ServerThread, until

JOIN_S = 60  # a regression fails here instead of hanging the suite
HUGE = 1 << 31  # work-items of `empty`: hours of emulation were it run to the end


@pytest.fixture(scope="module")
def one_thread():
    st = ServerThread(limits=ServerLimits(emulation_threads=1, max_wait_ms=10_000))
    st.start()
    yield st
    st.stop()


def make_system(c):
    d = c.post("/v1/systems", json={"preset": "teaching"}).json()
    return f"/v1/systems/{d['id']}", {"Authorization": f"Bearer {d['token']}"}


def busy_wait(server, c):
    """A system whose wait on a kernel of hours holds the server's only emulation thread:
    (its path, its auth header, the waiting thread, the dict its answer lands in), returned
    once the wait is running."""
    busy, busy_auth = make_system(c)
    assert c.post(busy + "/executables", json={"source": "builtin:empty"}, headers=busy_auth)
    q = c.post(busy + "/queues", json={"agent": 1, "size": 64}, headers=busy_auth).json()
    d = c.post(
        f"{busy}/queues/{q['id']}/dispatch",
        json={"kernel": "empty", "grid": HUGE, "workgroup": 1024},
        headers=busy_auth,
    ).json()
    answer: dict = {}

    def wait():
        answer["r"] = httpx.post(
            f"{server.url}{busy}/signals/{d['signal']}/wait",
            json={"condition": "EQ", "compare_value": 0},
            headers=busy_auth,
            timeout=JOIN_S * 2,
        )

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    engine = server.app.state.registry.get_admin(busy.rsplit("/", 1)[1]).rt.system.engine
    fired = engine.events_fired
    until(lambda: engine.events_fired > fired, "the wait never ran")
    return busy, busy_auth, waiter, answer


def test_light_calls_need_no_emulation_thread(one_thread):
    url = one_thread.url
    c = httpx.Client(base_url=url, timeout=JOIN_S)
    busy, busy_auth, waiter, answer = busy_wait(one_thread, c)
    quiet, auth = make_system(c)
    # The only emulation thread runs the busy system's wait; the other system's light calls
    # are served all the same, with the answers a thread would give.
    short = httpx.Client(base_url=url, timeout=20)
    buf = short.post(quiet + "/buffers", json={"pool": 1, "size": 4096}, headers=auth)
    assert buf.status_code == 201, buf.text
    addr = buf.json()["address"]
    r = short.post(f"{quiet}/buffers/{addr}/allow-access", json={"agents": [1]}, headers=auth)
    assert r.status_code == 200 and r.json()["agents"] == [1]
    octet = {**auth, "Content-Type": "application/octet-stream"}
    r = short.put(f"{quiet}/buffers/{addr}/bytes", content=b"\x07" * 64, headers=octet)
    assert r.status_code == 200 and r.json()["size"] == 64
    r = short.get(f"{quiet}/buffers/{addr}/bytes", params={"size": 64}, headers=auth)
    assert r.status_code == 200 and base64.b64decode(r.json()["data"]) == b"\x07" * 64
    sig = short.post(quiet + "/signals", json={"initial": 5}, headers=auth).json()
    assert short.get(f"{quiet}/signals/{sig['handle']}", headers=auth).json()["value"] == 5
    assert short.get(quiet + "/clock", headers=auth).status_code == 200
    q2 = short.post(quiet + "/queues", json={"agent": 1, "size": 64}, headers=auth)
    assert q2.status_code == 201, q2.text
    assert waiter.is_alive() and "r" not in answer  # ... while the wait goes on
    assert c.delete(busy, headers=busy_auth).status_code == 204
    waiter.join(JOIN_S)
    assert answer["r"].status_code == 404
    assert c.delete(quiet, headers=auth).status_code == 204


def test_unknown_paths_and_methods_answer_as_before(one_thread):
    c = httpx.Client(base_url=one_thread.url, timeout=JOIN_S)
    path, auth = make_system(c)
    assert c.get(path + "/no-such-thing", headers=auth).status_code == 404
    assert c.get("/v1/nothing").status_code == 404
    assert c.put(path + "/clock", headers=auth).status_code == 405
    assert c.get(path + "/buffers", headers=auth).json() == []
    assert c.delete(path, headers=auth).status_code == 204


def test_hsaemu_serve_pins_glibcs_mmap_threshold(monkeypatch):
    """Without it, memory freed by deleted systems raises glibc's threshold and the next
    systems' zeroed memory is touched page by page (RSS 200-600 MiB under bench/soak.py)."""
    import platform

    from rocr.service.server import fix_mmap_threshold

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt(M_MMAP_THRESHOLD) is glibc's")
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    assert fix_mmap_threshold() is True
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")  # the user's own setting wins
    assert fix_mmap_threshold() is False


def test_hsaemu_serve_freezes_what_the_imports_made_and_systems_are_still_collected():
    """A full collection no longer walks the ~60-90 k objects of the imports (a 60-90 ms pause
    of every request in flight); a system made afterwards, used and shut down, is still
    collected (in a fresh interpreter: the freeze is for the whole process)."""
    code = (
        "import gc, weakref, rocr\n"
        "from rocr.service.server import freeze_imports\n"
        "n = freeze_imports()\n"
        "rt = rocr.init(preset='gfx900')\n"
        "k = rt.load_code_object('builtin:empty').kernel('empty')\n"
        "rt.gpus[0].create_queue(64).dispatch(k, grid=64, workgroup=64).wait()\n"
        "ref = weakref.ref(rt.system)\n"
        "rt.shutdown()\n"
        "del rt, k\n"
        "gc.collect()\n"
        "print(n, ref() is None)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout.split()
    assert int(out[0]) > 20_000
    assert out[1] == "True"


def test_a_small_loop_needs_no_emulation_thread(one_thread):
    """Creating a system, loading a built-in kernel, a dispatch of a few workgroups and the
    wait for it, reading the result and deleting the system all run in the event loop: the
    only emulation thread stays busy with another system's wait throughout. The machine
    does what a local one does (same result, same simulated time at the wait's return)."""
    url = one_thread.url
    c = httpx.Client(base_url=url, timeout=JOIN_S)
    busy, busy_auth, waiter, answer = busy_wait(one_thread, c)

    n = 4096
    x = np.arange(n, dtype=np.float32) / 7
    short = httpx.Client(base_url=url, timeout=20)
    path, auth = make_system(short)
    r = short.post(path + "/executables", json={"source": "builtin:square"}, headers=auth)
    assert r.status_code == 201, r.text
    buf = short.post(path + "/buffers", json={"pool": 1, "size": 4 * n}, headers=auth)
    addr = buf.json()["address"]
    r = short.post(f"{path}/buffers/{addr}/allow-access", json={"agents": [1]}, headers=auth)
    assert r.status_code == 200, r.text
    q2 = short.post(path + "/queues", json={"agent": 1, "size": 64}, headers=auth).json()
    octet = {**auth, "Content-Type": "application/octet-stream"}
    r = short.put(f"{path}/buffers/{addr}/bytes", content=x.tobytes(), headers=octet)
    assert r.status_code == 200, r.text
    body = {"kernel": "square", "grid": n, "workgroup": 256, "args": [addr, addr, n]}
    r = short.post(f"{path}/queues/{q2['id']}/dispatch", json=body, headers=auth)
    assert r.status_code == 201, r.text
    done = short.post(
        f"{path}/signals/{r.json()['signal']}/wait",
        json={"condition": "EQ", "compare_value": 0},
        headers=auth,
    )
    assert done.status_code == 200 and done.json()["value"] == 0, done.text
    got = short.get(
        f"{path}/buffers/{addr}/bytes", headers={**auth, "Accept": "application/octet-stream"}
    )
    assert np.array_equal(np.frombuffer(got.content, np.float32), x * x)
    assert short.delete(path, headers=auth).status_code == 204
    assert waiter.is_alive() and "r" not in answer  # ... while the other wait goes on

    with rocr.init(preset="teaching") as rt:  # the same steps on a local machine
        gpu = rt.gpus[0]
        k = rt.load_code_object("builtin:square").kernel("square")
        local = rt.cpu.pools()[1].allocate(4 * n)
        rt.allow_access([gpu], local)
        lq = gpu.create_queue(64)
        local.write(x.tobytes(), 0)
        lq.dispatch(k, grid=n, workgroup=256, args=(local, local, n)).wait()
        assert done.json()["host_ns"] == rt.now_ns

    assert c.delete(busy, headers=busy_auth).status_code == 204
    waiter.join(JOIN_S)
    assert answer["r"].status_code == 404
