"""Calls that are not device waits are bounded or cancellable too: a big synchronous copy goes
in pieces and stops when its system is deleted or its client hangs up (the bytes after the
piece in progress stay as they were); an uploaded ELF whose tables would keep the loader busy
is refused before loading, and its image is charged to the system before it is allocated.

Each test holds the copy inside its first piece (the runtime's copy is wrapped to wait for the
test), so what is asserted does not depend on how fast the machine is."""

import base64
import struct
import threading

import httpx
import pytest

from rocr.service import emulation
from rocr.service.routes.code import ELF_TABLE_ENTRIES_MAX
from rocr.service.routes.copies import COPY_SLICE_BYTES
from rocr.service.schemas import ServerLimits
from rocr.service.testing import ServerThread, in_process_client, until

JOIN_S = 60  # a regression fails here instead of hanging the suite
HOST_POOL = 1  # system fine-grained
SIZE = 4 * COPY_SLICE_BYTES


@pytest.fixture(scope="module")
def srv():
    st = ServerThread(limits=ServerLimits(max_wait_ms=20_000))
    st.start()
    yield st
    st.stop()


class HeldCopy:
    """The system's runtime copies its first piece, then waits for `go` (test-controlled)."""

    def __init__(self, rt):
        self.rt, self.calls = rt, 0
        self.first_done, self.go = threading.Event(), threading.Event()
        self.original = rt.memory_copy
        rt.memory_copy = self

    def __call__(self, dst, src, size):
        self.calls += 1
        self.original(dst, src, size)
        if self.calls == 1:
            self.first_done.set()
            assert self.go.wait(JOIN_S)


def _copy_setup(srv, c):
    d = c.post("/v1/systems", json={"preset": "teaching"}).json()
    path, auth = f"/v1/systems/{d['id']}", {"Authorization": f"Bearer {d['token']}"}
    bufs = []
    for _ in range(2):
        r = c.post(path + "/buffers", json={"pool": HOST_POOL, "size": SIZE}, headers=auth)
        assert r.status_code == 201, r.text
        bufs.append(r.json()["address"])
    dst, src = bufs
    r = c.post(
        path + "/memory-fill",
        json={"ptr": src, "value": 0x01020304, "count": SIZE // 4},
        headers=auth,
    )
    assert r.status_code == 204, r.text
    served = srv.app.state.registry.get_admin(d["id"])
    return path, auth, dst, src, served


def _dst_piece(c, path, auth, dst, offset):
    r = c.get(f"{path}/buffers/{dst}/bytes", params={"offset": offset, "size": 16}, headers=auth)
    assert r.status_code == 200, r.text
    return base64.b64decode(r.json()["data"])


class Poster(threading.Thread):
    def __init__(self, url, json, headers, timeout=JOIN_S):
        super().__init__(daemon=True)
        self.args_, self.response, self.error = (url, json, headers, timeout), None, None

    def run(self):
        url, json, headers, timeout = self.args_
        try:
            self.response = httpx.post(url, json=json, headers=headers, timeout=timeout)
        except httpx.HTTPError as e:
            self.error = e


def test_delete_stops_a_big_host_copy_between_pieces(srv):
    c = httpx.Client(base_url=srv.url, timeout=JOIN_S)
    path, auth, dst, src, served = _copy_setup(srv, c)
    held = HeldCopy(served.rt)
    body = {"dst": dst, "src": src, "size": SIZE}
    copy = Poster(srv.url + path + "/memory-copy", body, auth)
    copy.start()
    assert held.first_done.wait(JOIN_S)
    deleter = Poster(srv.url + path, None, auth)  # DELETE below, in its own thread
    deleter.run = lambda: setattr(deleter, "response", httpx.delete(srv.url + path, headers=auth))
    deleter.start()
    until(lambda: served.cancelled is not None, "DELETE did not cancel the system")
    held.go.set()
    copy.join(JOIN_S)
    deleter.join(JOIN_S)
    assert copy.response.status_code == 404, copy.response.text
    assert "no system" in copy.response.json()["message"]
    assert deleter.response.status_code == 204
    assert held.calls == 1  # no piece after the one in progress


def test_a_client_hanging_up_stops_a_big_host_copy(srv, monkeypatch):
    watches = []

    class Recorded(emulation.Watch):
        def __init__(self):
            super().__init__()
            watches.append(self)

    monkeypatch.setattr(emulation, "Watch", Recorded)
    c = httpx.Client(base_url=srv.url, timeout=JOIN_S)
    path, auth, dst, src, served = _copy_setup(srv, c)
    held = HeldCopy(served.rt)
    body = {"dst": dst, "src": src, "size": SIZE}
    copy = Poster(srv.url + path + "/memory-copy", body, auth, timeout=0.5)
    copy.start()
    copy.join(JOIN_S)
    assert isinstance(copy.error, httpx.ReadTimeout)  # the client gave up and hung up
    until(lambda: watches and watches[-1].abandoned, "the hang-up went unnoticed")
    held.go.set()
    until(lambda: not served.lock.locked(), "the copy went on")
    assert held.calls == 1
    # The first piece was copied, the rest of the destination is as it was.
    assert _dst_piece(c, path, auth, dst, 0) == bytes([4, 3, 2, 1]) * 4
    assert _dst_piece(c, path, auth, dst, COPY_SLICE_BYTES) == bytes(16)
    assert c.delete(path, headers=auth).status_code == 204


def test_a_small_copy_is_one_hsa_memory_copy(srv):
    c = httpx.Client(base_url=srv.url, timeout=JOIN_S)
    path, auth, dst, src, served = _copy_setup(srv, c)
    calls = []
    original = served.rt.memory_copy
    served.rt.memory_copy = lambda d, s, n: (calls.append(n), original(d, s, n))
    r = c.post(path + "/memory-copy", json={"dst": dst, "src": src, "size": 4096}, headers=auth)
    assert r.status_code == 204 and calls == [4096]
    r = c.post(path + "/memory-copy", json={"dst": dst, "src": src, "size": SIZE}, headers=auth)
    assert r.status_code == 204 and calls[1:] == [COPY_SLICE_BYTES] * 4
    assert _dst_piece(c, path, auth, dst, SIZE - 16) == bytes([4, 3, 2, 1]) * 4
    # A range past a buffer is refused whole, before any piece is copied.
    r = c.post(path + "/memory-copy", json={"dst": dst, "src": src, "size": SIZE + 1}, headers=auth)
    assert r.status_code == 400 and "past the end" in r.json()["message"] and len(calls) == 5
    assert c.delete(path, headers=auth).status_code == 204


# -- uploaded ELF code objects -------------------------------------------------------------------


def _elf(sections: list[tuple[int, int, int]], loads: list[tuple[int, int]], data: bytes) -> bytes:
    """A minimal AMDGPU ELF64: `loads` (vaddr, memsz) PT_LOAD segments over `data`, and
    sections (type, offset, size) beside a section name table."""
    ehdr, phdr, shdr = 64, 56, 64
    phoff = ehdr
    data_off = phoff + phdr * len(loads)
    shoff = data_off + len(data)
    out = bytearray()
    ident = b"\x7fELF" + bytes([2, 1, 1, 64, 3]) + bytes(7)
    out += struct.pack(
        "<16sHHIQQQIHHHHHH",
        ident,
        3,  # ET_DYN
        224,  # EM_AMDGPU
        1,
        0,
        phoff,
        shoff,
        0x22F,  # gfx90a-ish mach bits; the checks here come first
        ehdr,
        phdr,
        len(loads),
        shdr,
        len(sections) + 1,
        0,
    )
    for vaddr, memsz in loads:
        out += struct.pack("<IIQQQQQQ", 1, 5, data_off, vaddr, vaddr, len(data), memsz, 4096)
    out += data
    out += struct.pack("<IIQQQQIIQQ", 0, 3, 0, 0, shoff, 0, 0, 0, 1, 0)  # names: empty
    for kind, off, size in sections:
        out += struct.pack("<IIQQQQIIQQ", 0, kind, 0, 0, off, size, 0, 0, 8, 24)
    return bytes(out)


def _upload(c, path, auth, blob):
    octet = {**auth, "Content-Type": "application/octet-stream"}
    return c.post(path + "/executables", params={"agent": 1}, content=blob, headers=octet)


def test_an_elf_whose_tables_overlap_is_refused_before_loading():
    rela = 4  # SHT_RELA
    data = bytes(24 * 4096)  # 4,096 (zero, R_AMDGPU_NONE) relocations
    per = len(data) // 24
    count = ELF_TABLE_ENTRIES_MAX // per + 1
    blob = _elf([(rela, 64 + 56, len(data))] * count, [(0, len(data))], data)
    with in_process_client() as c:
        d = c.post("/v1/systems", json={"preset": "teaching"}).json()
        path, auth = f"/v1/systems/{d['id']}", {"Authorization": f"Bearer {d['token']}"}
        r = _upload(c, path, auth, blob)
        assert r.status_code == 400, r.text
        msg = r.json()["message"]
        assert r.json()["status"] == "HSA_STATUS_ERROR_INVALID_CODE_OBJECT"
        assert f"{count * per} entries" in msg and f"at most {ELF_TABLE_ENTRIES_MAX}" in msg
        # Nothing was loaded or charged.
        assert c.get(path, headers=auth).json()["executables"] == 0


def test_an_elf_image_is_charged_before_the_loader_allocates_it(compile_cl):
    blob = bytearray(compile_cl("kernel void k(global int *p) { p[0] = 1; }").read_bytes())
    (phoff,) = struct.unpack_from("<Q", blob, 32)
    (phnum,) = struct.unpack_from("<H", blob, 56)
    last = max(
        (i for i in range(phnum) if struct.unpack_from("<I", blob, phoff + 56 * i)[0] == 1),
        key=lambda i: struct.unpack_from("<Q", blob, phoff + 56 * i + 16)[0],
    )
    # Its last PT_LOAD grows by 8 MiB of zero-filled memory (as a big .bss would).
    (memsz,) = struct.unpack_from("<Q", blob, phoff + 56 * last + 40)
    struct.pack_into("<Q", blob, phoff + 56 * last + 40, memsz + (8 << 20))
    limits = ServerLimits(max_memory_per_system=2 << 20)
    with in_process_client(limits=limits) as c:
        d = c.post("/v1/systems", json={"preset": "teaching"}).json()
        path, auth = f"/v1/systems/{d['id']}", {"Authorization": f"Bearer {d['token']}"}
        r = _upload(c, path, auth, bytes(blob))
        assert r.status_code == 429, r.text
        assert "max_memory_per_system" in r.json()["message"]
        info = c.get(path, headers=auth).json()
        assert info["executables"] == 0 and info["memory_bytes"] < 2 << 20
