"""Bad input over HTTP gets a 4xx with the real hsa_status_t, never a 5xx; the server survives.

The sweep sends every route of the OpenAPI document malformed JSON, wrong types, out-of-range
numbers and unknown ids. HSAEMU_FUZZ_ROUNDS=N adds N rounds of random bodies (default 0).
"""

import json
import os
import random

import pytest

from rocr.service.schemas import ServerLimits
from rocr.service.systems import ServedSystem
from rocr.service.testing import in_process_client

FUZZ_ROUNDS = int(os.environ.get("HSAEMU_FUZZ_ROUNDS", "0"))

BAD_BODIES = [
    b"",
    b"{not json",
    b"[]",
    b"null",
    b'"text"',
    json.dumps({"unexpected": 1}).encode(),
    json.dumps(
        {
            "pool": -1,
            "size": 2**70,
            "agent": "gpu",
            "agents": [2**40],
            "value": 1e308,
            "delta": -5,
            "expected": "a",
            "condition": "LESS",
            "compare_value": 2**64,
            "timeout_ns": -1,
            "initial": 2**63,
            "grid": [0, 0, 0, 0],
            "workgroup": 0,
            "kernel": "nope",
            "args": [[1]],
            "source": "/etc/passwd",
            "duration_ns": -1,
            "mask": [],
            "priority": 99,
            "data": "!!",
            "raw": "AAAA",
            "offset": -3,
        }
    ).encode(),
    json.dumps(
        {
            "pool": 10**6,
            "size": 10**12,
            "agent": 7,
            "agents": [0, 9],
            "value": -(2**63),
            "delta": 2**62,
            "expected": 0,
            "condition": "EQ",
            "compare_value": 0,
            "timeout_ns": 0,
            "initial": -1,
            "grid": 0,
            "workgroup": [1024, 1024],
            "kernel": "square",
            "args": [1.5, -1, 2**64],
            "source": "builtin:nope",
            "until_idle": True,
            "limit_ns": 0,
            "mask": [0],
            "priority": -3,
            "data": "AAAA",
            "raw": "A" * 88,
            "type": "KERNEL_DISPATCH",
            "grid_size_x": 0,
            "header": 0,
        }
    ).encode(),
]
BAD_IDS = ["-1", "99999999999999999999999999", "abc", "0x10"]
OCTETS = [b"", b"\0" * 63, b"\xff" * 64]
QUERY = "?offset=-1&size=abc&since=-5&agent=x"


@pytest.fixture
def api():
    # The sweep creates a system per route: one client, faster than the default creation rate.
    limits = ServerLimits(max_wait_ms=100, create_burst=1000)
    with in_process_client(limits=limits) as c:
        yield c


def make_system(c):
    d = c.post("/v1/systems", json={"preset": "teaching"}).json()
    path, auth = f"/v1/systems/{d['id']}", {"Authorization": f"Bearer {d['token']}"}
    buf = c.post(path + "/buffers", json={"pool": 1, "size": 4096}, headers=auth).json()
    q = c.post(path + "/queues", json={"agent": 1}, headers=auth).json()
    sig = c.post(path + "/signals", json={"initial": 1}, headers=auth).json()
    exe = c.post(path + "/executables", json={"source": "builtin"}, headers=auth).json()
    ids = {
        "system_id": d["id"],
        "address": str(buf["address"]),
        "queue_id": str(q["id"]),
        "handle": str(sig["handle"]),
        "executable_id": str(exe["id"]),
        "name": "square",
        "node": "1",
        "pool_id": "1",
        "index": "0",
    }
    return path, auth, ids


def check(r, what):
    assert r.status_code < 500, f"{what}: {r.status_code} {r.text[:300]}"
    if r.status_code >= 400:
        body = r.json()
        assert body["status"].startswith("HSA_STATUS_"), what
        assert isinstance(body["code"], int) and body["message"], what


def test_every_route_answers_bad_input_with_4xx(api):
    doc = api.get("/openapi.json").json()
    json_type = {"Content-Type": "application/json"}
    octet_type = {"Content-Type": "application/octet-stream"}
    for route, ops in doc["paths"].items():
        if "{system_id}" not in route:
            continue
        for method in ops:
            _, auth, ids = make_system(api)
            url = route.format(**ids)
            # Routes that take no body see only a couple; the others all of them.
            bodies = BAD_BODIES if method in ("post", "put") else BAD_BODIES[1:2]
            for body in bodies:
                r = api.request(method, url + QUERY, content=body, headers={**auth, **json_type})
                check(r, f"{method.upper()} {url} {body[:40]!r}")
            r = api.request(method, url, content=BAD_BODIES[-1], headers=auth)
            check(r, f"{method.upper()} {url} (no content type)")
            for raw in OCTETS if method in ("post", "put") else ():
                r = api.request(method, url, content=raw, headers={**auth, **octet_type})
                check(r, f"{method.upper()} {url} octets {len(raw)}")
            for key in ids:
                if "{" + key + "}" not in route or key == "system_id":
                    continue
                for bad in BAD_IDS:
                    bad_url = route.format(**{**ids, key: bad})
                    r = api.request(
                        method, bad_url, content=BAD_BODIES[-1], headers={**auth, **json_type}
                    )
                    check(r, f"{method.upper()} {bad_url}")
            api.delete(f"/v1/systems/{ids['system_id']}", headers=auth)
    assert api.get("/healthz").json() == {"status": "ok", "systems": 0, "version": "1.0.0"}


@pytest.mark.skipif(FUZZ_ROUNDS == 0, reason="set HSAEMU_FUZZ_ROUNDS to fuzz with random bodies")
def test_random_bodies(api):
    rng = random.Random(5)
    doc = api.get("/openapi.json").json()
    routes = [(r, m) for r, ops in doc["paths"].items() if "{system_id}" in r for m in ops]
    values = [None, -1, 0, 1, 2**63, 2**64, -(2**63) - 1, 1.5, "x", "", [], {}, True, [0] * 6]
    keys = ["pool", "size", "agent", "value", "condition", "compare_value", "grid", "args"]
    for _ in range(FUZZ_ROUNDS):
        route, method = rng.choice(routes)
        _, auth, ids = make_system(api)
        body = {k: rng.choice(values) for k in rng.sample(keys, rng.randint(0, len(keys)))}
        r = api.request(method, route.format(**ids), json=body, headers=auth)
        check(r, f"{method} {route} {body}")
        api.delete(f"/v1/systems/{ids['system_id']}", headers=auth)


def test_malformed_json_is_a_422_with_the_standard_detail(api):
    path, auth, _ = make_system(api)
    r = api.post(
        path + "/buffers", content=b"{bad", headers={**auth, "Content-Type": "application/json"}
    )
    assert r.status_code == 422
    body = r.json()
    assert body["status"] == "HSA_STATUS_ERROR_INVALID_ARGUMENT" and body["code"] == 0x1001
    assert "not valid JSON" in body["message"]
    assert body["detail"][0]["type"] == "json_invalid"
    r = api.post(path + "/buffers", json={"pool": "fine", "size": 64}, headers=auth)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "pool"]
    r = api.post(path + "/buffers", json={"pool": 1, "size": 64, "colour": 1}, headers=auth)
    assert r.status_code == 422 and "colour" in r.json()["message"]


def test_runtime_refusals_keep_their_status(api):
    path, auth, ids = make_system(api)
    r = api.post(path + "/queues", json={"agent": 1, "size": 100}, headers=auth)
    assert r.status_code == 400 and r.json()["status"] == "HSA_STATUS_ERROR_INVALID_ARGUMENT"
    assert "power of two" in r.json()["message"]
    r = api.post(path + "/queues", json={"agent": 0}, headers=auth)
    assert r.json()["status"] == "HSA_STATUS_ERROR_INVALID_AGENT"
    r = api.post(path + "/buffers", json={"pool": 4, "size": 64}, headers=auth)
    assert r.status_code == 400 and r.json()["status"] == "HSA_STATUS_ERROR_INVALID_ALLOCATION"
    r = api.get(path + "/queues/77", headers=auth)
    assert r.status_code == 404 and r.json()["status"] == "HSA_STATUS_ERROR_INVALID_QUEUE"
    r = api.get(path + "/signals/5", headers=auth)
    assert r.status_code == 404 and r.json()["status"] == "HSA_STATUS_ERROR_INVALID_SIGNAL"
    r = api.get(path + f"/executables/{ids['executable_id']}/kernels/sqrt", headers=auth)
    assert r.status_code == 404 and r.json()["status"] == "HSA_STATUS_ERROR_INVALID_SYMBOL_NAME"
    r = api.post(path + "/executables", json={"source": "/etc/hostname"}, headers=auth)
    assert r.status_code == 400 and r.json()["status"] == "HSA_STATUS_ERROR_INVALID_FILE"
    r = api.post(
        path + "/executables",
        content=b"\x7fELF" + bytes(60),
        headers={**auth, "Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 400 and r.json()["status"] == "HSA_STATUS_ERROR_INVALID_CODE_OBJECT"
    r = api.put(
        path + f"/buffers/{ids['address']}/bytes",
        content=b"x",
        headers={**auth, "Content-Type": "text/plain"},
    )
    assert r.status_code == 415
    r = api.get("/v1/nowhere")
    assert r.status_code == 404 and r.json()["status"].startswith("HSA_STATUS_")


def test_an_unexpected_exception_is_a_500_and_the_server_goes_on(monkeypatch):
    with in_process_client(raise_server_exceptions=False) as c:
        path, auth, _ = make_system(c)

        def broken(self):
            raise RuntimeError("emulator bug")

        monkeypatch.setattr(ServedSystem, "info", broken)
        r = c.get(path, headers=auth)
        assert r.status_code == 500
        assert r.json()["status"] == "HSA_STATUS_ERROR"
        assert "RuntimeError: emulator bug" in r.json()["message"]
        monkeypatch.undo()
        assert c.get(path, headers=auth).status_code == 200
        assert c.get(path + "/agents", headers=auth).status_code == 200
