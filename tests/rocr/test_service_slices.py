"""Served emulation is bounded: it runs in slices, gives way between them, and stops when asked.

A wait on a huge grid leaves its system to other requests between slices, and other systems
and /healthz to everyone; DELETE, a client hanging up and SIGTERM stop it; a dispatch or a run
past the server's limits is refused up front; an impossible wait answers; create/delete cycles
do not grow the server. Bounds on real time are generous (a slow shared machine): the tests
assert what happened (who answered while what was still running), and join with a timeout
only so that a regression fails instead of hanging.
"""

import contextlib
import ctypes
import gc
import os
import signal
import threading
import time

import httpx
import pytest

from hw_model.engine import Engine
from rocr.service.schemas import ServerLimits
from rocr.service.testing import ServeProcess, ServerThread, in_process_client, until

HUGE = 1 << 31  # work-items: hours of emulation were it run to the end
JOIN_S = 60  # a regression fails here instead of hanging the suite


def make_system(c, prefix=""):
    d = c.post(prefix + "/v1/systems", json={"preset": "teaching"}).json()
    return f"{prefix}/v1/systems/{d['id']}", {"Authorization": f"Bearer {d['token']}"}, d["id"]


def huge_dispatch(c, path, auth):
    """An `empty` kernel over 2^31 work-items on a new queue; its completion signal."""
    assert c.post(path + "/executables", json={"source": "builtin:empty"}, headers=auth).is_success
    q = c.post(path + "/queues", json={"agent": 1, "size": 64}, headers=auth).json()
    r = c.post(
        f"{path}/queues/{q['id']}/dispatch",
        json={"kernel": "empty", "grid": HUGE, "workgroup": 1024},
        headers=auth,
    )
    assert r.status_code == 201, r.text
    return r.json()["signal"]


class Waiter(threading.Thread):
    """POST .../wait in a thread of its own (the answer in `.response`)."""

    def __init__(self, url, path, auth, handle, **body):
        super().__init__(daemon=True)
        self.args_ = (url + f"{path}/signals/{handle}/wait", auth, body)
        self.response = None

    def run(self):
        url, auth, body = self.args_
        body = {"condition": "EQ", "compare_value": 0, **body}
        try:
            self.response = httpx.post(url, json=body, headers=auth, timeout=JOIN_S * 2)
        except httpx.HTTPError as e:
            self.response = e


def waiters(c, path, auth):
    return c.get(path, headers=auth).json()["waiters"]


# -- the engine's slice hook -------------------------------------------------------------------


def test_the_slice_hook_stops_a_run_between_events_and_the_run_resumes():
    eng = Engine()
    fired = []
    for i in range(100):
        eng.schedule(10 * (i + 1), fired.append, i)

    class Stop(Exception):
        pass

    def hook():
        raise Stop

    eng.set_slice_hook(hook, 16)
    with pytest.raises(Stop):
        eng.run_until(10_000)
    assert fired == list(range(16))  # whole events only: the 16th fired, the 17th did not
    with pytest.raises(Stop):
        eng.run_while(lambda: True)
    assert fired == list(range(32))
    eng.set_slice_hook(None)
    eng.run_until(10_000)
    assert fired == list(range(100)) and eng.now == 10_000


# -- limits checked up front -------------------------------------------------------------------


def test_a_run_longer_than_max_run_ns_is_refused_naming_the_limit():
    with in_process_client(limits=ServerLimits(max_run_ns=1e9)) as c:
        path, auth, _ = make_system(c)
        r = c.post(path + "/run", json={"duration_ns": 1e15}, headers=auth)
        assert r.status_code == 422 and "max_run_ns" in r.json()["message"]
        assert r.json()["limit"]["name"] == "max_run_ns"
        r = c.post(path + "/run", json={"until_idle": True, "limit_ns": 2e9}, headers=auth)
        assert r.status_code == 422 and "max_run_ns" in r.json()["message"]
        assert c.get(path + "/clock", headers=auth).json()["host_ns"] < 1e9  # nothing ran
        ok = c.post(path + "/run", json={"duration_ns": 1e6}, headers=auth)
        assert ok.status_code == 200 and ok.json()["host_ns"] >= 1e6


def test_a_dispatch_past_max_dispatch_work_is_refused_before_it_is_queued():
    with in_process_client(limits=ServerLimits(max_dispatch_work=1 << 20)) as c:
        path, auth, _ = make_system(c)
        c.post(path + "/executables", json={"source": "builtin:empty"}, headers=auth)
        q = c.post(path + "/queues", json={"agent": 1, "size": 64}, headers=auth).json()
        r = c.post(
            f"{path}/queues/{q['id']}/dispatch",
            json={"kernel": "empty", "grid": HUGE, "workgroup": 1024},
            headers=auth,
        )
        assert r.status_code == 422, r.text
        body = r.json()
        assert body["limit"]["name"] == "max_dispatch_work" and "empty" in body["message"]
        wi = c.get(f"{path}/queues/{q['id']}/write-index", headers=auth).json()["value"]
        assert wi == 0  # nothing was queued
        # A raw kernel dispatch packet is held to the same budget.
        raw = c.put(
            f"{path}/queues/{q['id']}/packets/0",
            json={
                "type": "KERNEL_DISPATCH",
                "grid_size_x": HUGE,
                "workgroup_size_x": 1024,
                "kernel_object": r.json().get("kernel_object", 0),
            },
            headers=auth,
        )
        assert raw.status_code == 422 and raw.json()["limit"]["name"] == "max_dispatch_work"
        slot = c.get(f"{path}/queues/{q['id']}/packets/0", headers=auth).json()
        assert slot["header_fields"]["type"] != "KERNEL_DISPATCH"  # nothing was written
        small = c.post(
            f"{path}/queues/{q['id']}/dispatch",
            json={"kernel": "empty", "grid": 1 << 16, "workgroup": 256},
            headers=auth,
        )
        assert small.status_code == 201


# -- the impossible wait -----------------------------------------------------------------------


def test_an_impossible_wait_with_three_busy_queues_on_two_hqds_answers():
    """Three queues on the two-HQD teaching GPU, each held by a barrier on a signal nobody
    sets (the HW scheduler rotates them for ever), then a wait on another signal nothing will
    change: 409 with the diagnosis, not a request that never returns."""
    with in_process_client(limits=ServerLimits(max_wait_ms=5000)) as c:
        path, auth, _ = make_system(c)
        c.post(path + "/executables", json={"source": "builtin:empty"}, headers=auth)
        never = c.post(path + "/signals", json={"initial": 1}, headers=auth).json()["handle"]
        for _ in range(3):
            q = c.post(path + "/queues", json={"agent": 1, "size": 64}, headers=auth).json()
            qp = f"{path}/queues/{q['id']}"
            d = c.post(
                qp + "/dispatch",
                json={"kernel": "empty", "grid": 1 << 12, "workgroup": 256},
                headers=auth,
            )
            assert d.status_code == 201
            idx = c.post(qp + "/write-index/add", json={"delta": 1}, headers=auth).json()["value"]
            w = c.put(
                f"{qp}/packets/{idx}",
                json={"type": "BARRIER_AND", "dep_signal": [never]},
                headers=auth,
            )
            assert w.status_code == 200, w.text
            c.post(qp + "/doorbell", json={"value": idx}, headers=auth)
        other = c.post(path + "/signals", json={"initial": 1}, headers=auth).json()["handle"]
        out = {}

        def wait():
            out["r"] = c.post(
                f"{path}/signals/{other}/wait",
                json={"condition": "EQ", "compare_value": 0},
                headers=auth,
            )

        t = threading.Thread(target=wait, daemon=True)
        t.start()
        t.join(JOIN_S)
        assert not t.is_alive(), "the impossible wait never answered"
        r = out["r"]
        assert r.status_code == 409 and "can never return" in r.json()["message"]


# -- slices: other requests, other systems, /healthz -------------------------------------------


@pytest.fixture(scope="module")
def srv():
    st = ServerThread(limits=ServerLimits(max_wait_ms=10_000))
    st.start()
    yield st
    st.stop()


@pytest.fixture
def server(srv):
    return srv.url


def _served(srv, sid):
    """The server's own object for system `sid` (the ServerThread runs in this process)."""
    return srv.app.state.registry.get_admin(sid)


def test_a_huge_wait_leaves_its_system_other_systems_and_healthz_to_everyone(server):
    c = httpx.Client(base_url=server, timeout=JOIN_S)
    path, auth, _ = make_system(c)
    sig = huge_dispatch(c, path, auth)
    w = Waiter(server, path, auth, sig)
    w.start()
    until(lambda: waiters(c, path, auth) == 1, "the wait never started")
    # The same system answers between the wait's slices, the device clock moving on.
    t0 = c.get(path + "/clock", headers=auth).json()["device_ps"]
    until(
        lambda: c.get(path + "/clock", headers=auth).json()["device_ps"] > t0,
        "the wait made no progress",
    )
    assert c.get("/healthz").json()["status"] == "ok"
    # Another system's small dispatch and its wait finish.
    p2, a2, _ = make_system(c)
    c.post(p2 + "/executables", json={"source": "builtin:empty"}, headers=a2)
    q2 = c.post(p2 + "/queues", json={"agent": 1, "size": 64}, headers=a2).json()
    d = c.post(
        f"{p2}/queues/{q2['id']}/dispatch",
        json={"kernel": "empty", "grid": 1024, "workgroup": 256},
        headers=a2,
    ).json()
    done = c.post(
        f"{p2}/signals/{d['signal']}/wait",
        json={"condition": "EQ", "compare_value": 0},
        headers=a2,
    )
    assert done.status_code == 200 and done.json()["value"] == 0
    # ... while the huge wait is still in progress.
    assert w.is_alive() and w.response is None and waiters(c, path, auth) == 1
    assert c.delete(p2, headers=a2).status_code == 204
    assert c.delete(path, headers=auth).status_code == 204
    w.join(JOIN_S)
    assert not w.is_alive() and w.response.status_code == 404


def test_delete_during_a_huge_wait_stops_the_work_and_frees_the_machine(srv, server):
    c = httpx.Client(base_url=server, timeout=JOIN_S)
    path, auth, sid = make_system(c)
    sig = huge_dispatch(c, path, auth)
    w = Waiter(server, path, auth, sig)
    w.start()
    until(lambda: waiters(c, path, auth) == 1, "the wait never started")
    engine = _served(srv, sid).rt.system.engine
    fired = engine.events_fired
    until(lambda: engine.events_fired > fired, "the wait made no progress")
    r = c.delete(path, headers=auth)
    assert r.status_code == 204
    w.join(JOIN_S)
    assert not w.is_alive()
    assert w.response.status_code == 404 and "no system" in w.response.json()["message"]
    # Nothing runs the machine any more: its engine stays where it stopped.
    stopped = engine.events_fired
    time.sleep(0.3)
    assert engine.events_fired == stopped
    assert c.get(path, headers=auth).status_code == 404


def test_a_client_hanging_up_mid_wait_stops_the_slices(srv, server):
    c = httpx.Client(base_url=server, timeout=JOIN_S)
    path, auth, sid = make_system(c)
    sig = huge_dispatch(c, path, auth)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            server + f"{path}/signals/{sig}/wait",
            json={"condition": "EQ", "compare_value": 0},
            headers=auth,
            timeout=1.0,
        )
    until(lambda: waiters(c, path, auth) == 0, "the abandoned wait went on")
    engine = _served(srv, sid).rt.system.engine
    stopped = engine.events_fired
    time.sleep(0.3)
    assert engine.events_fired == stopped  # no thread runs the machine for nobody
    assert c.delete(path, headers=auth).status_code == 204


def test_a_run_goes_on_in_slices_and_stops_on_delete(server):
    c = httpx.Client(base_url=server, timeout=JOIN_S)
    path, auth, _ = make_system(c)
    huge_dispatch(c, path, auth)
    out = {}

    def run():
        out["r"] = httpx.post(
            server + path + "/run", json={"until_idle": True}, headers=auth, timeout=JOIN_S
        )

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t0 = c.get(path + "/clock", headers=auth).json()["device_ps"]
    until(
        lambda: c.get(path + "/clock", headers=auth).json()["device_ps"] > t0,
        "the run made no progress",
    )
    assert t.is_alive()  # still running, and the system answered meanwhile
    assert c.delete(path, headers=auth).status_code == 204
    t.join(JOIN_S)
    assert not t.is_alive() and out["r"].status_code == 404


# -- SIGTERM -----------------------------------------------------------------------------------


def test_sigterm_stops_a_busy_server():
    with ServeProcess("--preset", "teaching", start_timeout_s=JOIN_S) as serve:
        c = httpx.Client(base_url=serve.url, timeout=JOIN_S)
        path, auth, _ = make_system(c)
        sig = huge_dispatch(c, path, auth)
        w = Waiter(serve.url, path, auth, sig)
        w.start()
        until(lambda: waiters(c, path, auth) == 1, "the wait never started")
        serve.proc.send_signal(signal.SIGTERM)
        serve.proc.wait(timeout=10)  # raises TimeoutExpired if the busy server did not stop
        w.join(JOIN_S)
        assert not w.is_alive()


# -- create / dispatch / delete cycles ---------------------------------------------------------


def _rss_bytes() -> int:
    """Resident set size once the garbage is collected and glibc has handed its free heap back
    to the system: without malloc_trim, RSS also counts memory freed but kept by the allocator
    (it climbs over the first ~100 cycles, then stays flat — not a leak)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: RSS as it is
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


CYCLES = int(os.environ.get("HSAEMU_CYCLES", "300"))
WARMUP = 20


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc (Linux)")
def test_create_dispatch_delete_cycles_do_not_grow_the_server():
    limits = ServerLimits(create_rate_per_minute=1e9, create_burst=100_000)
    with in_process_client(limits=limits) as c:

        def cycle():
            path, auth, _ = make_system(c)
            c.post(path + "/executables", json={"source": "builtin:empty"}, headers=auth)
            q = c.post(path + "/queues", json={"agent": 1, "size": 64}, headers=auth).json()
            d = c.post(
                f"{path}/queues/{q['id']}/dispatch",
                json={"kernel": "empty", "grid": 4096, "workgroup": 256},
                headers=auth,
            ).json()
            w = c.post(
                f"{path}/signals/{d['signal']}/wait",
                json={"condition": "EQ", "compare_value": 0},
                headers=auth,
            )
            assert w.json()["value"] == 0
            assert c.delete(path, headers=auth).status_code == 204

        for _ in range(WARMUP):  # imports, caches, the threads that serve
            cycle()
        before = _rss_bytes()
        for _ in range(CYCLES):
            cycle()
        grown = _rss_bytes() - before
        assert c.get("/healthz").json()["systems"] == 0
    assert grown < 40 * 2**20, f"RSS grew {grown / 2**20:.1f} MiB over {CYCLES} cycles"


# -- signals count against the system's memory -------------------------------------------------


def test_signals_and_their_events_are_charged_to_the_system():
    with in_process_client(limits=ServerLimits(max_memory_per_system=1 << 16)) as c:
        path, auth, _ = make_system(c)
        before = c.get(path, headers=auth).json()["memory_bytes"]
        made = []
        for _ in range(64):
            r = c.post(path + "/signals", json={"initial": 1}, headers=auth)
            if r.status_code != 201:
                break
            made.append(r.json()["handle"])
        assert r.status_code == 429 and r.json()["limit"]["name"] == "max_memory_per_system"
        assert 0 < len(made) < 64  # memory ran out before max_signals_per_system (1024)
        used = c.get(path, headers=auth).json()["memory_bytes"]
        per = (used - before) / len(made)
        assert c.delete(f"{path}/signals/{made[0]}", headers=auth).status_code == 204
        assert c.get(path, headers=auth).json()["memory_bytes"] == used - per
        user = c.post(path + "/signals", json={"interrupt": False}, headers=auth)
        assert user.status_code == 201
        # A user signal has no KFD event: it costs less than an interrupt signal.
        assert c.get(path, headers=auth).json()["memory_bytes"] < used
