"""Every server limit: a request past it gets a 4xx naming the limit and its value."""

import threading

import pytest

from rocr.service.schemas import ServerLimits
from rocr.service.testing import in_process_client

LIMITS = ServerLimits(
    max_systems=2,
    max_memory_per_system=1 << 20,
    max_queues_per_process=2,
    max_signals_per_system=3,
    max_body_bytes=8192,
    max_wait_ms=200,
    max_gpus=2,
    max_compute_units=8,
    max_trace_events=40,
)


@pytest.fixture
def api():
    with in_process_client(limits=LIMITS) as c:
        yield c


def new_system(c, **body):
    r = c.post("/v1/systems", json={"preset": "teaching", **body})
    assert r.status_code == 201, r.text
    d = r.json()
    return f"/v1/systems/{d['id']}", {"Authorization": f"Bearer {d['token']}"}


def assert_limit(r, http_status, name):
    assert r.status_code == http_status, r.text
    body = r.json()
    assert body["limit"] == {"name": name, "value": getattr(LIMITS, name)}
    assert name in body["message"] and str(getattr(LIMITS, name)) in body["message"]
    assert body["status"] == "HSA_STATUS_ERROR_OUT_OF_RESOURCES"


def test_max_systems(api):
    new_system(api)
    path, auth = new_system(api)
    assert_limit(api.post("/v1/systems", json={"preset": "teaching"}), 429, "max_systems")
    api.delete(path, headers=auth)
    new_system(api)  # room again


def test_max_memory_per_system(api):
    path, auth = new_system(api)
    ok = api.post(path + "/buffers", json={"pool": 1, "size": 512 * 1024}, headers=auth)
    assert ok.status_code == 201
    over = api.post(path + "/buffers", json={"pool": 1, "size": 600 * 1024}, headers=auth)
    assert_limit(over, 429, "max_memory_per_system")
    api.delete(path + f"/buffers/{ok.json()['address']}", headers=auth)
    again = api.post(path + "/buffers", json={"pool": 1, "size": 600 * 1024}, headers=auth)
    assert again.status_code == 201
    info = api.get(path, headers=auth).json()
    assert info["memory_bytes"] == 600 * 1024


def test_max_queues_per_process(api):
    path, auth = new_system(api)
    for _ in range(2):
        assert api.post(path + "/queues", json={"agent": 1}, headers=auth).status_code == 201
    assert_limit(
        api.post(path + "/queues", json={"agent": 1}, headers=auth), 429, "max_queues_per_process"
    )


def test_max_signals_per_system(api):
    path, auth = new_system(api)
    for _ in range(3):
        assert api.post(path + "/signals", json={}, headers=auth).status_code == 201
    assert_limit(api.post(path + "/signals", json={}, headers=auth), 429, "max_signals_per_system")


def test_max_body_bytes(api):
    path, auth = new_system(api)
    buf = api.post(path + "/buffers", json={"pool": 1, "size": 65536}, headers=auth).json()
    url = path + f"/buffers/{buf['address']}/bytes"
    octet = {**auth, "Content-Type": "application/octet-stream"}
    assert api.put(url, content=b"\1" * 8192, headers=octet).status_code == 200
    assert_limit(api.put(url, content=b"\1" * 8193, headers=octet), 413, "max_body_bytes")

    def chunks():  # no Content-Length: the limit applies as the body arrives
        for _ in range(3):
            yield b"\2" * 4000

    assert_limit(api.put(url, content=chunks(), headers=octet), 413, "max_body_bytes")
    # Reads are bounded the same way.
    assert_limit(api.get(url, headers=auth), 422, "max_body_bytes")
    assert api.get(url + "?size=8192", headers=auth).status_code == 200


def test_max_wait_ms(api):
    path, auth = new_system(api)
    sig = api.post(path + "/signals", json={"initial": 1}, headers=auth).json()
    r = api.post(
        path + f"/signals/{sig['handle']}/wait",
        json={"condition": "LT", "compare_value": 1, "wall_timeout_ms": 201},
        headers=auth,
    )
    assert_limit(r, 422, "max_wait_ms")


def test_a_busy_system_answers_after_max_wait_ms(api):
    path, auth = new_system(api)
    served = next(iter(api.app.state.registry.all()))
    served.lock.acquire()  # as if a long simulation held the system
    try:
        assert_limit(api.get(path + "/agents", headers=auth), 409, "max_wait_ms")
    finally:
        served.lock.release()
    assert api.get(path + "/agents", headers=auth).status_code == 200


def test_spec_limits(api):
    assert_limit(api.post("/v1/systems", json={"spec": {"num_gpus": 3}}), 422, "max_gpus")
    r = api.post("/v1/systems", json={"preset": "teaching", "spec": {"gpu": {"num_cus": 9}}})
    assert_limit(r, 422, "max_compute_units")
    r = api.post("/v1/systems", json={"preset": "teaching", "spec": {"gpu": {"hqd_slots": 10**9}}})
    assert r.status_code == 422 and "HQD" in r.json()["message"]


def test_max_trace_events_keeps_the_server_small(api):
    path, auth = new_system(api)
    for _ in range(LIMITS.max_trace_events):
        api.post(path + "/trace/markers", json={"name": "tick"}, headers=auth)
    page = api.get(path + "/trace/events", headers=auth).json()
    kept = page["total"] - page["dropped"]
    assert page["dropped"] > 0 and 0 < kept <= LIMITS.max_trace_events
    # The newest events are the ones kept: the last marker is on the last page.
    assert page["events"][-1]["name"] == "tick" and len(page["events"]) == kept
    assert page["next"] == page["total"]


def test_limits_hold_under_concurrent_creation(api):
    codes = []

    def create():
        codes.append(api.post("/v1/systems", json={"preset": "teaching"}).status_code)

    threads = [threading.Thread(target=create) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(codes) == [201, 201, 429, 429, 429, 429]
