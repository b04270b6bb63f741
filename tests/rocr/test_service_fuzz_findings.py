"""What the API fuzz pass found, pinned: Allow on a 405, strict copy bodies, unknown query
parameters refused."""

from rocr.service.app import create_app
from rocr.service.testing import in_process_client


def _system(c):
    d = c.post("/v1/systems", json={"preset": "teaching"}).json()
    return f"/v1/systems/{d['id']}", {"Authorization": f"Bearer {d['token']}"}


def test_405_allow_names_every_method_of_the_path():
    with in_process_client(create_app(default_preset="teaching")) as c:
        r = c.request("PATCH", "/v1/systems")
        assert r.status_code == 405
        assert set(r.headers["allow"].split(", ")) >= {"GET", "POST"}
        base, auth = _system(c)
        r = c.request("PATCH", base, headers=auth)
        assert r.status_code == 405
        assert set(r.headers["allow"].split(", ")) >= {"GET", "DELETE"}


def test_copy_bodies_are_strict():
    with in_process_client(create_app(default_preset="teaching")) as c:
        base, auth = _system(c)
        r = c.put(f"{base}/profiling/async-copy", json={"enable": 0}, headers=auth)
        assert r.status_code == 422, r.text
        assert r.json()["status"] == "HSA_STATUS_ERROR_INVALID_ARGUMENT"
        r = c.put(f"{base}/profiling/async-copy", json={"enable": False}, headers=auth)
        assert r.status_code < 300, r.text


def test_unknown_query_parameters_are_refused_by_name():
    with in_process_client(create_app(default_preset="teaching")) as c:
        base, auth = _system(c)
        r = c.get(f"{base}/trace/events", params={"since": 0, "sinse": 1}, headers=auth)
        assert r.status_code == 422, r.text
        assert "'sinse'" in r.json()["message"] and "since" in r.json()["message"]
        assert c.get(f"{base}/trace/events", params={"since": 0}, headers=auth).is_success
