"""Systems over HTTP: creation, ownership by token, expiry, server-level routes."""

import time

import pytest

from rocr.service.schemas import ServerLimits
from rocr.service.testing import in_process_client


@pytest.fixture
def api():
    with in_process_client(admin_token="teacher") as c:
        yield c


def new_system(c, **body):
    r = c.post("/v1/systems", json={"preset": "teaching", **body})
    assert r.status_code == 201, r.text
    d = r.json()
    return f"/v1/systems/{d['id']}", {"Authorization": f"Bearer {d['token']}"}, d


def test_health_limits_presets_and_kernels(api):
    assert api.get("/healthz").json()["status"] == "ok"
    assert api.get("/v1/limits").json()["max_systems"] == ServerLimits().max_systems
    presets = {p["name"]: p for p in api.get("/v1/presets").json()}
    assert presets["teaching"]["num_cus"] == 2 and presets["teaching"]["hqd_slots"] == 2
    kernels = {k["name"]: k for k in api.get("/v1/kernels").json()}
    assert [a["name"] for a in kernels["square"]["args"]] == ["out", "in", "n"]
    assert api.get("/docs").status_code == 200
    assert api.get("/openapi.json").json()["info"]["title"] == "hsaemu"


def test_create_describe_delete(api):
    path, auth, created = new_system(api, name="lab1")
    info = api.get(path, headers=auth).json()
    assert info["preset"] == "teaching" and info["name"] == "lab1"
    assert info["spec"]["gpu"]["num_cus"] == 2
    assert created["info"]["id"] == info["id"]
    agents = api.get(path + "/agents", headers=auth).json()
    assert [a["device_type"] for a in agents] == ["CPU", "GPU"]
    assert api.get("/healthz").json()["systems"] == 1
    assert api.delete(path, headers=auth).status_code == 204
    gone = api.get(path, headers=auth)
    assert gone.status_code == 404
    assert gone.json()["status"] == "HSA_STATUS_ERROR_NOT_INITIALIZED"


def test_spec_overrides_build_the_machine(api):
    path, auth, _ = new_system(api, spec={"gpu": {"num_cus": 3, "hqd_slots": 1}})
    gpu = api.get(path + "/agents/1", headers=auth).json()
    assert gpu["compute_unit_count"] == 3
    assert len(api.get(path + "/gpus/1/cus", headers=auth).json()) == 3
    bad = api.post("/v1/systems", json={"spec": {"gpu": {"num_cus": "many"}}})
    assert bad.status_code == 422 and "gpu.num_cus" in bad.json()["message"]
    typo = api.post("/v1/systems", json={"spec": {"gpus": 2}})
    assert typo.status_code == 422
    unknown = api.post("/v1/systems", json={"preset": "gfx1100"})
    assert unknown.status_code == 422 and "teaching" in unknown.json()["message"]


def test_another_systems_token_learns_nothing(api):
    a_path, a_auth, _ = new_system(api)
    b_path, b_auth, _ = new_system(api)
    buf = api.post(a_path + "/buffers", json={"pool": 1, "size": 64}, headers=a_auth).json()
    stolen = api.get(a_path + f"/buffers/{buf['address']}", headers=b_auth)
    unknown = api.get("/v1/systems/0123456789abcdef/buffers/1", headers=b_auth)
    assert stolen.status_code == unknown.status_code == 404
    # Same body apart from the id: nothing tells whether system A exists.
    a_id = a_path.rsplit("/", 1)[1]
    assert stolen.json()["message"].replace(a_id, "X") == unknown.json()["message"].replace(
        "0123456789abcdef", "X"
    )
    assert api.get(a_path + "/buffers", headers=b_auth).status_code == 404
    assert api.delete(a_path, headers=b_auth).status_code == 404
    assert api.get(a_path, headers=a_auth).status_code == 200
    missing = api.get(a_path)
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    basic = api.get(a_path, headers={"Authorization": "Basic dXNlcjpwdw=="})
    assert basic.status_code == 401


def test_admin_token_lists_and_deletes(api):
    path, auth, _ = new_system(api)
    new_system(api)
    teacher = {"Authorization": "Bearer teacher"}
    assert len(api.get("/v1/systems", headers=teacher).json()) == 2
    assert api.get("/v1/systems", headers=auth).status_code == 403
    assert api.get(path + "/stats", headers=teacher).status_code == 200
    assert api.delete(path, headers=teacher).status_code == 204
    assert api.get(path, headers=auth).status_code == 404


def test_idle_systems_expire():
    limits = ServerLimits(idle_timeout_s=0.2)
    with in_process_client(limits=limits) as c:
        path, auth, _ = new_system(c)
        assert c.get(path, headers=auth).status_code == 200
        time.sleep(0.3)
        r = c.get(path, headers=auth)
        assert r.status_code == 404 and "expired" in r.json()["message"]
        assert c.get("/healthz").json()["systems"] == 0
