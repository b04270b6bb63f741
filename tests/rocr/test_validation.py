"""Bad input to any public call is an HsaError with the real hsa_status_t and a message naming
the argument, its value and the limit: never a TypeError, ValueError, struct.error, pydantic
ValidationError or HsaKmtError from inside. The HTTP client refuses the same input with the same
status; the service answers 4xx.

The property test throws random dispatch arguments at the runtime (HSAEMU_FUZZ_EXAMPLES=N for
more than the default number of examples).
"""

from __future__ import annotations

import math
import os
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import rocr
from hw_model.kernels import builtin_code_object
from rocr.service.testing import in_process_client

N = 64
INVALID_ARGUMENT = rocr.Status.ERROR_INVALID_ARGUMENT
EXAMPLES = int(os.environ.get("HSAEMU_FUZZ_EXAMPLES", "0")) or 300


def make_env(rt):
    k = rt.load_code_object("builtin:vector_add").kernel("vector_add")
    pool = rt.cpu.pools(fine_grained=True, kernarg=False)[0]
    a, b, c = (pool.allocate(4 * N) for _ in range(3))
    for x in (a, b, c):
        rt.allow_access(rt.gpus, x)
    a.view(np.float32)[:] = np.arange(N, dtype=np.float32)
    b.view(np.float32)[:] = 1
    q = rt.gpus[0].create_queue(64)
    return SimpleNamespace(rt=rt, k=k, pool=pool, a=a, b=b, c=c, q=q, gpu=rt.gpus[0])


@pytest.fixture
def local():
    rt = rocr.init(preset="teaching")
    yield make_env(rt)
    rt.shutdown()


@pytest.fixture(scope="module")
def http():
    # One app for the module (starting one costs more than every test in it); each test gets
    # a system of its own.
    with in_process_client() as c:
        yield c


@pytest.fixture
def remote(http):
    rt = rocr.connect("http://testserver", preset="teaching", client=http)
    yield make_env(rt)
    rt.shutdown()


@pytest.fixture(params=["local", "remote"])
def env(request):
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="module")
def shared_local():
    rt = rocr.init(preset="teaching")
    yield make_env(rt)
    rt.shutdown()


@pytest.fixture(scope="module")
def shared_remote(http):
    rt = rocr.connect("http://testserver", preset="teaching", client=http)
    yield make_env(rt)
    rt.shutdown()


@pytest.fixture(params=["local", "remote"])
def shared_env(request):
    """A runtime shared by the tests of refused calls (a refusal changes nothing; the server
    limits how fast a client may create systems)."""
    return request.getfixturevalue(f"shared_{request.param}")


def args(e, **over):
    v = {"a": e.a, "b": e.b, "c": e.c, "n": N, **over}
    return (v["a"], v["b"], v["c"], v["n"])


def elf_header(machine: int) -> bytes:
    """The first 64 bytes of a little-endian ELF64 executable for `machine`."""
    ident = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    return ident + (2).to_bytes(2, "little") + machine.to_bytes(2, "little") + bytes(44)


# (call, status, words the message must contain). Each runs against the local runtime and the
# HTTP client: the same input gets the same status and names the same things.
CASES = {
    "grid float": (
        lambda e: e.q.dispatch(e.k, 1000.0, 64, args(e)),
        INVALID_ARGUMENT,
        ["grid", "1000.0", "integer"],
    ),
    "grid negative": (
        lambda e: e.q.dispatch(e.k, -5, 64, args(e)),
        INVALID_ARGUMENT,
        ["grid = -5", "at least 1"],
    ),
    "grid beyond uint32": (
        lambda e: e.q.dispatch(e.k, 2**33, 64, args(e)),
        INVALID_ARGUMENT,
        ["grid_size_x = 8589934592", "4294967295", "uint32_t"],
    ),
    "grid total beyond the agent's max": (
        lambda e: e.q.dispatch(e.k, (2**20, 2**20), (64, 1), args(e)),
        INVALID_ARGUMENT,
        ["1099511627776 work-items", "HSA_AGENT_INFO_GRID_MAX_SIZE"],
    ),
    "grid with 4 dimensions": (
        lambda e: e.q.dispatch(e.k, (1, 1, 1, 1), (1, 1, 1, 1), args(e)),
        INVALID_ARGUMENT,
        ["grid", "4 dimensions", "1 to 3"],
    ),
    "grid and workgroup dimensions differ": (
        lambda e: e.q.dispatch(e.k, (64, 64), 64, args(e)),
        INVALID_ARGUMENT,
        ["2 dimension(s)", "workgroup 64 has 1"],
    ),
    "grid None": (
        lambda e: e.q.dispatch(e.k, None, 64, args(e)),
        INVALID_ARGUMENT,
        ["grid must be an integer", "None"],
    ),
    "workgroup 2048": (
        lambda e: e.q.dispatch(e.k, 4096, 2048, args(e)),
        INVALID_ARGUMENT,
        ["2048", "at most 1024 work-items per workgroup on this agent"],
    ),
    "workgroup 32x64": (
        lambda e: e.q.dispatch(e.k, (64, 64), (32, 64), args(e)),
        INVALID_ARGUMENT,
        ["(32, 64) has 2048 work-items", "at most 1024 work-items per workgroup"],
    ),
    "workgroup zero": (
        lambda e: e.q.dispatch(e.k, (64, 64), (64, 0), args(e)),
        INVALID_ARGUMENT,
        ["workgroup[1] = 0", "at least 1"],
    ),
    "a string where a pointer goes": (
        lambda e: e.q.dispatch(e.k, N, 64, args(e, b="x")),
        INVALID_ARGUMENT,
        ["argument 1 'b' (ptr)", "'x'", "vector_add(a: ptr, b: ptr, c: ptr, n: u64)"],
    ),
    "a count where a pointer goes (wrong order)": (
        lambda e: e.q.dispatch(e.k, N, 64, (N, e.a, e.b, e.c)),
        INVALID_ARGUMENT,
        ["argument 0 'a' (ptr) = 64", "not an address", "wrong order"],
    ),
    "a buffer where the count goes (wrong order)": (
        lambda e: e.q.dispatch(e.k, N, 64, args(e, n=e.c)),
        INVALID_ARGUMENT,
        ["argument 3 'n' (u64)", "Buffer(", "wrong order"],
    ),
    "a buffer where a float goes": (
        lambda e: e.q.dispatch(
            e.rt.load_code_object("builtin:saxpy").kernel("saxpy"), N, 64, (e.a, e.b, e.c, N)
        ),
        INVALID_ARGUMENT,
        ["argument 0 'alpha' (f32)", "takes a value of type f32", "wrong order"],
    ),
    "a float too large for f32": (
        lambda e: e.q.dispatch(
            e.rt.load_code_object("builtin:saxpy").kernel("saxpy"), N, 64, (1e39, e.b, e.c, N)
        ),
        INVALID_ARGUMENT,
        ["argument 0 'alpha' (f32) = 1e+39", "32-bit float"],
    ),
    "a negative count": (
        lambda e: e.q.dispatch(e.k, N, 64, args(e, n=-1)),
        INVALID_ARGUMENT,
        ["argument 3 'n' (u64) = -1", "from 0 to 18446744073709551615"],
    ),
    "a float count": (
        lambda e: e.q.dispatch(e.k, N, 64, args(e, n=64.0)),
        INVALID_ARGUMENT,
        ["argument 3 'n' (u64)", "64.0"],
    ),
    "None for a pointer": (
        lambda e: e.q.dispatch(e.k, N, 64, args(e, c=None)),
        INVALID_ARGUMENT,
        ["argument 2 'c' (ptr)", "None", "0 for a NULL pointer"],
    ),
    "too few kernel arguments": (
        lambda e: e.q.dispatch(e.k, N, 64, (e.a, e.b, e.c)),
        INVALID_ARGUMENT,
        ["vector_add takes 4 arguments, got 3", "(a: ptr, b: ptr, c: ptr, n: u64)"],
    ),
    "too many kernel arguments": (
        lambda e: e.q.dispatch(e.k, N, 64, (*args(e), 1)),
        INVALID_ARGUMENT,
        ["takes 4 arguments, got 5"],
    ),
    "args not a tuple": (
        lambda e: e.q.dispatch(e.k, N, 64, e.a),
        INVALID_ARGUMENT,
        ["args must be a tuple"],
    ),
    "kernel by name": (
        lambda e: e.q.dispatch("vector_add", N, 64, args(e)),
        INVALID_ARGUMENT,
        ["kernel must be a KernelSymbol", "'vector_add'"],
    ),
    "fence scope out of range": (
        lambda e: e.q.dispatch(e.k, N, 64, args(e), acquire=7),
        INVALID_ARGUMENT,
        ["acquire = 7", "hsa_fence_scope_t"],
    ),
    "barrier not a flag": (
        lambda e: e.q.dispatch(e.k, N, 64, args(e), barrier="yes"),
        INVALID_ARGUMENT,
        ["barrier must be True or False", "'yes'"],
    ),
    "group segment negative": (
        lambda e: e.q.dispatch(e.k, N, 64, args(e), group_segment_size=-1),
        INVALID_ARGUMENT,
        ["group_segment_size = -1"],
    ),
    "completion signal not a signal": (
        lambda e: e.q.dispatch(e.k, N, 64, args(e), completion_signal=5),
        INVALID_ARGUMENT,
        ["completion_signal must be a Signal", "5"],
    ),
    "allocate 4.5 bytes": (
        lambda e: e.pool.allocate(4.5),
        INVALID_ARGUMENT,
        ["size must be an integer", "4.5"],
    ),
    "allocate 'x' bytes": (
        lambda e: e.pool.allocate("x"),
        INVALID_ARGUMENT,
        ["size must be an integer", "'x'"],
    ),
    "allocate 0 bytes": (
        lambda e: e.pool.allocate(0),
        INVALID_ARGUMENT,
        ["size = 0", "at least 1 byte"],
    ),
    "allocate more than the pool": (
        lambda e: e.pool.allocate(1 << 60),
        rocr.Status.ERROR_INVALID_ALLOCATION,
        ["size = 1152921504606846976", "more than pool"],
    ),
    "CU mask enabling no CU": (
        lambda e: e.q.set_cu_mask([0]),
        INVALID_ARGUMENT,
        ["mask", "enables none of this agent's 2 CUs"],
    ),
    "CU mask with a str word": (
        lambda e: e.q.set_cu_mask(["0xff"]),
        INVALID_ARGUMENT,
        ["mask[0] must be an integer", "'0xff'"],
    ),
    "CU mask with a negative word": (
        lambda e: e.q.set_cu_mask([1, -1]),
        INVALID_ARGUMENT,
        ["mask[1] = -1", "uint32_t"],
    ),
    "CU mask of too many words": (
        lambda e: e.q.set_cu_mask([1] * 33),
        INVALID_ARGUMENT,
        ["33 words", "at most 32"],
    ),
    "CU mask empty": (
        lambda e: e.q.set_cu_mask([]),
        INVALID_ARGUMENT,
        ["mask is empty"],
    ),
    "queue size not a power of two": (
        lambda e: e.gpu.create_queue(100),
        INVALID_ARGUMENT,
        ["size = 100", "not a power of two"],
    ),
    "queue size a str": (
        lambda e: e.gpu.create_queue("256"),
        INVALID_ARGUMENT,
        ["size must be an integer", "'256'"],
    ),
    "queue callback not callable": (
        lambda e: e.gpu.create_queue(64, callback="print"),
        INVALID_ARGUMENT,
        ["callback must be a function", "'print'"],
    ),
    "queue priority a str": (
        lambda e: e.gpu.create_queue(64, priority="high"),
        INVALID_ARGUMENT,
        ["priority 'high'", "-3 (minimum) to 3 (maximum)"],
    ),
    "queue priority out of range": (
        lambda e: e.q.set_priority(9),
        INVALID_ARGUMENT,
        ["priority 9"],
    ),
    "signal initial a float": (
        lambda e: e.rt.create_signal(1.5),
        INVALID_ARGUMENT,
        ["initial must be an integer", "1.5"],
    ),
    "signal initial beyond int64": (
        lambda e: e.rt.create_signal(2**63),
        INVALID_ARGUMENT,
        ["initial = 9223372036854775808", "int64_t"],
    ),
    "signal store a str": (
        lambda e: e.rt.create_signal(0).store("1"),
        INVALID_ARGUMENT,
        ["value must be an integer", "'1'"],
    ),
    "signal add a float": (
        lambda e: e.rt.create_signal(0).add(0.5),
        INVALID_ARGUMENT,
        ["value must be an integer", "0.5"],
    ),
    "signal subtract None": (
        lambda e: e.rt.create_signal(0).subtract(None),
        INVALID_ARGUMENT,
        ["value must be an integer", "None"],
    ),
    "signal cas beyond int64": (
        lambda e: e.rt.create_signal(0).cas(0, 2**64),
        INVALID_ARGUMENT,
        ["value = 18446744073709551616", "int64_t"],
    ),
    "signal xor a list": (
        lambda e: e.rt.create_signal(0).xor([1]),
        INVALID_ARGUMENT,
        ["value must be an integer", "[1]"],
    ),
    "write_packet a str": (
        lambda e: e.q.write_packet(0, "packet"),
        INVALID_ARGUMENT,
        ["packet must be an AQL packet", "'packet'"],
    ),
    "write_packet 10 bytes": (
        lambda e: e.q.write_packet(0, b"x" * 10),
        INVALID_ARGUMENT,
        ["packet is 10 bytes", "64"],
    ),
    "write_packet a negative index": (
        lambda e: e.q.write_packet(-1, bytes(64)),
        INVALID_ARGUMENT,
        ["index = -1"],
    ),
    "write_packet a float index": (
        lambda e: e.q.write_packet(0.0, bytes(64)),
        INVALID_ARGUMENT,
        ["index must be an integer", "0.0"],
    ),
    "ring_doorbell negative": (
        lambda e: e.q.ring_doorbell(-1),
        INVALID_ARGUMENT,
        ["index = -1", "int64_t"],
    ),
    "ring_doorbell a str": (
        lambda e: e.q.ring_doorbell("0"),
        INVALID_ARGUMENT,
        ["index must be an integer", "'0'"],
    ),
    "add_write_index negative": (
        lambda e: e.q.add_write_index(-1),
        INVALID_ARGUMENT,
        ["delta = -1"],
    ),
    "allow_access with a non-agent": (
        lambda e: e.rt.allow_access([1], e.a),
        rocr.Status.ERROR_INVALID_AGENT,
        ["agents[0] = 1", "not an agent of this runtime"],
    ),
    "allow_access with its arguments swapped": (
        lambda e: e.rt.allow_access(e.a, e.rt.gpus),
        INVALID_ARGUMENT,
        ["agents must be a list of agents", "allow_access(agents, buf)"],
    ),
    "allow_access with no agents": (
        lambda e: e.rt.allow_access([], e.a),
        INVALID_ARGUMENT,
        ["agents is empty"],
    ),
    "allow_access to a non-buffer": (
        lambda e: e.rt.allow_access(e.rt.gpus, 0x1000),
        INVALID_ARGUMENT,
        ["buf must be a Buffer", "4096"],
    ),
    "load_code_object from an int": (
        lambda e: e.rt.load_code_object(5),
        INVALID_ARGUMENT,
        ["source must be", "5 (int)"],
    ),
    "load_code_object of an x86-64 ELF": (
        lambda e: e.rt.load_code_object(elf_header(62)),
        rocr.Status.ERROR_INVALID_CODE_OBJECT,
        ["an ELF for machine EM_X86_64", "e_machine 62", "not EM_AMDGPU (224)"],
    ),
    "load_code_object of a truncated ELF": (
        lambda e: e.rt.load_code_object(b"\x7fELF\x02\x01"),
        rocr.Status.ERROR_INVALID_CODE_OBJECT,
        ["truncated ELF"],
    ),
    "load_code_object for the CPU": (
        lambda e: e.rt.load_code_object("builtin", agent=e.rt.cpu),
        rocr.Status.ERROR_INVALID_AGENT,
        ["runs no kernels"],
    ),
    "kernel by a non-str name": (
        lambda e: e.rt.load_code_object("builtin:square").kernel(7),
        INVALID_ARGUMENT,
        ["symbol name must be a str", "7"],
    ),
    "view with a bad dtype": (
        lambda e: e.a.view("nonsense"),
        INVALID_ARGUMENT,
        ["dtype = 'nonsense'"],
    ),
    "view of more elements than fit": (
        lambda e: e.a.view(np.float32, N + 1),
        INVALID_ARGUMENT,
        [f"count = {N + 1}", f"from 0 to {N}"],
    ),
    "read at a negative offset": (
        lambda e: e.a.read(-1, 4),
        INVALID_ARGUMENT,
        ["offset = -1"],
    ),
    "read a str size": (
        lambda e: e.a.read(0, "4"),
        INVALID_ARGUMENT,
        ["size must be an integer", "'4'"],
    ),
    "write a str": (
        lambda e: e.a.write("data"),
        INVALID_ARGUMENT,
        ["data must be bytes-like", "str"],
    ),
    "write past the end": (
        lambda e: e.a.write(b"xy", 4 * N - 1),
        INVALID_ARGUMENT,
        ["2 bytes at offset 255", "outside the 256-byte buffer"],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_an_hsa_error_naming_the_argument(shared_env, case):
    env = shared_env
    call, status, words = CASES[case]
    with pytest.raises(rocr.HsaError) as info:
        call(env)
    err = info.value
    assert err.status == status, f"{case}: {err}"
    for w in words:
        assert w in err.message, f"{case}: {w!r} not in {err.message!r}"
    # A refused call changed nothing: the queue still runs a good dispatch.
    h = env.q.dispatch(env.k, N, 64, args(env)).wait()
    assert h.done
    assert env.c.view(np.float32).tolist() == (np.arange(N) + 1).tolist()


def test_a_refused_dispatch_reserves_no_slot(env):
    before = env.q.load_write_index()
    for bad in ((1000.0, 64, args(env)), (N, 2048, args(env)), (N, 64, ("x",))):
        with pytest.raises(rocr.HsaError):
            env.q.dispatch(env.k, *bad)
    assert env.q.load_write_index() == before
    env.q.dispatch(env.k, N, 64, args(env)).wait()
    assert env.q.load_read_index() == before + 1


def test_destroying_a_queue_twice_is_invalid_queue(env):
    q = env.gpu.create_queue(64)
    q.destroy()
    for call in (
        q.destroy,
        lambda: q.dispatch(env.k, N, 64, args(env)),
        lambda: q.add_write_index(1),
        q.load_read_index,
        lambda: q.ring_doorbell(0),
    ):
        with pytest.raises(rocr.HsaError) as info:
            call()
        assert info.value.status == rocr.Status.ERROR_INVALID_QUEUE
        assert f"queue {q.id} was destroyed" in info.value.message


def test_a_freed_buffer_is_invalid_allocation_everywhere(env):
    buf = env.pool.allocate(64)
    buf.free()
    for call in (
        buf.view,
        buf.read,
        lambda: buf.write(b"x"),
        buf.free,
        lambda: env.rt.allow_access(env.rt.gpus, buf),
        lambda: env.q.dispatch(env.k, N, 64, args(env, c=buf)),
    ):
        with pytest.raises(rocr.HsaError) as info:
            call()
        assert info.value.status == rocr.Status.ERROR_INVALID_ALLOCATION
        assert f"buffer at {buf.address:#x} was freed" in info.value.message


def test_buffers_queues_and_signals_after_shutdown_are_not_initialized(env):
    sig = env.rt.create_signal(3)
    env.rt.shutdown()
    for call in (
        env.a.view,
        env.a.read,
        lambda: env.a.write(b"x"),
        env.a.free,
        lambda: env.rt.allow_access(env.rt.gpus, env.a),
        lambda: env.pool.allocate(64),
        env.q.load_read_index,
        lambda: env.q.dispatch(env.k, N, 64, args(env)),
        sig.load,
        lambda: sig.store(1),
    ):
        with pytest.raises(rocr.HsaError) as info:
            call()
        assert info.value.status == rocr.Status.ERROR_NOT_INITIALIZED, info.value
        assert "shut down" in info.value.message


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_code_objects_load_from_any_bytes_like(env, kind):
    exe = env.rt.load_code_object(kind(builtin_code_object(["square"])))
    k = exe.kernel("square")
    env.q.dispatch(k, N, 64, (env.c, env.a, N)).wait()
    assert env.c.view(np.float32).tolist() == (np.arange(N) ** 2).tolist()


def test_a_host_executable_is_named_for_its_machine(env):
    with open(sys.executable, "rb") as f:
        head = f.read(64)
    if not head.startswith(b"\x7fELF"):
        pytest.skip("the Python binary is not an ELF here")
    with pytest.raises(rocr.HsaError) as info:
        env.rt.load_code_object(sys.executable)
    assert info.value.status == rocr.Status.ERROR_INVALID_CODE_OBJECT
    assert "an ELF for machine" in info.value.message
    assert "not EM_AMDGPU" in info.value.message
    assert "an AMDGPU ELF code object" not in info.value.message


def test_an_amdgpu_elf_is_recognised_as_one(env):
    with pytest.raises(rocr.HsaError) as info:
        env.rt.load_code_object(elf_header(224))
    assert info.value.status == rocr.Status.ERROR_INVALID_CODE_OBJECT
    assert "AMDGPU ELF code object" in info.value.message


def test_objects_of_another_runtime_are_refused(local):
    with rocr.init(system=local.rt.system) as other:
        k2 = other.load_code_object("builtin:vector_add").kernel("vector_add")
        buf2 = other.cpu.pools(fine_grained=True, kernarg=False)[0].allocate(4 * N)
        sig2 = other.create_signal(1)
        q, k = local.q, local.k
        cases = [
            (lambda: q.dispatch(k2, N, 64, args(local)), "ERROR_INVALID_EXECUTABLE_SYMBOL"),
            (lambda: q.dispatch(k, N, 64, args(local, c=buf2)), "ERROR_INVALID_ARGUMENT"),
            (lambda: q.dispatch(k, N, 64, args(local), sig2), "ERROR_INVALID_SIGNAL"),
            (lambda: local.rt.allow_access(local.rt.gpus, buf2), "ERROR_INVALID_ALLOCATION"),
            (lambda: local.rt.allow_access(other.gpus, local.a), "ERROR_INVALID_AGENT"),
            (lambda: local.rt.load_code_object(agent=other.gpus[0]), "ERROR_INVALID_AGENT"),
        ]
        for call, status in cases:
            with pytest.raises(rocr.HsaError) as info:
                call()
            assert info.value.status.name == status, info.value
            assert "another runtime" in info.value.message or "this runtime" in info.value.message


def test_dispatch_packet_checks_what_it_encodes(local):
    rt, k = local.rt, local.k
    with pytest.raises(rocr.HsaError) as info:
        rt.dispatch_packet(k, 2**32, 64, args(local))
    assert "grid_size_x = 4294967296" in info.value.message
    with pytest.raises(rocr.HsaError) as info:
        rt.dispatch_packet(k, 64, 64, args(local), completion_signal=-1)
    assert "completion_signal = -1" in info.value.message
    with pytest.raises(rocr.HsaError) as info:
        rt.dispatch_packet(k, 64, 64, args(local), group_segment_size=1 << 20)
    assert info.value.status == rocr.Status.ERROR_INVALID_ALLOCATION
    assert "65536 bytes of LDS" in info.value.message
    pkt = rt.dispatch_packet(k, (np.int64(64), 2), [np.int32(64), 1], args(local, n=np.uint64(N)))
    assert (pkt.grid_size_x, pkt.grid_size_y, pkt.workgroup_size_x, pkt.setup) == (64, 2, 64, 2)


def test_the_service_answers_bad_input_with_4xx_and_the_status(http):
    d = http.post("/v1/systems", json={"preset": "teaching"}).json()
    path, auth = f"/v1/systems/{d['id']}", {"Authorization": f"Bearer {d['token']}"}
    buf = http.post(path + "/buffers", json={"pool": 1, "size": 4096}, headers=auth).json()
    q = http.post(path + "/queues", json={"agent": 1}, headers=auth).json()
    http.post(path + "/executables", json={"source": "builtin"}, headers=auth)
    qp = f"{path}/queues/{q['id']}"
    dispatch = {"kernel": "vector_add", "grid": N, "workgroup": 64}
    cases = [
        (
            "POST",
            qp + "/dispatch",
            {**dispatch, "workgroup": [32, 64], "grid": [64, 64]},
            "at most 1024 work-items per workgroup",
        ),
        (
            "POST",
            qp + "/dispatch",
            {**dispatch, "args": [N, buf["address"], 0, 0]},
            "argument 0 'a' (ptr) = 64",
        ),
        (
            "POST",
            qp + "/dispatch",
            {**dispatch, "args": [buf["address"]] * 3},
            "takes 4 arguments, got 3",
        ),
        ("PUT", qp + "/cu-mask", {"mask": [0]}, "enables none"),
    ]
    for method, url, body, words in cases:
        r = http.request(method, url, json=body, headers=auth)
        assert 400 <= r.status_code < 500, (url, r.status_code, r.text)
        assert r.json()["status"] == "HSA_STATUS_ERROR_INVALID_ARGUMENT", r.text
        assert words in r.json()["message"], r.text
    r = http.post(
        path + "/executables",
        content=elf_header(62),
        headers={**auth, "Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 400
    assert r.json()["status"] == "HSA_STATUS_ERROR_INVALID_CODE_OBJECT"
    assert "EM_X86_64" in r.json()["message"]
    http.delete(path, headers=auth)


# -- property: random dispatch arguments -------------------------------------------------------

M = 4096  # elements per fuzz buffer: a grid of at most M work-items stays inside them
_ints = st.one_of(
    st.integers(-3, 70),
    st.sampled_from([0, 1023, 1024, 1025, 2048, 2**16, 2**31, 2**32 - 1, 2**32, 2**33, 2**64]),
    st.integers(),
)
_junk = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(allow_nan=True),
    st.text(max_size=4),
    st.binary(max_size=4),
    st.builds(np.int64, st.integers(-(2**63), 2**63 - 1)),
    st.builds(np.float32, st.floats(width=32)),
    st.complex_numbers(),
)
_scalar = st.one_of(_ints, _ints, _junk)
_dims = st.one_of(
    _scalar,
    st.lists(_scalar, max_size=4),
    st.tuples(_scalar, _scalar),
    st.lists(_ints, min_size=1, max_size=3),
)
# Kernel arguments: the real buffers (by name), counts, and anything else. An int that passes as
# a pointer (a mapped-looking address) would let the kernel scribble over the process, which
# is the memory-fault tests' business, not this one's: ints here are below the first page or
# outside 64 bits, and every accepted pointer is one of the buffers.
_arg_ints = st.one_of(
    st.integers(1, 4095),
    st.integers(-(2**70), -1),
    st.integers(2**64, 2**70),
    st.builds(np.uint32, st.integers(1, 4095)),
)
_arg_junk = st.one_of(
    st.none(), st.booleans(), st.floats(), st.text(max_size=3), st.binary(max_size=3)
)
_arg = st.one_of(st.sampled_from(["A", "B", "C", "FREED"]), _arg_ints, _arg_junk)


def _ints_of(x):
    """numpy spellings of a grid as plain ints (what the runtime reads them as)."""
    if isinstance(x, np.ndarray):
        return [int(v) for v in x.tolist()]
    if isinstance(x, list | tuple):
        return [int(v) if isinstance(v, np.integer) else v for v in x]
    return x


def _small(x, limit: int) -> bool:
    """Whether `x` is a small all-int grid (it may run: no billion-workgroup simulations)."""
    dims = x if isinstance(x, list | tuple) else [x]
    return (
        all(type(d) is int for d in dims)
        and 0 < len(dims) <= 3
        and all(d >= 1 for d in dims)
        and math.prod(dims) <= limit
    )


@pytest.fixture(scope="module")
def fuzz_env():
    rt = rocr.init(preset="teaching")
    e = SimpleNamespace(rt=rt, errors=[])
    e.k = rt.load_code_object("builtin:vector_add").kernel("vector_add")
    pool = rt.cpu.pools(fine_grained=True, kernarg=False)[0]
    e.bufs = {name: pool.allocate(4 * M) for name in "ABC"}
    rt.allow_access(rt.gpus, e.bufs["A"])
    rt.allow_access(rt.gpus, e.bufs["B"])
    rt.allow_access(rt.gpus, e.bufs["C"])
    e.init = {
        "A": np.arange(M, dtype=np.float32),
        "B": np.full(M, 1, np.float32),
        "C": np.full(M, -1, np.float32),
    }
    e.freed = pool.allocate(64)
    e.freed.free()
    e.q = rt.gpus[0].create_queue(64, callback=lambda err, q: e.errors.append(err))
    yield e
    rt.shutdown()


@st.composite
def _geometry(draw):
    """(grid, workgroup): mostly well-formed (same dimensions, sizes near the limits), in any
    spelling (int, list, tuple, numpy); otherwise anything at all."""
    if draw(st.integers(0, 9)) < 2:
        return draw(_dims), draw(_dims)
    dims = draw(st.integers(1, 3))
    side = {1: M, 2: 64, 3: 16}[dims]  # at most M work-items when run
    grid = [draw(st.one_of(st.integers(1, side), st.sampled_from([1, side]))) for _ in range(dims)]
    if draw(st.integers(0, 9)) == 0:  # huge (valid or not): built as a packet, never run
        grid[0] = draw(st.sampled_from([2**31, 2**32 - 1, 2**32, 2**40]))
    wside = {1: 1100, 2: 34, 3: 11}[dims]  # a little over 1024 work-items at the top
    wg = [draw(st.integers(1, wside)) for _ in range(dims)]
    spell = draw(st.sampled_from(["list", "tuple", "int", "numpy"]))
    if spell == "int" and dims == 1:
        return grid[0], wg[0]
    if spell == "numpy":
        return np.array(grid, dtype=np.int64), [np.int32(w) for w in wg]
    return (tuple(grid), tuple(wg)) if spell == "tuple" else (grid, wg)


def _mostly(good, bad, tenths: int = 8):
    """`good` in `tenths` of ten draws, else `bad` (st.one_of would weigh every branch of a
    nested one_of alike)."""
    return st.integers(0, 9).flatmap(lambda i: good if i < tenths else bad)


_valid_args = st.permutations(["A", "B", "C"]).flatmap(
    lambda p: st.tuples(
        st.just(p[0]),
        st.just(p[1]),
        st.just(p[2]),
        _mostly(st.integers(0, 2 * M), st.one_of(_arg_ints, _arg_junk), 8),
    )
)
_kernel_args = _mostly(_valid_args, st.one_of(st.lists(_arg, max_size=6), _junk), 7)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    geometry=_geometry(),
    kargs=_kernel_args,
    barrier=_mostly(st.booleans(), _scalar, 9),
    acquire=_mostly(st.sampled_from(list(rocr.FenceScope)), _scalar, 9),
    group_segment_size=_mostly(st.none(), st.one_of(st.integers(0, 70000), _junk), 8),
)
def test_random_dispatch_arguments_give_a_result_or_an_hsa_error(
    fuzz_env, geometry, kargs, barrier, acquire, group_segment_size
):
    e = fuzz_env
    grid, workgroup = geometry
    for name, buf in e.bufs.items():
        buf.view(np.float32)[:] = e.init[name]
    is_seq = isinstance(kargs, list | tuple)
    a = (
        tuple(
            e.bufs.get(v, e.freed if v == "FREED" else v) if isinstance(v, str) else v
            for v in kargs
        )
        if is_seq
        else kargs
    )
    call = dict(barrier=barrier, acquire=acquire, group_segment_size=group_segment_size)
    try:
        if _small(_ints_of(grid), M) and _small(_ints_of(workgroup), 1 << 20):
            e.q.dispatch(e.k, grid, workgroup, a, **call).wait()
        else:
            # Huge but valid grids are built, not run: the packet must carry them exactly.
            pkt = e.rt.dispatch_packet(e.k, grid, workgroup, a, **call)
            g = _ints_of(grid)
            g = g if isinstance(g, list) else [g]
            assert [pkt.grid_size_x, pkt.grid_size_y, pkt.grid_size_z][: len(g)] == g
            event("built a packet")
            return
    except rocr.HsaError as err:
        assert isinstance(err.status, rocr.Status) and err.status != rocr.Status.SUCCESS
        assert err.message
        event(f"refused: {err.status.name}")
        assert not e.errors, f"refused up front, the CP never saw it: {e.errors}"
        return
    event("ran")
    # Accepted: the pointers were the real buffers, so the kernel did c = a + b over
    # min(n, work-items) elements and touched nothing else.
    assert not e.errors, e.errors
    names = [next(k for k, b in e.bufs.items() if b is v) for v in a[:3]]
    g = _ints_of(grid)
    m = min(int(a[3]), math.prod(g if isinstance(g, list) else [g]))
    expect = {k: v.copy() for k, v in e.init.items()}
    expect[names[2]][:m] = e.init[names[0]][:m] + e.init[names[1]][:m]
    for name, buf in e.bufs.items():
        assert np.array_equal(buf.view(np.float32), expect[name]), name
