"""The server under hostile use: credentials before bodies, per-client quotas and API keys,
no 500 for malformed input, strict types, and code objects and trace markers charged by
what they really hold."""

import hashlib
import json
import socket
import warnings

import anyio
import pytest

import rocr
from hw_model.kernels import CODE_OBJECT_MAGIC, builtin_code_object, decode_code_object
from rocr.cli import main
from rocr.service.app import create_app
from rocr.service.schemas import ServerLimits
from rocr.service.systems import ServedSystem
from rocr.service.testing import ServerThread, in_process_client

MiB = 1 << 20
JSON = {"Content-Type": "application/json"}
OCTET = {"Content-Type": "application/octet-stream"}
NESTED = "[" * 100_000 + "]" * 100_000
ADMIN = "admin-token-for-the-tests"


def new_system(c, headers=None):
    r = c.post("/v1/systems", json={"preset": "teaching"}, headers=headers or {})
    assert r.status_code == 201, r.text
    d = r.json()
    return f"/v1/systems/{d['id']}", {"Authorization": f"Bearer {d['token']}"}


def assert_error(r, http_status, status=None):
    assert r.status_code == http_status, r.text
    body = r.json()
    assert body["status"].startswith("HSA_STATUS_") and isinstance(body["code"], int)
    assert body["message"]
    if status is not None:
        assert body["status"] == status, body
    return body


def client_at(app, address):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*starlette.testclient.*")
        from starlette.testclient import TestClient
    return TestClient(app, client=(address, 40000))


# -- credentials before bodies -----------------------------------------------------------------


def call_asgi(app, method, path, headers):
    """Calls the app as a server would, with a 16 MiB body announced; returns the answer's
    status and headers and how many times the app asked for body bytes."""
    reads = 0
    sent = []

    async def receive():
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": b"\0" * MiB, "more_body": True}

    async def send(msg):
        sent.append(msg)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"testserver"),
            (b"content-type", b"application/octet-stream"),
            (b"content-length", str(16 * MiB).encode()),
            *((k.lower().encode(), v.encode()) for k, v in headers.items()),
        ],
        "client": ("203.0.113.9", 5555),
        "server": ("testserver", 80),
        "state": {},
    }
    anyio.run(app, scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start["status"], dict(start["headers"]), reads


def test_an_unauthenticated_body_is_never_read():
    app = create_app(api_keys=["key-one"], admin_token=ADMIN)
    with in_process_client(app) as c:
        path, auth = new_system(c, {"X-API-Key": "key-one"})
        other, other_auth = new_system(c, {"X-API-Key": "key-one"})
        buf = c.post(path + "/buffers", json={"pool": 1, "size": 4096}, headers=auth).json()
    url = f"{path}/buffers/{buf['address']}/bytes"
    cases = [
        (url, {}, 401),  # no token
        (url, {"Authorization": "Bearer not-the-token"}, 404),
        (url, other_auth, 404),  # another system's token
        (url, {"Authorization": "Basic abc"}, 401),
        ("/v1/systems/0123456789abcdef/buffers/1/bytes", auth, 404),  # unknown id
    ]
    for target, headers, expected in cases:
        status, resp_headers, reads = call_asgi(app, "PUT", target, headers)
        assert (status, reads) == (expected, 0), (target, headers)
        # The body was not drained: the connection cannot carry another request.
        assert resp_headers[b"connection"] == b"close"
    # Creating a system without a key, or with a wrong one, reads no body either.
    for headers, expected in (({}, 401), ({"X-API-Key": "nope"}, 403)):
        status, _, reads = call_asgi(app, "POST", "/v1/systems", headers)
        assert (status, reads) == (expected, 0)


def test_an_authenticated_body_is_read_and_bounded():
    limits = ServerLimits(max_body_bytes=8192)
    with in_process_client(limits=limits) as c:
        path, auth = new_system(c)
        buf = c.post(path + "/buffers", json={"pool": 1, "size": 65536}, headers=auth).json()
        url = f"{path}/buffers/{buf['address']}/bytes"
        assert c.put(url, content=b"\7" * 8192, headers={**auth, **OCTET}).status_code == 200

        def chunks():  # no Content-Length: the limit applies while the route reads
            for _ in range(4):
                yield b"\1" * 4096

        r = c.put(url, content=chunks(), headers={**auth, **OCTET})
        body = assert_error(r, 413, "HSA_STATUS_ERROR_OUT_OF_RESOURCES")
        assert body["limit"] == {"name": "max_body_bytes", "value": 8192}
        assert r.headers["connection"] == "close"
        r = c.post(
            path + "/buffers",
            content=json.dumps({"pool": 1, "size": 64}) + " " * 9000,
            headers={**auth, **JSON},
        )
        assert_error(r, 413)
        got = c.get(url + "?size=4", headers={**auth, "Accept": "application/octet-stream"})
        assert got.content == b"\7" * 4


def test_over_a_socket_a_refused_request_is_answered_before_its_body_arrives():
    with ServerThread() as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=20) as sock:
            # 16 MiB announced, none sent: today's server would wait for the body forever.
            sock.sendall(
                b"PUT /v1/systems/0123456789abcdef/buffers/4096/bytes HTTP/1.1\r\n"
                b"Host: x\r\nContent-Type: application/octet-stream\r\n"
                b"Content-Length: 16777216\r\n\r\n"
            )
            answer = b""
            while chunk := sock.recv(65536):  # until the server closes the connection
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 401")
        assert b"connection: close" in head.lower()
        assert json.loads(body)["status"] == "HSA_STATUS_ERROR"


# -- per-client limits, API keys, the admin token ------------------------------------------------


def test_one_client_cannot_take_every_slot():
    app = create_app(ServerLimits(max_systems=8, max_systems_per_client=2))
    with in_process_client(app) as a:
        b = client_at(app, "198.51.100.7")
        first, first_auth = new_system(a)
        new_system(a)
        r = a.post("/v1/systems", json={"preset": "teaching"})
        body = assert_error(r, 429, "HSA_STATUS_ERROR_OUT_OF_RESOURCES")
        assert body["limit"] == {"name": "max_systems_per_client", "value": 2}
        assert int(r.headers["Retry-After"]) >= 1
        new_system(b)  # another address still gets one
        assert a.delete(first, headers=first_auth).status_code == 204
        new_system(a)  # room again for the first client


def test_creation_rate_is_limited_per_client():
    app = create_app(ServerLimits(create_burst=2, create_rate_per_minute=1))
    with in_process_client(app) as a:
        for _ in range(2):
            path, auth = new_system(a)
            a.delete(path, headers=auth)
        r = a.post("/v1/systems", json={"preset": "teaching"})
        body = assert_error(r, 429)
        assert body["limit"] == {"name": "create_rate_per_minute", "value": 1.0}
        assert 1 <= int(r.headers["Retry-After"]) <= 60
        new_system(client_at(app, "198.51.100.8"))  # another client has its own bucket


def test_require_key_makes_creation_need_an_api_key():
    beta = "sha256:" + hashlib.sha256(b"key-beta").hexdigest()
    app = create_app(
        ServerLimits(max_systems_per_client=1), api_keys=["key-alpha", beta], admin_token=ADMIN
    )
    with in_process_client(app) as c:
        r = c.post("/v1/systems", json={"preset": "teaching"})
        assert_error(r, 401)
        assert "X-API-Key" in r.json()["message"]
        assert_error(c.post("/v1/systems", json={}, headers={"X-API-Key": "guess"}), 403)
        new_system(c, {"X-API-Key": "key-alpha"})
        new_system(c, {"X-API-Key": "key-beta"})  # given as its digest in the key list
        # Clients are keys, not addresses: key-alpha has used its one system.
        r = c.post("/v1/systems", json={"preset": "teaching"}, headers={"X-API-Key": "key-alpha"})
        assert r.json()["limit"]["name"] == "max_systems_per_client"
        # The admin token needs no key and is not held to the per-client limits.
        for _ in range(2):
            new_system(c, {"Authorization": f"Bearer {ADMIN}"})
        # Only digests are kept.
        reg = app.state.registry
        assert all("key-alpha" not in repr(v) for v in vars(reg).values())


def test_serve_reads_keys_and_the_admin_token_from_files(tmp_path, monkeypatch, capsys):
    import rocr.service.server as server
    from rocr.service.server import admin_token

    seen = {}
    monkeypatch.setattr(server, "serve", lambda *a, **kw: seen.update(kw))
    monkeypatch.setattr("rocr.cli.check_listen", lambda host, port: None)
    keys = tmp_path / "keys"
    keys.write_text("# class of 2025\nkey-one\n\nkey-two\n")
    token_file = tmp_path / "admin"
    token_file.write_text(ADMIN + "\n")
    monkeypatch.delenv("HSAEMU_ADMIN_TOKEN", raising=False)
    argv = ["serve", "--require-key", str(keys), "--admin-token-file", str(token_file)]
    assert main(argv) == 0
    assert seen["api_keys"] == ["key-one", "key-two"] and seen["admin_token"] == ADMIN
    monkeypatch.setenv("HSAEMU_ADMIN_TOKEN", "from-the-environment-0123")
    assert main(["serve"]) == 0
    assert seen["admin_token"] == "from-the-environment-0123" and seen["api_keys"] is None
    assert main(["serve", "--require-key", str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err
    assert admin_token(None, None, {}) is None
    with pytest.raises(ValueError, match="at least 16"):
        admin_token("short", None, {})


# -- no 500 for malformed input ------------------------------------------------------------------


@pytest.fixture
def api():
    with in_process_client(raise_server_exceptions=False) as c:
        yield c


def test_deeply_nested_json_is_a_4xx(api):
    path, auth = new_system(api)
    buf = api.post(path + "/buffers", json={"pool": 1, "size": 4096}, headers=auth).json()
    q = api.post(path + "/queues", json={"agent": 1}, headers=auth).json()
    for route in (
        f"/buffers/{buf['address']}/bytes",
        f"/queues/{q['id']}/packets/0",
    ):
        r = api.put(path + route, content=NESTED, headers={**auth, **JSON})
        assert (
            "nested too deeply"
            in assert_error(r, 422, "HSA_STATUS_ERROR_INVALID_ARGUMENT")["message"]
        )
    r = api.post(path + "/executables", content=NESTED, headers={**auth, **JSON})
    assert_error(r, 422, "HSA_STATUS_ERROR_INVALID_ARGUMENT")
    # Bodies FastAPI parses itself, and spec overrides nested just short of the limit.
    r = api.post(path + "/buffers", content=NESTED, headers={**auth, **JSON})
    assert_error(r, 422, "HSA_STATUS_ERROR_INVALID_ARGUMENT")
    deep = '{"preset": "teaching", "spec": ' + '{"gpu": ' * 900 + "{}" + "}" * 901
    assert_error(api.post("/v1/systems", content=deep, headers=JSON), 422)


@pytest.mark.parametrize(
    "metadata",
    [
        '{"amdhsa.kernels": 5}',
        "null",
        "[1]",
        "[{}]",
        '[{".name": [1]}]',
        '{"amdhsa.kernels": [1]}',
        '{"amdhsa.kernels": [{}]}',
        '{"amdhsa.kernels": [{".name": [1]}]}',
        '{"amdhsa.kernels": [{".name": "square", ".vgpr_count": "x"}]}',
        "not json",
        NESTED,
    ],
    ids=lambda m: m[:24],
)
def test_malformed_code_objects_are_invalid_code_object(api, metadata):
    path, auth = new_system(api)
    before = api.get(path, headers=auth).json()["memory_bytes"]
    blob = CODE_OBJECT_MAGIC + metadata.encode()
    r = api.post(path + "/executables", content=blob, headers={**auth, **OCTET})
    assert_error(r, 400, "HSA_STATUS_ERROR_INVALID_CODE_OBJECT")
    info = api.get(path, headers=auth).json()
    assert info["executables"] == 0 and info["memory_bytes"] == before


def test_the_local_loader_refuses_nested_metadata():
    with rocr.init(preset="teaching") as rt:
        with pytest.raises(rocr.HsaError) as e:
            rt.load_code_object(CODE_OBJECT_MAGIC + NESTED.encode())
        assert e.value.status == rocr.Status.ERROR_INVALID_CODE_OBJECT


def test_an_unexpected_exception_keeps_the_connection(monkeypatch):
    with ServerThread() as url:
        rt = rocr.connect(url, preset="teaching")
        try:
            path = f"/v1/systems/{rt.id}".encode()

            def broken(self):
                raise RuntimeError("emulator bug")

            monkeypatch.setattr(ServedSystem, "info", broken)
            host, port = url.removeprefix("http://").split(":")
            request = (
                b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n"
                b"Authorization: Bearer " + rt.token.encode() + b"\r\n\r\n"
            )
            with socket.create_connection((host, int(port)), timeout=20) as sock:
                f = sock.makefile("rb")
                sock.sendall(request)
                first = read_response(f)
                monkeypatch.undo()
                sock.sendall(request.replace(path, path + b"/agents"))  # same connection
                second = read_response(f)
            assert first[0] == 500 and b"connection: close" not in first[1].lower()
            assert b"RuntimeError: emulator bug" in first[2]
            assert second[0] == 200 and json.loads(second[2])[0]["device_type"] == "CPU"
        finally:
            rt.shutdown()


def read_response(f):
    status_line = f.readline()
    head = b""
    length = 0
    while (line := f.readline()) not in (b"\r\n", b""):
        head += line
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return int(status_line.split()[1]), head, f.read(length)


# -- strict types, the OpenAPI document ----------------------------------------------------------


def test_request_types_are_strict(api):
    path, auth = new_system(api)
    for body in (
        {"pool": 1, "size": True},
        {"pool": 1, "size": "4096"},
        {"pool": 1, "size": 4096.0},
        {"pool": "1", "size": 4096},
        {"pool": 1, "size": 0},
    ):
        r = api.post(path + "/buffers", json=body, headers=auth)
        assert_error(r, 422, "HSA_STATUS_ERROR_INVALID_ARGUMENT")
    assert_error(api.post(path + "/queues", json={"agent": True}, headers=auth), 422)
    assert_error(api.post(path + "/signals", json={"initial": "1"}, headers=auth), 422)
    # A number where a float belongs may still be written as an int.
    r = api.post(path + "/run", json={"duration_ns": 10}, headers=auth)
    assert r.status_code == 200, r.text
    assert api.post(path + "/buffers", json={"pool": 1, "size": 64}, headers=auth).status_code == (
        201
    )


def test_the_openapi_document_lists_every_answer(api):
    doc = api.get("/openapi.json").json()
    paths = doc["paths"]

    def codes(route, method):
        return set(paths[route][method]["responses"])

    sysid = "/v1/systems/{system_id}"
    assert {"401", "403", "429", "507"} <= codes("/v1/systems", "post")
    retry = paths["/v1/systems"]["post"]["responses"]["429"]["headers"]
    assert "Retry-After" in retry
    assert "403" in codes("/v1/systems", "get")
    for route in (sysid + "/buffers/{address}/bytes", sysid + "/queues/{queue_id}/packets/{index}"):
        assert {"413", "415"} <= codes(route, "put")
    assert {"413", "415", "507"} <= codes(sysid + "/executables", "post")
    assert "507" in codes(sysid + "/buffers", "post")
    size = doc["components"]["schemas"]["BufferCreate"]["properties"]["size"]
    assert size["minimum"] == 1
    limits = doc["components"]["schemas"]["ServerLimits"]["properties"]
    for name in ("max_systems_per_client", "create_rate_per_minute", "create_burst"):
        assert limits[name]["description"]


# -- what code objects and markers are charged ---------------------------------------------------


def square_entries(n):
    meta = decode_code_object(builtin_code_object(["square"]))
    return CODE_OBJECT_MAGIC + json.dumps({"amdhsa.kernels": meta["amdhsa.kernels"] * n}).encode()


def test_a_code_object_is_charged_by_what_the_loader_allocates():
    limits = ServerLimits(max_memory_per_system=1 << 20, max_kernels_per_code_object=3000)
    with in_process_client(limits=limits) as c:
        path, auth = new_system(c)
        r = c.post(path + "/executables", content=square_entries(1000), headers={**auth, **OCTET})
        assert r.status_code == 201, r.text
        charged = c.get(path, headers=auth).json()["memory_bytes"]
        # 1000 descriptors (64 B) and code slots (256 B): not one 4 KiB page.
        assert charged >= 1000 * (64 + 256)
        # 3000 entries take ~0.95 MiB: more than what is left of 1 MiB.
        r = c.post(path + "/executables", content=square_entries(3000), headers={**auth, **OCTET})
        body = assert_error(r, 429)
        assert body["limit"]["name"] == "max_memory_per_system"
        assert c.get(path, headers=auth).json()["memory_bytes"] == charged


def test_kernels_per_code_object_are_capped():
    limits = ServerLimits(max_kernels_per_code_object=100)
    with in_process_client(limits=limits) as c:
        path, auth = new_system(c)
        r = c.post(path + "/executables", content=square_entries(101), headers={**auth, **OCTET})
        body = assert_error(r, 422)
        assert body["limit"] == {"name": "max_kernels_per_code_object", "value": 100}
        assert "101 kernels" in body["message"]
        r = c.post(path + "/executables", content=square_entries(100), headers={**auth, **OCTET})
        assert r.status_code == 201


def test_a_failed_load_keeps_nothing(api):
    path, auth = new_system(api)
    meta = decode_code_object(builtin_code_object(["square"]))["amdhsa.kernels"][0]
    bad = {**meta, ".name": "no_such_kernel"}
    blob = CODE_OBJECT_MAGIC + json.dumps({"amdhsa.kernels": [meta] * 50 + [bad]}).encode()

    def bos():
        return api.get(path + "/kfd", headers=auth).json()["processes"][0]["buffer_objects"]

    before = (bos(), api.get(path, headers=auth).json()["memory_bytes"])
    r = api.post(path + "/executables", content=blob, headers={**auth, **OCTET})
    assert (
        "no_such_kernel" in assert_error(r, 400, "HSA_STATUS_ERROR_INVALID_CODE_OBJECT")["message"]
    )
    assert (bos(), api.get(path, headers=auth).json()["memory_bytes"]) == before


def test_trace_markers_are_bounded_and_charged():
    limits = ServerLimits(max_memory_per_system=1 << 16, max_trace_events=100_000)
    with in_process_client(limits=limits) as c:
        path, auth = new_system(c)
        url = path + "/trace/markers"
        long_value = {"name": "m", "args": {"note": "x" * 257}}
        assert_error(c.post(url, json=long_value, headers=auth), 422)
        assert_error(c.post(url, json={"name": "m", "args": {"k" * 65: 1}}, headers=auth), 422)
        fat = {"name": "m", "args": {f"a{i}": "x" * 256 for i in range(32)}}
        codes = []
        for _ in range(16):
            codes.append(c.post(url, json=fat, headers=auth).status_code)
        assert codes[0] == 204 and codes[-1] == 429  # 64 KiB hold a handful of such markers
        used = c.get(path, headers=auth).json()["memory_bytes"]
        assert used >= codes.count(204) * 32 * 256
        r = c.post(url, json=fat, headers=auth)
        assert assert_error(r, 429)["limit"]["name"] == "max_memory_per_system"


def test_markers_the_trace_dropped_are_refunded():
    limits = ServerLimits(max_memory_per_system=1 << 16, max_trace_events=40)
    with in_process_client(limits=limits) as c:
        path, auth = new_system(c)
        fat = {"name": "m", "args": {f"a{i}": "x" * 64 for i in range(8)}}
        for _ in range(120):  # 120 markers of ~1 KiB: only the trace's last 40 stay
            assert c.post(path + "/trace/markers", json=fat, headers=auth).status_code == 204
        used = c.get(path, headers=auth).json()["memory_bytes"]
        assert 0 < used <= 40 * 2048
