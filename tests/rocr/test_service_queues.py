"""A kernel launch driven by hand over HTTP, watched layer by layer between the steps."""

import base64
import struct

import numpy as np
import pytest

from hw_model import aql
from rocr.service.testing import in_process_client

N = 1024


@pytest.fixture
def api():
    with in_process_client() as c:
        yield c


class Sys:
    """A served teaching system and short helpers for its routes."""

    def __init__(self, c):
        d = c.post("/v1/systems", json={"preset": "teaching"}).json()
        self.c, self.path = c, f"/v1/systems/{d['id']}"
        self.auth = {"Authorization": f"Bearer {d['token']}"}

    def req(self, method, tail, expect=200, **kw):
        r = self.c.request(method, self.path + tail, headers={**self.auth, **kw.pop("h", {})}, **kw)
        assert r.status_code == expect, r.text
        return r.json() if r.content and "json" in r.headers.get("content-type", "") else r

    def buffer(self, size, pool=1):
        b = self.req("POST", "/buffers", 201, json={"pool": pool, "size": size})
        self.req("POST", f"/buffers/{b['address']}/allow-access", json={"agents": [1]})
        return b["address"]

    def write(self, address, data):
        enc = base64.b64encode(data).decode()
        self.req("PUT", f"/buffers/{address}/bytes", json={"offset": 0, "data": enc})

    def read(self, address, size):
        r = self.req("GET", f"/buffers/{address}/bytes?size={size}")
        return base64.b64decode(r["data"])


def square_setup(s):
    a, b = s.buffer(4 * N), s.buffer(4 * N)
    s.write(a, np.arange(N, dtype=np.float32).tobytes())
    kernarg = s.buffer(64, pool=0)  # the kernarg pool
    s.write(kernarg, struct.pack("<QQQ", b, a, N))
    exe = s.req("POST", "/executables", 201, json={"source": "builtin:square"})
    kernel = exe["kernels"][0]
    assert kernel["name"] == "square" and kernel["kernarg_segment_size"] == 24
    q = s.req("POST", "/queues", 201, json={"agent": 1, "size": 64})
    sig = s.req("POST", "/signals", 201, json={"initial": 1})
    pkt = {
        "type": "KERNEL_DISPATCH",
        "workgroup_size_x": 256,
        "grid_size_x": N,
        "kernel_object": kernel["kernel_object"],
        "kernarg_address": kernarg,
        "completion_signal": sig["handle"],
    }
    return a, b, q, sig, pkt


def test_a_launch_step_by_step(api):
    s = Sys(api)
    a, b, q, sig, pkt = square_setup(s)
    qp = f"/queues/{q['id']}"
    kfd = s.req("GET", "/kfd")["processes"][0]["queues"]
    assert kfd[0]["queue_id"] == q["queue_id"] and "doorbell_id" in kfd[0]
    assert q["doorbell_offset"] == 0 and q["doorbell_address"] > 0
    slots = s.req("GET", "/runlist")["gpus"][0]["slots"]
    assert q["queue_id"] in [x["queue_id"] if isinstance(x, dict) else x for x in slots]

    index = s.req("POST", qp + "/write-index/add", json={"delta": 1})["value"]
    assert index == 0
    slot = s.req("PUT", f"{qp}/packets/{index}", json=pkt)
    assert slot["header_fields"] == {
        "type": "KERNEL_DISPATCH",
        "barrier": False,
        "acquire_fence_scope": "SYSTEM",
        "release_fence_scope": "SYSTEM",
    }
    assert slot["packet"]["setup"] == 1 and slot["packet"]["grid_size_y"] == 1
    report = s.req("GET", qp + "/report")["lines"]
    assert any("never rung" in line for line in report)

    info = s.req("POST", qp + "/doorbell", json={"value": index})
    assert info["doorbell_value"] == 0
    s.req("POST", "/run", json={"duration_ns": 3000})
    cus = s.req("GET", "/gpus/1/cus")
    assert len(cus) == 2 and any(cu["resident_wgs"] for cu in cus)
    w = s.req(
        "POST", f"/signals/{sig['handle']}/wait", json={"condition": "LT", "compare_value": 1}
    )
    assert w == {**w, "value": 0, "satisfied": True, "attempts": 1, "queue_errors": []}
    out = np.frombuffer(s.read(b, 4 * N), np.float32)
    assert np.array_equal(out, np.arange(N, dtype=np.float32) ** 2)
    assert s.req("GET", qp + "/read-index")["value"] == 1
    # The retired slot reads back INVALID, as the CP leaves it.
    assert s.req("GET", f"{qp}/packets/{index}")["header_fields"]["type"] == "INVALID"

    names = [e["name"] for e in s.req("GET", "/trace/events")["events"]]
    for step in ("hsa_queue_create", "write packet 0", "ring doorbell", "completion signal"):
        assert step in names, step
    page = s.req("GET", "/trace/events?since=3&limit=2")
    assert page["next"] == 5 and len(page["events"]) == 2
    chrome = s.req("GET", "/trace")
    assert any(e.get("name") == "ring doorbell" for e in chrome["traceEvents"])
    assert s.req("GET", "/stats")["gpu1"]["kernels"] == 1
    start, end = (
        s.req("GET", f"/signals/{sig['handle']}/dispatch-time")[k] for k in ("start_ns", "end_ns")
    )
    assert 0 < start < end


def test_raw_and_structured_packets_are_the_same_bytes(api):
    s = Sys(api)
    _, _, q, sig, pkt = square_setup(s)
    qp = f"/queues/{q['id']}"
    structured = s.req("PUT", f"{qp}/packets/0", json=pkt)["raw"]
    raw = base64.b64decode(structured)
    expected = aql.KernelDispatchPacket(
        header=aql.make_header(aql.PacketType.KERNEL_DISPATCH),
        setup=1,
        workgroup_size_x=256,
        workgroup_size_y=1,
        workgroup_size_z=1,
        grid_size_x=N,
        grid_size_y=1,
        grid_size_z=1,
        kernel_object=pkt["kernel_object"],
        kernarg_address=pkt["kernarg_address"],
        completion_signal=sig["handle"],
    ).to_bytes()
    assert raw == expected
    octet = {"Content-Type": "application/octet-stream"}
    s.req("PUT", f"{qp}/packets/1", content=raw, h=octet)
    back = s.req("GET", f"{qp}/packets/1", h={"Accept": "application/octet-stream"}).content
    assert back == raw
    s.req("PUT", f"{qp}/packets/2", json={"raw": structured})
    assert s.req("GET", f"{qp}/packets/2")["raw"] == structured
    short = s.req("PUT", f"{qp}/packets/3", 400, content=raw[:63], h=octet)
    assert short["message"] == "an AQL packet is 64 bytes, got 63"
    far = s.req("PUT", f"{qp}/packets/64", 400, json=pkt)
    assert "not free" in far["message"]
    barrier = {"type": "BARRIER_AND", "dep_signal": [sig["handle"]], "barrier": True}
    slot = s.req("PUT", f"{qp}/packets/3", json=barrier)
    assert slot["packet"]["dep_signal"] == [sig["handle"], 0, 0, 0, 0]
    assert slot["header_fields"]["barrier"] is True
    value = {"type": "AMD_BARRIER_VALUE", "signal": sig["handle"], "cond": "LT", "value": 1}
    assert s.req("PUT", f"{qp}/packets/4", json=value)["header_fields"]["type"] == "VENDOR_SPECIFIC"


def test_queue_error_is_on_the_queue_and_in_the_wait(api):
    s = Sys(api)
    _, _, q, sig, pkt = square_setup(s)
    qp = f"/queues/{q['id']}"
    s.req("PUT", f"{qp}/packets/0", json={**pkt, "kernel_object": 0})
    s.req("PUT", qp + "/write-index", json={"value": 1})
    s.req("POST", qp + "/doorbell", json={"value": 0})
    w = s.req(
        "POST",
        f"/signals/{sig['handle']}/wait",
        409,
        json={"condition": "LT", "compare_value": 1},
    )
    assert w["status"] == "HSA_STATUS_ERROR_INVALID_CODE_OBJECT"
    assert "can never return" in w["message"] and "stopped by an error" in w["message"]
    err = s.req("GET", qp)["error"]
    assert (
        err["status"] == "HSA_STATUS_ERROR_INVALID_CODE_OBJECT"
        and "kernel_object 0x0" in err["message"]
    )
    again = s.req("POST", qp + "/doorbell", 409, json={"value": 0})
    assert again["status"] == err["status"] and again["message"] == err["message"]
    assert s.req("GET", "/stats")["gpu1"]["queue_errors"] == 1


def test_a_queue_with_an_error_callback_keeps_accepting_calls(api):
    s = Sys(api)
    _, _, _, sig, pkt = square_setup(s)
    q = s.req("POST", "/queues", 201, json={"agent": 1, "size": 64, "error_callback": True})
    qp = f"/queues/{q['id']}"
    s.req("PUT", f"{qp}/packets/0", json={**pkt, "kernel_object": 0})
    s.req("POST", qp + "/write-index/add", json={})
    s.req("POST", qp + "/doorbell", json={"value": 0})
    s.req("POST", "/run", json={"until_idle": True})
    info = s.req("POST", qp + "/doorbell", json={"value": 0})
    assert info["error"]["code"] == 0x1010


def test_write_index_operations(api):
    s = Sys(api)
    q = s.req("POST", "/queues", 201, json={"agent": 1})
    qp = f"/queues/{q['id']}"
    assert s.req("POST", qp + "/write-index/add", json={"delta": 3})["value"] == 0
    assert s.req("GET", qp + "/write-index")["value"] == 3
    assert s.req("POST", qp + "/write-index/cas", json={"expected": 2, "value": 9})["value"] == 3
    assert s.req("POST", qp + "/write-index/cas", json={"expected": 3, "value": 9})["value"] == 3
    assert s.req("PUT", qp + "/write-index", json={"value": 11})["value"] == 11
    assert s.req("GET", qp + "/read-index")["value"] == 0
    assert s.req("PUT", qp + "/priority", json={"priority": 1})["priority"] == 1
    assert s.req("PUT", qp + "/cu-mask", json={"mask": [1]})["id"] == q["id"]
    s.req("DELETE", qp, 204)
    assert s.req("GET", qp, 404)["status"] == "HSA_STATUS_ERROR_INVALID_QUEUE"


def test_dispatch_convenience(api):
    s = Sys(api)
    a, b = s.buffer(4 * N), s.buffer(4 * N)
    s.write(a, np.full(N, 3, np.float32).tobytes())
    s.req("POST", "/executables", 201, json={"source": "builtin"})
    q = s.req("POST", "/queues", 201, json={"agent": 1})
    d = s.req(
        "POST",
        f"/queues/{q['id']}/dispatch",
        201,
        json={"kernel": "square", "grid": N, "workgroup": 256, "args": [b, a, N]},
    )
    s.req("POST", f"/signals/{d['signal']}/wait", json={"condition": "LT", "compare_value": 1})
    assert set(np.frombuffer(s.read(b, 4 * N), np.float32)) == {9.0}
    bad = s.req(
        "POST",
        f"/queues/{q['id']}/dispatch",
        400,
        json={"kernel": "square", "grid": N, "workgroup": 256, "args": [b, a]},
    )
    assert "takes 3 arguments" in bad["message"]
    none = s.req(
        "POST",
        f"/queues/{q['id']}/dispatch",
        404,
        json={"kernel_object": 1, "grid": 1, "workgroup": 1},
    )
    assert none["status"] == "HSA_STATUS_ERROR_INVALID_EXECUTABLE_SYMBOL"
