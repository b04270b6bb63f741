"""The wire protocol of the KFD service (`hsaemu kfd --socket PATH`), both directions.

Every message is a 16-byte header `struct { u32 size; u32 op; u64 seq; }` (little-endian)
followed by `size` bytes of body; the reply echoes `op` and `seq`. One connection is one
process (one open of /dev/kfd). Ops below 100 have binary bodies (the C interposer speaks
them); ops from 100 up carry UTF-8 JSON (Python clients). Every reply body starts with
`i32 status` (0 or -errno). A file descriptor travels as SCM_RIGHTS data on the sendmsg that
carries the reply header. docs/kfd-service.md describes every op.

Standard library only: `roct` imports this without pulling in the hardware model.
"""

from __future__ import annotations

import errno
import json
import socket
import struct
from dataclasses import dataclass
from typing import Any

PROTO_VERSION = 1

HEADER = struct.Struct("<IIQ")  # size, op, seq
HEADER_SIZE = HEADER.size
# Bigger bodies are refused (the connection closes): the largest honest message is an IOCTL
# with a WAIT_EVENTS array (4096 events x 24 bytes) or a SET_CU_MASK; 64 MiB leaves room for
# USERPTR-sized in-buffers without letting a bad size field make the daemon allocate gigabytes.
MAX_BODY = 64 * 1024 * 1024

# -- binary ops -------------------------------------------------------------------------------
OP_HELLO = 1
OP_IOCTL = 2
OP_MMAP = 3
OP_CLOSE = 4

# -- JSON ops ---------------------------------------------------------------------------------
OP_HOST_ELAPSE = 100  # {"ps"} -> {"now"}: the client's host spends ps
OP_HOST_NOW = 101  # {} -> {"now"}
OP_HOST_STEP = 102  # {"limit": ps | null} -> {"ok", "now"}: spin until a checked store
OP_HOST_COST = 103  # {"name"} -> {"ps"}: a HostCosts field of the machine's spec
OP_READ_SYSFS = 104  # {"path"} -> {"text"}  (sysfs and /sys/kernel/debug/kfd)
OP_SYSFS_TREE = 105  # {} -> {"files": {path: text}}
OP_MEM_OP = 106  # {"va", "op", "value"?, "n"?} -> {"old"?}: a store others must see
OP_TRACE_MARKER = 107  # {"track", "name", "args"}
OP_STATUS = 108  # {} -> clients, their clocks and states, the runlist and HQDs
OP_PROCESS_INFO = 109  # {} -> {"pasid", "heap_offset", "heap_va", "now"}
OP_PRIME_EXPORT = 110  # {"handle"} -> {"dmabuf_fd"}: DRM_IOCTL_PRIME_HANDLE_TO_FD's analogue
OP_WRITE_REPORTS = 111  # {"directory"} -> {"files"}

OP_NAMES = {
    OP_HELLO: "HELLO",
    OP_IOCTL: "IOCTL",
    OP_MMAP: "MMAP",
    OP_CLOSE: "CLOSE",
    OP_HOST_ELAPSE: "HOST_ELAPSE",
    OP_HOST_NOW: "HOST_NOW",
    OP_HOST_STEP: "HOST_STEP",
    OP_HOST_COST: "HOST_COST",
    OP_READ_SYSFS: "READ_SYSFS",
    OP_SYSFS_TREE: "SYSFS_TREE",
    OP_MEM_OP: "MEM_OP",
    OP_TRACE_MARKER: "TRACE_MARKER",
    OP_STATUS: "STATUS",
    OP_PROCESS_INFO: "PROCESS_INFO",
    OP_PRIME_EXPORT: "PRIME_EXPORT",
    OP_WRITE_REPORTS: "WRITE_REPORTS",
}
JSON_OP_MIN = 100

# HELLO flags
HELLO_NATIVE = 0x1  # no host clock (real ROCm under the interposer)
HELLO_ATTACH = 0x2  # a second connection of an already open process (+ u32 attach_pasid)
HELLO_CLOCKED = 0x4  # a Python client: binary replies end with a trailer carrying its clock

# IOCTL buffer directions
DIR_IN = 1
DIR_OUT = 2
DIR_INOUT = 3

# MMAP fd kinds and reply kinds
FD_KIND_KFD = 0
FD_KIND_RENDER = 1
MMAP_KIND_MEMORY = 0
MMAP_KIND_DOORBELL = 1

HELLO_REQ = struct.Struct("<IIiI")  # proto_version, flags, pid, name_len
HELLO_REP = struct.Struct("<iIII")  # status, proto_version, pasid, msg_len
IOCTL_REQ = struct.Struct("<QII")  # request, args_len, n_bufs
IOCTL_BUF = struct.Struct("<QII")  # addr, len, dir
IOCTL_REP = struct.Struct("<iIII")  # status, args_len, out_len, msg_len
MMAP_REQ = struct.Struct("<QQII")  # offset, length, prot, fd_kind
MMAP_REP = struct.Struct("<iIIQI")  # status, kind, pad, file_offset, msg_len
STATUS_ONLY = struct.Struct("<i")
# HELLO_CLOCKED trailers (after msg): IOCTL -> u64 host clock; MMAP -> va, size, is_mmio, clock
CLOCK_TRAILER = struct.Struct("<Q")
MMAP_TRAILER = struct.Struct("<QQIIQ")  # va, size, is_mmio, pad, host clock


class ProtocolError(Exception):
    """A message that does not follow the protocol; `errno` is what the reply carries."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.errno = code
        self.message = message


@dataclass
class IoctlBuf:
    addr: int
    length: int
    direction: int
    data: bytearray


# -- framing ---------------------------------------------------------------------------------
def _recv_exact(sock: socket.socket, n: int, fds: list[int] | None = None) -> bytes:
    chunks = []
    got = 0
    while got < n:
        if fds is not None and not got:
            data, anc, _flags, _addr = sock.recvmsg(n - got, socket.CMSG_SPACE(4 * 4))
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    usable = len(payload) - len(payload) % 4
                    fds.extend(struct.unpack(f"<{usable // 4}i", payload[:usable]))
        else:
            data = sock.recv(n - got)
        if not data:
            raise EOFError("connection closed")
        chunks.append(data)
        got += len(data)
    return b"".join(chunks)


def recv_message(sock: socket.socket, with_fds: bool = False) -> tuple[int, int, bytes, list[int]]:
    """(op, seq, body, fds). EOFError on a closed connection; ProtocolError on a size the
    protocol does not allow (the caller closes the connection: framing is lost)."""
    fds: list[int] = []
    head = _recv_exact(sock, HEADER_SIZE, fds if with_fds else None)
    size, op, seq = HEADER.unpack(head)
    if size > MAX_BODY:
        raise ProtocolError(errno.EMSGSIZE, f"body of {size} bytes exceeds {MAX_BODY}")
    body = _recv_exact(sock, size) if size else b""
    return op, seq, body, fds


def send_message(
    sock: socket.socket, op: int, seq: int, body: bytes, fd: int | None = None
) -> None:
    data = HEADER.pack(len(body), op, seq) + body
    if fd is None:
        sock.sendall(data)
        return
    sent = socket.send_fds(sock, [data], [fd])
    if sent < len(data):
        sock.sendall(data[sent:])


def status_body(status: int) -> bytes:
    return STATUS_ONLY.pack(status)


# -- JSON bodies -----------------------------------------------------------------------------
def json_body(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def parse_json(body: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(body.decode())
    except (UnicodeDecodeError, ValueError) as e:
        raise ProtocolError(errno.EBADMSG, f"body is not UTF-8 JSON: {e}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(errno.EBADMSG, f"JSON body must be an object, got {type(obj).__name__}")
    return obj


def json_reply(status: int, obj: dict[str, Any] | None = None) -> bytes:
    """A JSON reply: i32 status, then the JSON object (with "status" repeated inside)."""
    return STATUS_ONLY.pack(status) + json_body({"status": status, **(obj or {})})


def parse_json_reply(body: bytes) -> dict[str, Any]:
    if len(body) < 4:
        raise ProtocolError(errno.EBADMSG, f"reply of {len(body)} bytes has no status")
    return parse_json(body[4:]) if len(body) > 4 else {"status": STATUS_ONLY.unpack(body)[0]}


# -- HELLO -----------------------------------------------------------------------------------
def pack_hello(flags: int, pid: int, name: str, attach_pasid: int | None = None) -> bytes:
    raw = name.encode()
    body = HELLO_REQ.pack(PROTO_VERSION, flags, pid, len(raw)) + raw
    if attach_pasid is not None:
        body += struct.pack("<I", attach_pasid)
    return body


def unpack_hello(body: bytes) -> tuple[int, int, int, str, int | None]:
    """(version, flags, pid, name, attach_pasid)."""
    if len(body) < HELLO_REQ.size:
        raise ProtocolError(errno.EBADMSG, f"HELLO body of {len(body)} bytes < {HELLO_REQ.size}")
    version, flags, pid, name_len = HELLO_REQ.unpack_from(body)
    end = HELLO_REQ.size + name_len
    if end > len(body):
        raise ProtocolError(errno.EBADMSG, f"HELLO name_len {name_len} runs past the body")
    name = body[HELLO_REQ.size : end].decode(errors="replace")
    attach = None
    if flags & HELLO_ATTACH:
        if end + 4 > len(body):
            raise ProtocolError(errno.EBADMSG, "HELLO with ATTACH lacks u32 attach_pasid")
        attach = struct.unpack_from("<I", body, end)[0]
    return version, flags, pid, name, attach


def pack_hello_reply(status: int, pasid: int, msg: str = "") -> bytes:
    raw = msg.encode()
    return HELLO_REP.pack(status, PROTO_VERSION, pasid, len(raw)) + raw


def unpack_hello_reply(body: bytes) -> tuple[int, int, int, str]:
    status, version, pasid, n = HELLO_REP.unpack_from(body)
    return status, version, pasid, body[HELLO_REP.size : HELLO_REP.size + n].decode()


# -- IOCTL -----------------------------------------------------------------------------------
def pack_ioctl(request: int, args: bytes, bufs: list[IoctlBuf] = ()) -> bytes:  # type: ignore[assignment]
    parts = [IOCTL_REQ.pack(request, len(args), len(bufs)), bytes(args)]
    parts += [IOCTL_BUF.pack(b.addr, b.length, b.direction) for b in bufs]
    parts += [bytes(b.data) for b in bufs if b.direction & DIR_IN]
    return b"".join(parts)


def unpack_ioctl(body: bytes) -> tuple[int, bytearray, list[IoctlBuf]]:
    if len(body) < IOCTL_REQ.size:
        raise ProtocolError(errno.EBADMSG, f"IOCTL body of {len(body)} bytes < {IOCTL_REQ.size}")
    request, args_len, n_bufs = IOCTL_REQ.unpack_from(body)
    pos = IOCTL_REQ.size
    if pos + args_len > len(body):
        raise ProtocolError(errno.EBADMSG, f"IOCTL args_len {args_len} runs past the body")
    args = bytearray(body[pos : pos + args_len])
    pos += args_len
    if n_bufs > 64:
        raise ProtocolError(errno.EINVAL, f"IOCTL n_bufs {n_bufs} > 64")
    if pos + n_bufs * IOCTL_BUF.size > len(body):
        raise ProtocolError(errno.EBADMSG, f"IOCTL with {n_bufs} bufs runs past the body")
    bufs = []
    for _ in range(n_bufs):
        addr, length, direction = IOCTL_BUF.unpack_from(body, pos)
        pos += IOCTL_BUF.size
        if direction not in (DIR_IN, DIR_OUT, DIR_INOUT):
            raise ProtocolError(errno.EINVAL, f"IOCTL buf dir {direction}: 1 in, 2 out, 3 inout")
        bufs.append(IoctlBuf(addr, length, direction, bytearray(length)))
    for b in bufs:
        if b.direction & DIR_IN:
            if pos + b.length > len(body):
                raise ProtocolError(
                    errno.EBADMSG, f"IOCTL in-buf at {b.addr:#x} of {b.length} bytes is missing"
                )
            b.data[:] = body[pos : pos + b.length]
            pos += b.length
    if pos != len(body):
        raise ProtocolError(errno.EBADMSG, f"IOCTL body has {len(body) - pos} trailing bytes")
    return request, args, bufs


def pack_ioctl_reply(
    status: int, args: bytes, bufs: list[IoctlBuf], msg: str, clock: int | None = None
) -> bytes:
    out = b"".join(bytes(b.data) for b in bufs if b.direction & DIR_OUT)
    raw = msg.encode()
    body = IOCTL_REP.pack(status, len(args), len(out), len(raw)) + bytes(args) + out + raw
    if clock is not None:
        body += CLOCK_TRAILER.pack(clock)
    return body


def unpack_ioctl_reply(body: bytes, clocked: bool = False) -> tuple[int, bytes, bytes, str, int]:
    """(status, args, out, msg, clock)."""
    status, args_len, out_len, msg_len = IOCTL_REP.unpack_from(body)
    pos = IOCTL_REP.size
    args = body[pos : pos + args_len]
    pos += args_len
    out = body[pos : pos + out_len]
    pos += out_len
    msg = body[pos : pos + msg_len].decode(errors="replace")
    pos += msg_len
    clock = CLOCK_TRAILER.unpack_from(body, pos)[0] if clocked else 0
    return status, args, out, msg, clock


# -- MMAP ------------------------------------------------------------------------------------
def pack_mmap(offset: int, length: int, prot: int = 3, fd_kind: int = FD_KIND_KFD) -> bytes:
    return MMAP_REQ.pack(offset, length, prot, fd_kind)


def unpack_mmap(body: bytes) -> tuple[int, int, int, int]:
    if len(body) != MMAP_REQ.size:
        raise ProtocolError(errno.EBADMSG, f"MMAP body of {len(body)} bytes != {MMAP_REQ.size}")
    return MMAP_REQ.unpack(body)


def pack_mmap_reply(
    status: int,
    kind: int = 0,
    file_offset: int = 0,
    msg: str = "",
    trailer: tuple[int, int, int, int] | None = None,
) -> bytes:
    raw = msg.encode()
    body = MMAP_REP.pack(status, kind, 0, file_offset, len(raw)) + raw
    if trailer is not None:
        va, size, mmio, clock = trailer
        body += MMAP_TRAILER.pack(va, size, mmio, 0, clock)
    return body


def unpack_mmap_reply(
    body: bytes, clocked: bool = False
) -> tuple[int, int, int, str, tuple[int, int, int, int] | None]:
    """(status, kind, file_offset, msg, (va, size, is_mmio, clock) or None)."""
    status, kind, _pad, file_offset, n = MMAP_REP.unpack_from(body)
    pos = MMAP_REP.size
    msg = body[pos : pos + n].decode(errors="replace")
    trailer = None
    if clocked and status == 0:
        va, size, mmio, _p, clock = MMAP_TRAILER.unpack_from(body, pos + n)
        trailer = (va, size, mmio, clock)
    return status, kind, file_offset, msg, trailer
