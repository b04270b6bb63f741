"""Signals over HTTP: the atomics, and waits that finish, time out, or can never finish."""

import threading
import time

import pytest

from rocr.service.schemas import ServerLimits
from rocr.service.testing import in_process_client


@pytest.fixture
def api():
    with in_process_client(limits=ServerLimits(max_wait_ms=5000)) as c:
        yield c


def system(c):
    d = c.post("/v1/systems", json={"preset": "teaching"}).json()
    return f"/v1/systems/{d['id']}", {"Authorization": f"Bearer {d['token']}"}


def test_signal_operations(api):
    path, auth = system(api)
    sig = api.post(path + "/signals", json={"initial": 5}, headers=auth).json()
    assert sig["interrupt"] and sig["event_id"] is not None and sig["value"] == 5
    sp = f"{path}/signals/{sig['handle']}"

    def op(name, **body):
        r = api.post(f"{sp}/{name}", json=body, headers=auth)
        assert r.status_code == 200, r.text
        return r.json()["old"]

    assert op("add", value=3) == 5
    assert op("subtract", value=1) == 8
    assert op("exchange", value=12) == 7
    assert op("and", value=4) == 12
    assert op("or", value=1) == 4
    assert op("xor", value=7) == 5
    assert op("cas", expected=2, value=40) == 2
    assert op("cas", expected=1, value=40) == 40
    assert api.put(f"{sp}/value", json={"value": -7}, headers=auth).json()["value"] == -7
    assert api.get(sp, headers=auth).json()["value"] == -7
    user = api.post(path + "/signals", json={"interrupt": False}, headers=auth).json()
    assert user["interrupt"] is False and user["event_id"] is None
    assert api.delete(sp, headers=auth).status_code == 204
    assert api.get(sp, headers=auth).status_code == 404
    no_ts = api.get(f"{path}/signals/{user['handle']}/dispatch-time", headers=auth)
    assert no_ts.status_code == 409 and no_ts.json()["status"] == "HSA_STATUS_ERROR_INVALID_SIGNAL"


def test_a_wait_that_can_never_finish_answers_at_once(api):
    path, auth = system(api)
    sig = api.post(path + "/signals", json={"initial": 1}, headers=auth).json()
    r = api.post(
        f"{path}/signals/{sig['handle']}/wait",
        json={"condition": "EQ", "compare_value": 0},
        headers=auth,
    )
    assert r.status_code == 409
    body = r.json()
    assert body["status"] == "HSA_STATUS_ERROR" and "can never return" in body["message"]
    # With a timeout the same wait is no error: it returns the value once the time has passed.
    timed = api.post(
        f"{path}/signals/{sig['handle']}/wait",
        json={"condition": "EQ", "compare_value": 0, "timeout_ns": 10**9},
        headers=auth,
    ).json()
    assert timed["value"] == 1 and timed["satisfied"] is False
    satisfied = api.post(
        f"{path}/signals/{sig['handle']}/wait",
        json={"condition": "GTE", "compare_value": 1},
        headers=auth,
    ).json()
    assert satisfied["satisfied"] and satisfied["value"] == 1


def test_a_wait_times_out_in_simulated_time(api):
    path, auth = system(api)
    api.post(path + "/executables", json={"source": "builtin:square"}, headers=auth)
    buf = api.post(path + "/buffers", json={"pool": 1, "size": 1 << 16}, headers=auth).json()
    api.post(f"{path}/buffers/{buf['address']}/allow-access", json={"agents": [1]}, headers=auth)
    q = api.post(path + "/queues", json={"agent": 1}, headers=auth).json()
    n = 1 << 14
    addr = buf["address"]
    d = api.post(
        f"{path}/queues/{q['id']}/dispatch",
        json={"kernel": "square", "grid": n, "workgroup": 64, "args": [addr, addr, n]},
        headers=auth,
    ).json()
    before = api.get(path + "/clock", headers=auth).json()["host_ns"]
    r = api.post(
        f"{path}/signals/{d['signal']}/wait",
        json={"condition": "LT", "compare_value": 1, "timeout_ns": 1000},
        headers=auth,
    ).json()
    assert r["value"] == 1 and r["satisfied"] is False
    assert 1000 <= r["host_ns"] - before < 1000 + 1000
    done = api.post(
        f"{path}/signals/{d['signal']}/wait",
        json={"condition": "LT", "compare_value": 1},
        headers=auth,
    ).json()
    assert done["satisfied"] and done["value"] == 0


def test_a_blocked_wait_lets_other_callers_act(api):
    """The waiter holds no lock while it blocks: another caller's store ends the wait."""
    path, auth = system(api)
    sig = api.post(path + "/signals", json={"initial": 1}, headers=auth).json()
    result = {}

    def waiter():
        result["r"] = api.post(
            f"{path}/signals/{sig['handle']}/wait",
            json={"condition": "EQ", "compare_value": 0, "wall_timeout_ms": 4000},
            headers=auth,
        )

    t = threading.Thread(target=waiter)
    t.start()
    deadline = time.monotonic() + 5
    while api.get(path, headers=auth).json()["waiters"] == 0:
        assert time.monotonic() < deadline, "the wait never started"
        time.sleep(0.01)
    # Reads and unrelated writes leave the waiter blocked; the store ends it.
    api.post(path + "/signals", json={}, headers=auth)
    assert (
        api.put(
            f"{path}/signals/{sig['handle']}/value", json={"value": 0}, headers=auth
        ).status_code
        == 200
    )
    t.join(timeout=10)
    r = result["r"]
    assert r.status_code == 200, r.text
    assert r.json()["satisfied"] and r.json()["attempts"] == 2
    assert api.get(path, headers=auth).json()["waiters"] == 0


def test_a_blocked_wait_gives_up_with_the_diagnosis():
    with in_process_client(limits=ServerLimits(max_wait_ms=300)) as c:
        path, auth = system(c)
        sig = c.post(path + "/signals", json={"initial": 1}, headers=auth).json()
        r = c.post(
            f"{path}/signals/{sig['handle']}/wait",
            json={"condition": "EQ", "compare_value": 0, "wall_timeout_ms": 150},
            headers=auth,
        )
        assert r.status_code == 409
        assert "can never return" in r.json()["message"]
        assert "150 ms of real time" in r.json()["message"]
