"""The thunk's transport to a KFD service on a Unix socket (`hsaemu kfd --socket PATH`).

What `InProcess` does with a KFD in this interpreter, this does with a KFD in another OS
process, over rock_emu/protocol.py: ioctls travel as the raw `kfd_ioctl_*_args` bytes, mmap
returns the BO's memfd (mapped here, so `array` is a zero-copy view of the very pages the
device reads), and the host clock is this process's own clock, kept by the service.

Plain loads and stores go straight to the shared pages, as a CPU's do. Stores that others must
see at once — signal values, atomics, the doorbell's MMIO write — travel as MEM_OP, which the
service performs through the memory model at this process's host time (the doorbell rings, a
barrier watching the address wakes), as `HostMapping.store_*` does in-process.
"""

from __future__ import annotations

import contextlib
import errno
import json
import mmap
import os
import socket
import struct
import threading
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from rock_emu import protocol as P
from rock_emu.ioctl import KfdError

_I64 = struct.Struct("<q")
_U64 = struct.Struct("<Q")


def _i64(v: int) -> int:
    return ((v + 2**63) % 2**64) - 2**63


class SocketMapping:
    """A CPU mapping of a BO of the service (the interface of rock_emu.mapping.HostMapping)."""

    def __init__(
        self, transport: SocketTransport, mm: mmap.mmap, va: int, size: int, is_mmio: bool
    ) -> None:
        self._t = transport
        self._mm = mm
        self.pasid = transport.pasid
        self.address = va
        self.size = size
        self.is_mmio = is_mmio
        self._array = np.frombuffer(mm, dtype=np.uint8)[:size]

    @property
    def array(self) -> np.ndarray:
        """The mapped bytes as a writable uint8 array (not for MMIO pages)."""
        if self.is_mmio:
            raise TypeError("an MMIO page has no cacheable view; use store_u64()")
        return self._array

    def _off(self, offset: int, n: int) -> int:
        if offset < 0 or offset + n > self.size:
            raise IndexError(f"offset {offset}+{n} outside the {self.size}-byte mapping")
        return offset

    def read(self, offset: int, n: int) -> bytes:
        o = self._off(offset, n)
        return bytes(self._mm[o : o + n])

    def write(self, offset: int, data: bytes) -> None:
        o = self._off(offset, len(data))
        if self._t.native:  # a plain store: the service's watcher notices doorbells
            self._mm[o : o + len(data)] = bytes(data)
            return
        if self.is_mmio:
            self._t.mem_op(self.address + o, "write", data=bytes(data).hex())
            return
        self._mm[o : o + len(data)] = bytes(data)
        self._t.mem_op(self.address + o, "notify", n=len(data))

    def load_i64(self, offset: int) -> int:
        return _I64.unpack_from(self._mm, self._off(offset, 8))[0]

    def load_u64(self, offset: int) -> int:
        return _U64.unpack_from(self._mm, self._off(offset, 8))[0]

    def store_u64(self, offset: int, value: int) -> None:
        if self._t.native:
            _U64.pack_into(self._mm, self._off(offset, 8), value & 0xFFFFFFFFFFFFFFFF)
            return
        self._t.mem_op(
            self.address + self._off(offset, 8), "store_u64", value=value & 0xFFFFFFFFFFFFFFFF
        )

    def store_i64(self, offset: int, value: int) -> None:
        self.store_u64(offset, value)

    def _atomic(self, offset: int, op: str, value: int, **extra: Any) -> int:
        if self._t.native:
            return self._local_atomic(offset, op, value, extra.get("new", 0))
        r = self._t.mem_op(self.address + self._off(offset, 8), op, value=_i64(value), **extra)
        return int(r["old"])

    def _local_atomic(self, offset: int, op: str, value: int, new: int) -> int:
        # A native host's atomics are plain read-modify-writes on the shared page: nobody is
        # told, as with a real CPU's lock-prefixed instruction (the service polls).
        o = self._off(offset, 8)
        old = _I64.unpack_from(self._mm, o)[0]
        result = {
            "atomic_add_i64": old + value,
            "atomic_exchange_i64": value,
            "atomic_cas_i64": new if old == value else old,
            "atomic_and_i64": old & value,
            "atomic_or_i64": old | value,
            "atomic_xor_i64": old ^ value,
        }[op]
        _I64.pack_into(self._mm, o, _i64(result))
        return old

    def atomic_add_i64(self, offset: int, delta: int) -> int:
        return self._atomic(offset, "atomic_add_i64", delta)

    def store_u64_at(self, offset: int) -> Callable[[int], None]:
        """`store_u64(offset, value)` as `f(value)` (HostMapping.store_u64_at)."""
        return partial(self.store_u64, self._off(offset, 8))

    def atomic_add_i64_at(self, offset: int) -> Callable[[int], int]:
        """`atomic_add_i64(offset, delta)` as `f(delta)` (HostMapping.atomic_add_i64_at)."""
        return partial(self.atomic_add_i64, self._off(offset, 8))

    def va_writer(self) -> Callable[[int, bytes], None]:
        """`write(va - address, data)` as `f(va, data)` (HostMapping.va_writer)."""
        return lambda va, data: self.write(va - self.address, data)

    def atomic_exchange_i64(self, offset: int, value: int) -> int:
        return self._atomic(offset, "atomic_exchange_i64", value)

    def atomic_cas_i64(self, offset: int, expected: int, value: int) -> int:
        return self._atomic(offset, "atomic_cas_i64", expected, new=_i64(value))

    def atomic_and_i64(self, offset: int, mask: int) -> int:
        return self._atomic(offset, "atomic_and_i64", mask)

    def atomic_or_i64(self, offset: int, mask: int) -> int:
        return self._atomic(offset, "atomic_or_i64", mask)

    def atomic_xor_i64(self, offset: int, mask: int) -> int:
        return self._atomic(offset, "atomic_xor_i64", mask)


class _Heap:
    def __init__(self, handle: int) -> None:
        self.handle = handle


class _Process:
    """What the thunk asks of its transport's process: where the user heap is."""

    def __init__(self, pasid: int, heap_handle: int) -> None:
        self.pasid = pasid
        self.heap = _Heap(heap_handle)


class SocketTransport:
    """A process of the KFD service at `path` (one connection = one open of /dev/kfd)."""

    system = None  # the machine lives in the service

    def __init__(
        self, path: str, name: str = "", *, timeout: float | None = None, native: bool = False
    ) -> None:
        """`native=True` behaves as real ROCm under the interposer does: no host clock (the
        process acts at device time and never holds the clock back), stores are plain stores
        to the shared pages (the service's watcher rings doorbells)."""
        if path.startswith("unix:"):
            path = path[len("unix:") :]
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except OSError as e:
            self.sock.close()
            raise KfdError(
                e.errno or errno.ECONNREFUSED,
                f"cannot reach the KFD service at {path}: {e.strerror or e}; start one with "
                f"`hsaemu kfd --socket {path}`",
            ) from None
        self._seq = 0
        self._lock = threading.Lock()
        self._costs: dict[str, int] = {}
        self.now = 0
        self.closed = False
        self.native = native
        flags = P.HELLO_CLOCKED | (P.HELLO_NATIVE if native else 0)
        body = P.pack_hello(flags, os.getpid(), name or f"pid {os.getpid()}")
        status, _version, pasid, msg = P.unpack_hello_reply(self._call(P.OP_HELLO, body)[0])
        if status:
            self.sock.close()
            raise KfdError(-status, f"KFD service refused HELLO: {msg}")
        self.pasid = pasid
        info = self._json(P.OP_PROCESS_INFO, {})
        self.process = _Process(pasid, int(info["heap_offset"]) >> 12)

    # -- plumbing ------------------------------------------------------------------------------
    def _call(self, op: int, body: bytes, want_fd: bool = False) -> tuple[bytes, list[int]]:
        with self._lock:
            if self.closed:
                raise KfdError(errno.EBADF, "this KFD connection was closed")
            self._seq += 1
            seq = self._seq
            try:
                P.send_message(self.sock, op, seq, body)
                rop, rseq, reply, fds = P.recv_message(self.sock, with_fds=want_fd)
            except (EOFError, OSError) as e:
                self.closed = True
                raise KfdError(errno.EPIPE, f"the KFD service went away: {e}") from None
        if rop != op or rseq != seq:
            raise KfdError(errno.EBADMSG, f"reply op {rop}/seq {rseq} to op {op}/seq {seq}")
        return reply, fds

    def _json(self, op: int, req: dict[str, Any], check: bool = True) -> dict[str, Any]:
        body = json.dumps(req, separators=(",", ":"), default=str).encode()
        reply = P.parse_json_reply(self._call(op, body)[0])
        if "now" in reply:
            self.now = int(reply["now"])
        if check and reply.get("status", 0):
            raise KfdError(-int(reply["status"]), str(reply.get("message", "")))
        return reply

    # -- Transport -----------------------------------------------------------------------------
    def ioctl(self, request: int, buf: bytearray) -> int:
        reply, _ = self._call(P.OP_IOCTL, P.pack_ioctl(request, bytes(buf)))
        status, args, _out, msg, clock = P.unpack_ioctl_reply(reply, clocked=True)
        self.now = clock
        if status:
            raise KfdError(-status, msg)
        buf[:] = args
        return 0

    def mmap(self, offset: int, length: int) -> SocketMapping:
        reply, fds = self._call(P.OP_MMAP, P.pack_mmap(offset, length), want_fd=True)
        status, kind, file_offset, msg, trailer = P.unpack_mmap_reply(reply, clocked=True)
        if status:
            for fd in fds:
                os.close(fd)
            raise KfdError(-status, msg)
        assert trailer is not None
        va, size, mmio, clock = trailer
        self.now = clock
        if not fds:
            raise KfdError(errno.EBADMSG, "MMAP reply carried no file descriptor")
        try:
            mm = mmap.mmap(fds[0], size, mmap.MAP_SHARED, offset=file_offset)
        finally:
            for fd in fds:
                os.close(fd)
        del kind
        return SocketMapping(self, mm, va, size, bool(mmio))

    def read_sysfs(self, path: str) -> str:
        r = self._json(P.OP_READ_SYSFS, {"path": path}, check=False)
        if r["status"] == -errno.ENOENT:
            raise FileNotFoundError(r.get("message", path))
        if r["status"]:
            raise KfdError(-r["status"], r.get("message", ""))
        return r["text"]

    def host_elapse(self, ps: int) -> int:
        return int(self._json(P.OP_HOST_ELAPSE, {"ps": int(ps)})["now"])

    def host_now(self) -> int:
        return self.now

    def host_cost(self, name: str) -> int:
        ps = self._costs.get(name)
        if ps is None:
            try:
                ps = int(self._json(P.OP_HOST_COST, {"name": name})["ps"])
            except KfdError as e:
                raise AttributeError(e.message) from None
            self._costs[name] = ps
        return ps

    def host_step(self, limit_ps: int | None = None) -> bool:
        limit = None if limit_ps is None else int(limit_ps)
        return bool(self._json(P.OP_HOST_STEP, {"limit": limit})["ok"])

    def trace_marker(self, track: str, name: str, args: dict | None = None) -> None:
        self._json(P.OP_TRACE_MARKER, {"track": track, "name": name, "args": args})

    def mem_op(self, va: int, op: str, **fields: Any) -> dict[str, Any]:
        return self._json(P.OP_MEM_OP, {"va": va, "op": op, **fields})

    def close(self) -> None:
        if self.closed:
            return
        with contextlib.suppress(KfdError):
            self._call(P.OP_CLOSE, b"")
        self.closed = True
        self.sock.close()

    # -- beyond Transport ----------------------------------------------------------------------
    def sysfs_tree(self) -> dict[str, str]:
        """Every file of the machine's KFD topology: {path: text}."""
        return dict(self._json(P.OP_SYSFS_TREE, {})["files"])

    def status(self) -> dict[str, Any]:
        """The service's clients, their clocks and states, the runlist and HQDs."""
        return self._json(P.OP_STATUS, {})

    def write_reports(self, directory: str) -> list[str]:
        return list(self._json(P.OP_WRITE_REPORTS, {"directory": directory})["files"])

    def prime_export(self, handle: int) -> int:
        """The dma-buf of BO `handle`, as DRM_IOCTL_PRIME_HANDLE_TO_FD on the render node."""
        return int(self._json(P.OP_PRIME_EXPORT, {"handle": handle})["dmabuf_fd"])

    def __enter__(self) -> SocketTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["SocketMapping", "SocketTransport"]
