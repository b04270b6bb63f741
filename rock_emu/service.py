"""The KFD as a service: `hsaemu kfd --socket PATH` — one emulated machine that OS processes share.

A connection is a process that opened /dev/kfd (one `KfdProcess`: PASID, VM, doorbell frame,
events). Requests follow rock_emu/protocol.py. Every BO of a client lives in its own memfd,
mapped here (the BO's numpy array is a view of it) and in the client: the CP, the SDMA engines
and the shaders touch the very pages the client reads.

Time (docs/kfd-service.md): the daemon owns the device clock; every Python client carries its
own host clock. A request acts when its client's clock is the earliest of the clients that hold
the clock back (conservative synchronisation): the engine first fires every device event up to
that time, then the request runs exactly as in-process. A client sleeping in WAIT_EVENTS or
spinning in HOST_STEP is parked and holds the clock back only up to its deadline; it wakes at
the device time its condition became true. Native clients (real ROCm under the interposer) have
no host clock: they act at the current device time and never hold the clock back; with nobody
holding it the device runs freely while it has work. One thread per connection reads requests;
only the thread that holds the turn (or the driver thread, when nobody does) touches the model.

A connection's EOF is process exit (kfd_process_notifier_release): queues destroyed, BOs freed,
memfds closed, events dropped, PASID released.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import mmap
import os
import signal
import socket
import stat
import struct
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np

from hw_model.memory import PAGE_SIZE
from hw_model.system import WaitOutcome
from rock_emu import kfd_for, machine
from rock_emu import protocol as P
from rock_emu.ioctl import KfdError, request_name
from rock_emu.kfd import KfdProcess

log = logging.getLogger("hsaemu.kfd")

DEFAULT_IDLE_LEASE_MS = 50
# How often the driver looks at native clients' doorbell pages and at the monitored addresses
# their hosts may have stored to (they tell nobody): 0.5 ms of wall time (guess: well under a
# real doorbell-to-fetch latency budget of the CP, small against Python's per-request cost).
WATCH_INTERVAL_S = 0.0005
# Device events the driver fires before it looks at the sockets again (guess: a few ms of work).
SLICE_EVENTS = 2000

IDLE, READY, ACTIVE, PARKED = "idle", "ready", "active", "parked"
PS_PER_S = 10**12
# ROCr's waits "forever" pass a timeout just below KFD_EVENT_TIMEOUT_INFINITE (0xFFFFFFFF ms):
# a native wait at least this long is treated as infinite.
NATIVE_FOREVER_PS = (0xFFFFFFFF - 1) * 10**9
_SO_PEERCRED = struct.Struct("3i")  # struct ucred {pid, uid, gid}
_U64 = struct.Struct("<Q")
# What a native client's doorbell slot holds when the watcher has seen every store to it: no
# queue's write index or SDMA write offset reaches it.
DOORBELL_SENTINEL = 0xFFFF_FFFF_FFFF_FFFF


class Gone(Exception):
    """The connection (or its process) ended while its request waited: no reply."""


class Conn:
    """One connection: a process's first connection, or one attached to it."""

    def __init__(self, sock: socket.socket, pid: int, uid: int, order: int) -> None:
        self.sock = sock
        self.peer_pid = pid
        self.uid = uid
        self.order = order
        self.pid = pid
        self.name = ""
        self.native = True
        self.clocked = False
        self.process: KfdProcess | None = None
        self.owner: Conn | None = None  # set on attached connections
        self.attached: list[Conn] = []
        self.t = 0  # host clock (ps); for native clients only the time of a park
        self.state = IDLE
        self.act: int | None = None  # when the pending request acts (None: device time)
        self.cost = 0  # host cost the handler adds before acting (native requests)
        self.incl = False  # the request runs the engine to `act` inclusive (host_advance)
        self.pred: Callable[[], bool] | None = None
        self.deadline: int | None = None  # device time (ps) a parked Python client wakes at
        self.wall_deadline: float | None = None  # time.monotonic() a parked native client does
        self.native_limit: int | None = None  # the device-time limit that wall deadline stands for
        self.park_kind = ""
        self.outcome: WaitOutcome | None = None
        self.wakeup_ps = 0
        self.last_wall = time.monotonic()
        self.leased = False
        self.dead = False
        self.doorbells: dict[tuple[int, int], int] = {}  # (gpu_id, queue id) -> value rung
        self.requests = 0

    @property
    def pasid(self) -> int:
        return self.process.pasid if self.process is not None else 0


class KfdService:
    def __init__(
        self,
        path: str,
        *,
        preset: str | None = None,
        system: Any = None,
        idle_lease_ms: float = DEFAULT_IDLE_LEASE_MS,
        trace: bool | None = None,
    ) -> None:
        self.path = path
        self.kfd = kfd_for(system) if system is not None else machine(preset=preset, trace=trace)
        self.system = self.kfd.system
        self.memory = self.system.memory
        self.engine = self.system.engine
        self.lease_s = idle_lease_ms / 1000
        self.cond = threading.Condition()
        self.conns: list[Conn] = []
        self.granted: Conn | None = None
        self.stopping = False
        self._order = 0
        self._wanting = 0
        self._wanting_lock = threading.Lock()
        # memfds of every BO of every client: data address of the BO's array -> fd
        self._memfds: dict[int, int] = {}
        self._bo_count = -1
        self._watch_snap: dict[tuple[int, int], bytes] = {}
        self._next_watch = 0.0
        self.sock: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self.errors = 0  # malformed messages seen (STATUS)

    # -- lifecycle -------------------------------------------------------------------------
    def bind(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.lstat(self.path).st_mode):
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                    try:
                        probe.connect(self.path)
                    except OSError:
                        os.unlink(self.path)  # a socket nobody listens on: left by a crash
                    else:
                        raise OSError(
                            errno.EADDRINUSE, f"a KFD service already listens at {self.path}"
                        )
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # the socket is born 0600: no window where others may connect
        try:
            s.bind(self.path)
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        s.listen(64)
        self.sock = s

    def serve_forever(self, install_signals: bool = True) -> None:
        if self.sock is None:
            self.bind()
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self.stop())
        driver = threading.Thread(target=self._drive, name="kfd-driver", daemon=True)
        driver.start()
        log.info("KFD service on %s (%s)", self.path, self.system.spec.gpu.name)
        assert self.sock is not None
        self.sock.settimeout(0.2)
        try:
            while not self.stopping:
                try:
                    cs, _ = self.sock.accept()
                except TimeoutError:
                    continue
                except OSError:
                    if self.stopping:
                        break
                    raise
                self._accept(cs)
        finally:
            self.stop()
            driver.join(timeout=5)
            self._cleanup_socket()

    def stop(self) -> None:
        self.stopping = True
        with contextlib.suppress(Exception):
            if self.cond.acquire(timeout=0.5):
                try:
                    self.cond.notify_all()
                finally:
                    self.cond.release()

    def _cleanup_socket(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        for c in list(self.conns):
            with contextlib.suppress(OSError):
                c.sock.shutdown(socket.SHUT_RDWR)

    def _accept(self, cs: socket.socket) -> None:
        try:
            pid, uid, _gid = _SO_PEERCRED.unpack(
                cs.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _SO_PEERCRED.size)
            )
        except OSError:
            cs.close()
            return
        if uid != os.getuid():
            log.warning("refused a connection from uid %d (pid %d): not our uid", uid, pid)
            cs.close()
            return
        self._order += 1
        c = Conn(cs, pid, uid, self._order)
        t = threading.Thread(target=self._serve, args=(c,), name=f"kfd-conn-{pid}", daemon=True)
        self._threads = [x for x in self._threads if x.is_alive()] + [t]
        t.start()

    # -- a connection's thread -------------------------------------------------------------
    def _serve(self, c: Conn) -> None:
        sock = c.sock
        try:
            op, seq, body, _ = P.recv_message(sock)
            if op == P.OP_STATUS:  # a peek (hsaemu kfd --status): no process is opened
                with self._turn_lock():
                    P.send_message(sock, op, seq, P.json_reply(0, self.status()))
                return
            if op != P.OP_HELLO:
                msg = f"first message is op {op}, not HELLO ({P.OP_HELLO}) or STATUS"
                self._bad(c, msg)
                P.send_message(sock, op, seq, P.status_body(-errno.EPROTO) + msg.encode())
                return
            reply = self._hello(c, body)
            P.send_message(sock, P.OP_HELLO, seq, reply)
            if c.process is None:
                return
            while not self.stopping:
                op, seq, body, fds = P.recv_message(sock, with_fds=True)
                for fd in fds:  # the protocol sends no fds upward
                    os.close(fd)
                c.requests += 1
                if op == P.OP_CLOSE:
                    P.send_message(sock, op, seq, P.status_body(0))
                    break
                try:
                    reply, fd = self._request(c, op, body)
                except Gone:
                    return
                except Exception as e:  # a bug here must cost one request, not the service
                    log.error("op %d of pid %d: %s", op, c.peer_pid, traceback.format_exc())
                    msg = f"{P.OP_NAMES.get(op, op)}: internal error of the KFD service: {e}"
                    reply, fd = P.status_body(-errno.EIO) + msg.encode(), None
                    if op >= P.JSON_OP_MIN:
                        reply = P.json_reply(-errno.EIO, {"message": msg})
                P.send_message(sock, op, seq, reply, fd)
        except (EOFError, ConnectionError, BrokenPipeError, Gone):
            pass
        except P.ProtocolError as e:
            self._bad(c, e.message)
        except OSError as e:
            if not self.stopping:
                log.info("connection of pid %d: %s", c.peer_pid, e)
        finally:
            self._drop(c)

    def _bad(self, c: Conn, why: str) -> None:
        self.errors += 1
        log.warning("pid %d (%s): malformed message: %s", c.peer_pid, c.name or "?", why)

    def _hello(self, c: Conn, body: bytes) -> bytes:
        try:
            version, flags, pid, name, attach = P.unpack_hello(body)
        except P.ProtocolError as e:
            self._bad(c, e.message)
            return P.pack_hello_reply(-e.errno, 0, e.message)
        if version != P.PROTO_VERSION:
            msg = f"protocol version {version}; this service speaks {P.PROTO_VERSION}"
            return P.pack_hello_reply(-errno.EPROTO, 0, msg)
        c.name = name or f"pid {pid}"
        c.pid = pid or c.peer_pid
        c.native = bool(flags & P.HELLO_NATIVE) or not flags & P.HELLO_CLOCKED
        c.clocked = bool(flags & P.HELLO_CLOCKED)
        with self._turn_lock():
            if self.stopping:
                return P.pack_hello_reply(-errno.ESHUTDOWN, 0, "the KFD service is stopping")
            if attach is not None:
                owner = next(
                    (x for x in self.conns if x.owner is None and x.pasid == attach and not x.dead),
                    None,
                )
                if owner is None:
                    return P.pack_hello_reply(-errno.ESRCH, 0, f"no process with pasid {attach}")
                if owner.peer_pid != c.peer_pid:
                    return P.pack_hello_reply(
                        -errno.EPERM,
                        0,
                        f"pasid {attach} belongs to pid {owner.peer_pid}, not to pid "
                        f"{c.peer_pid}: only a thread of the same process may attach",
                    )
                c.owner = owner
                c.process = owner.process
                c.native = owner.native
                c.clocked = owner.clocked
                c.t = owner.t
                owner.attached.append(c)
                self.conns.append(c)
                return P.pack_hello_reply(0, c.pasid, "attached")
            # The KFD's own work (open) happens between device events: wait for a safe point.
            self.conns.append(c)
            self._enqueue(c, None, 0)
            try:
                self._wait_turn(c)
                self.system.host_now = self.engine.now
                proc = self.kfd.open(c.name, backing=self._new_backing)
                c.process = proc
                c.t = self.engine.now  # a new process starts at the device's present
                self._settle()
            finally:
                if c.process is None and c in self.conns:
                    self.conns.remove(c)
                self._end_turn(c)
        log.info(
            "pid %d opened pasid %#x (%s%s)", c.pid, c.pasid, c.name, ", native" if c.native else ""
        )
        return P.pack_hello_reply(0, c.pasid, "")

    # -- taking turns ------------------------------------------------------------------------
    @contextlib.contextmanager
    def _turn_lock(self):
        """The model's lock, telling a driver busy with a long run that someone waits for it."""
        with self._wanting_lock:
            self._wanting += 1
        with self.cond:
            with self._wanting_lock:
                self._wanting -= 1
            yield

    def _enqueue(self, c: Conn, act: int | None, cost: int, incl: bool = False) -> None:
        """(Lock held.) c's next request acts at host time `act` (None: at device time)."""
        if c.leased:
            c.t = max(c.t, self.engine.now)  # the lease ran out: its clock jumps to the device's
            c.leased = False
            if act is not None:
                act = max(act, c.t)
        c.state = READY
        c.act = act
        c.cost = cost
        c.incl = incl
        self.cond.notify_all()

    def _wait_turn(self, c: Conn) -> None:
        if not self._await_grant(c, lambda: c.dead or self.stopping):
            raise Gone

    def _await_grant(self, c: Conn, give_up: Callable[[], bool]) -> bool:
        """(Lock held.) Until `c` holds the turn, drive the machine whenever nobody holds it —
        whichever thread holds the lock does the driver's next step, which saves the thread
        switches of a hand-off per request. False when `give_up()` first."""
        while self.granted is not c:
            if give_up():
                return False
            if self.granted is None:
                try:
                    if self._step():
                        continue
                except Exception:
                    log.error("driver step: %s", traceback.format_exc())
            self.cond.wait(0.05)
        return True

    def _end_turn(self, c: Conn) -> None:
        if self.granted is c:
            c.t = self.system.host_now
            self.granted = None
            self.system.host_now = self.engine.now
        c.state = IDLE
        c.act = None
        c.last_wall = time.monotonic()
        self.cond.notify_all()

    def _turn(
        self, c: Conn, act: int | None, cost: int, fn: Callable[[], Any], incl: bool = False
    ) -> Any:
        """Run `fn` when `c`'s request may act at host time `act` (None: device time); `incl`:
        the request spends host time first (host_advance), so the engine runs to `act`
        inclusive, as in-process."""
        with self._turn_lock():
            if c.dead or self.stopping:
                raise Gone
            if act is not None:
                act = max(act, c.t)
            self._enqueue(c, act, cost, incl)
            try:
                self._wait_turn(c)
            except Gone:
                c.state = IDLE
                raise
            proc = c.process
            assert proc is not None
            proc.host_wait = lambda pred, timeout, wake: self._wait_hook(c, pred, timeout, wake)
            try:
                return fn()
            finally:
                proc.host_wait = None
                self._settle()
                self._end_turn(c)

    def _park(self, c: Conn, pred: Callable[[], bool], deadline: int | None, kind: str):
        """(The turn held.) Give the turn up until `pred()` holds or `deadline`."""
        c.state = PARKED
        c.pred = pred
        c.deadline = deadline
        c.wall_deadline = None
        if c.native and deadline is not None:
            # No host clock: a native process's timeout is wall time, as the real driver's
            # sleep is; it never moves the device clock. ROCr's "forever" (a wait clamped
            # just below KFD_EVENT_TIMEOUT_INFINITE) is forever.
            left = deadline - self.system.host_now
            c.deadline = None
            c.native_limit = deadline
            if left < NATIVE_FOREVER_PS:
                c.wall_deadline = time.monotonic() + max(0, left) / PS_PER_S
        c.park_kind = kind
        c.outcome = None
        self.granted = None
        self.cond.notify_all()
        try:
            self._wait_turn(c)
        finally:
            c.pred = None
            c.deadline = None
            c.wall_deadline = None
        return c.outcome

    def _wait_hook(
        self, c: Conn, pred: Callable[[], bool], timeout_ps: int | None, wakeup_ps: int
    ) -> WaitOutcome:
        """KfdProcess.host_wait in the service: park instead of running the engine."""
        if pred():
            return WaitOutcome.SATISFIED
        now = self.system.host_now
        c.t = now
        c.wakeup_ps = wakeup_ps
        deadline = None if timeout_ps is None else now + timeout_ps
        # While parked, other threads of the process take turns that set and clear these.
        proc = c.process
        assert proc is not None
        overlay, hook = proc.user_overlay, proc.host_wait
        outcome = self._park(c, pred, deadline, "wait")
        proc.user_overlay, proc.host_wait = overlay, hook
        self.system.host_now = c.t
        return outcome

    # -- requests ----------------------------------------------------------------------------
    def _request(self, c: Conn, op: int, body: bytes) -> tuple[bytes, int | None]:
        if op == P.OP_IOCTL:
            return self._ioctl(c, body), None
        if op == P.OP_MMAP:
            return self._mmap(c, body)
        if op >= P.JSON_OP_MIN:
            try:
                req = P.parse_json(body)
                return self._json(c, op, req), None
            except P.ProtocolError as e:
                self._bad(c, f"{P.OP_NAMES.get(op, op)}: {e.message}")
                return P.json_reply(-e.errno, {"message": e.message}), None
            except (KeyError, TypeError, ValueError) as e:
                msg = f"{P.OP_NAMES.get(op, op)}: bad request: {type(e).__name__}: {e}"
                self._bad(c, msg)
                return P.json_reply(-errno.EINVAL, {"message": msg}), None
        msg = f"unknown op {op}: binary ops are 1..4 (HELLO, IOCTL, MMAP, CLOSE), JSON ops 100.."
        self._bad(c, msg)
        return P.status_body(-errno.EINVAL) + msg.encode(), None

    def _ioctl(self, c: Conn, body: bytes) -> bytes:
        clock = (lambda: c.t) if c.clocked else (lambda: None)
        try:
            request, args, bufs = P.unpack_ioctl(body)
        except P.ProtocolError as e:
            self._bad(c, f"IOCTL: {e.message}")
            return P.pack_ioctl_reply(-e.errno, b"", [], e.message, clock())
        syscall = self.system.spec.host.syscall_ps
        act = None if c.native else c.t + syscall

        def run() -> tuple[int, bytes, str]:
            proc = c.process
            assert proc is not None
            proc.user_overlay = [(b.addr, b.data) for b in bufs] or None
            if c.native:
                self.system.host_now = max(0, self.engine.now - syscall)
            else:
                self.system.host_now = c.t
            buf = bytearray(args)
            try:
                proc.ioctl(request, buf)
                if c.native:
                    self._arm_doorbells(c.owner or c, proc)
                return 0, bytes(buf), ""
            except KfdError as e:
                return -e.errno, bytes(args), e.message
            except Gone:
                raise
            except Exception as e:  # a driver bug must not take the service down
                log.error(
                    "%s from pid %d: %s", request_name(request), c.pid, traceback.format_exc()
                )
                return -errno.EINVAL, bytes(args), f"{request_name(request)}: internal error {e}"
            finally:
                proc.user_overlay = None

        status, out_args, msg = self._turn(c, act, syscall, run, incl=True)
        if status and os.environ.get("HSAEMU_DEBUG"):
            log.info("pid %d %s -> %d %s", c.pid, request_name(request), status, msg)
        return P.pack_ioctl_reply(status, out_args, bufs, msg, clock())

    def _mmap(self, c: Conn, body: bytes) -> tuple[bytes, int | None]:
        try:
            offset, length, _prot, _kind = P.unpack_mmap(body)
        except P.ProtocolError as e:
            self._bad(c, f"MMAP: {e.message}")
            return P.pack_mmap_reply(-e.errno, msg=e.message), None

        def run():
            proc = c.process
            assert proc is not None
            try:
                m = proc.mmap(offset, length)
            except KfdError as e:
                return -e.errno, e.message, None, None
            self._settle()
            fd = self._memfds.get(_addr(m._bo.data))
            if fd is None:
                return -errno.ENODEV, f"BO at {m.address:#x} has no shared backing", None, None
            kind = P.MMAP_KIND_DOORBELL if m.is_mmio else P.MMAP_KIND_MEMORY
            return 0, kind, fd, (m.address, m.size, int(m.is_mmio))

        status, kind, fd, info = self._turn(c, None if c.native else c.t, 0, run)
        if status:
            return P.pack_mmap_reply(status, msg=kind), None
        trailer = (*info, c.t) if c.clocked else None
        return P.pack_mmap_reply(0, kind, 0, "", trailer), fd

    def _json(self, c: Conn, op: int, req: dict) -> bytes:
        sys_ = self.system
        at = None if c.native else c.t
        if op == P.OP_HOST_NOW:
            return P.json_reply(0, {"now": c.t})
        if op == P.OP_HOST_COST:
            name = str(req["name"])
            value = getattr(sys_.spec.host, name, None)
            if not isinstance(value, int) or name.startswith("_"):
                fields = sorted(type(sys_.spec.host).model_fields)
                raise ValueError(f"no host cost {name!r}; there are {', '.join(fields)}")
            return P.json_reply(0, {"ps": value, "now": c.t})
        if op == P.OP_SYSFS_TREE:
            return P.json_reply(0, {"files": self.sysfs_tree(), "now": c.t})
        if op == P.OP_PROCESS_INFO:
            proc = c.process
            assert proc is not None
            return P.json_reply(
                0,
                {
                    "pasid": proc.pasid,
                    "heap_offset": proc.heap.handle << 12,
                    "heap_va": proc.heap.va,
                    "heap_size": proc.heap.size,
                    "now": c.t,
                },
            )
        if op == P.OP_STATUS:
            with self._turn_lock():
                return P.json_reply(0, self.status())
        if op == P.OP_HOST_ELAPSE:
            ps = int(req["ps"])
            if ps < 0:
                raise ValueError(f"ps = {ps}: host time only moves forward")

            def elapse():
                if c.native:  # no host clock: nothing to spend
                    return {"now": self.engine.now}
                sys_.host_now = c.t
                sys_.host_advance(ps)
                return {"now": sys_.host_now}

            act = None if c.native else c.t + ps
            return P.json_reply(0, self._turn(c, act, 0, elapse, incl=True))
        if op == P.OP_HOST_STEP:
            limit = req.get("limit")
            limit = None if limit is None else int(limit)

            def step():
                sys_.host_now = self.engine.now if c.native else c.t
                c.t = sys_.host_now
                epoch = self.memory.store_epoch
                outcome = self._park(c, lambda: self.memory.store_epoch != epoch, limit, "step")
                sys_.host_now = c.t
                return {"ok": outcome != WaitOutcome.DEADLOCK, "now": c.t}

            return P.json_reply(0, self._turn(c, at, 0, step))
        if op == P.OP_READ_SYSFS:
            path = str(req["path"])

            def read():
                sys_.host_now = self.engine.now if c.native else c.t
                try:
                    return 0, {"text": self.kfd.read_sysfs(path), "now": c.t}
                except FileNotFoundError as e:
                    return -errno.ENOENT, {"message": str(e), "now": c.t}

            status, obj = self._turn(c, at, 0, read)
            return P.json_reply(status, obj)
        if op == P.OP_MEM_OP:
            return self._mem_op(c, req)
        if op == P.OP_TRACE_MARKER:
            track, name, args = str(req["track"]), str(req["name"]), req.get("args")

            def mark():
                tr = sys_.tracer
                if tr.enabled:
                    tr.instant(
                        track, name, c.t if not c.native else self.engine.now, args, cat="api"
                    )
                return {"now": c.t}

            return P.json_reply(0, self._turn(c, at, 0, mark))
        if op == P.OP_PRIME_EXPORT:
            handle = int(req["handle"])

            def export():
                proc = c.process
                assert proc is not None
                try:
                    fd = proc.prime_export(handle)
                except KfdError as e:
                    return -e.errno, {"message": e.message}
                return 0, {"dmabuf_fd": fd, "now": c.t}

            status, obj = self._turn(c, at, 0, export)
            return P.json_reply(status, obj)
        if op == P.OP_WRITE_REPORTS:
            directory = str(req["directory"])
            files = self._turn(c, at, 0, lambda: self.kfd.write_reports(directory))
            return P.json_reply(0, {"files": files, "now": c.t})
        msg = f"unknown JSON op {op} (known: {sorted(k for k in P.OP_NAMES if k >= 100)})"
        self._bad(c, msg)
        return P.json_reply(-errno.EINVAL, {"message": msg})

    def _mem_op(self, c: Conn, req: dict) -> bytes:
        va = int(req["va"])
        what = str(req["op"])
        value = int(req.get("value", 0))
        mem = self.memory

        def run():
            proc = c.process
            assert proc is not None
            pasid = proc.pasid
            self.system.host_now = self.engine.now if c.native else c.t
            try:
                if what == "store_u64":
                    mem.store_u64(pasid, va, value)
                    return 0, {"now": c.t}
                if what == "write":
                    mem.write(pasid, va, bytes.fromhex(str(req["data"])))
                    return 0, {"now": c.t}
                if what == "notify":
                    # The client wrote the bytes into the shared pages itself; tell whoever
                    # watches them, as Memory.write does after its store.
                    n = int(req.get("n", 8))
                    bo = mem.find(pasid, va)
                    if bo is None:
                        raise ValueError(f"no BO of pasid {pasid:#x} at {va:#x}")
                    mem.store_epoch += 1
                    if bo.on_write is not None:
                        bo.on_write(va - bo.va, n)
                    mem.notify(pasid, va, n)
                    return 0, {"now": c.t}
                old = mem.load_i64(pasid, va)
                new = {
                    "atomic_add_i64": lambda: old + value,
                    "atomic_exchange_i64": lambda: value,
                    "atomic_cas_i64": lambda: int(req["new"]) if old == value else old,
                    "atomic_and_i64": lambda: old & value,
                    "atomic_or_i64": lambda: old | value,
                    "atomic_xor_i64": lambda: old ^ value,
                }.get(what)
                if new is None:
                    raise ValueError(f"MEM_OP op {what!r} is not a known operation")
                nv = new()
                if what != "atomic_cas_i64" or old == value:
                    mem.store_i64(pasid, va, ((nv + 2**63) % 2**64) - 2**63)
                return 0, {"old": old, "now": c.t}
            except (ValueError, KeyError, TypeError) as e:
                return -errno.EINVAL, {"message": str(e)}
            except Exception as e:  # MemoryFault: the address is not the caller's
                return -errno.EFAULT, {"message": str(e)}

        status, obj = self._turn(c, None if c.native else c.t, 0, run)
        return P.json_reply(status, obj)

    # -- memfd backing -------------------------------------------------------------------------
    def _new_backing(self, size: int) -> np.ndarray:
        size = -(-size // PAGE_SIZE) * PAGE_SIZE
        fd = os.memfd_create("hsaemu-bo", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, size)
            m = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError:
            os.close(fd)
            raise
        arr = np.frombuffer(m, dtype=np.uint8)
        self._memfds[_addr(arr)] = fd
        self._bo_count = -1  # settle at the end of this turn
        return arr

    def _settle(self) -> None:
        """Close the memfds of BOs that are gone (freed, their process ended, allocation failed)."""
        bos = self.memory.bos
        if len(bos) == self._bo_count:
            return
        self._bo_count = len(bos)
        live = {_addr(bo.data) for bo in bos.values()}
        for a in [a for a in self._memfds if a not in live]:
            os.close(self._memfds.pop(a))

    # -- death -------------------------------------------------------------------------------
    def _drop(self, c: Conn) -> None:
        with contextlib.suppress(OSError):
            c.sock.close()
        with self._turn_lock():
            if c in self.conns and c.owner is not None:  # an attached connection
                c.dead = True
                self.conns.remove(c)
                c.owner.attached.remove(c)
                if self.granted is c:
                    self.granted = None
                self.cond.notify_all()
                return
            if c.process is None or c.dead:
                if c in self.conns:
                    self.conns.remove(c)
                return
            # The exit of a process is the KFD's work too: at a safe point between events.
            for a in c.attached:
                a.dead = True
                with contextlib.suppress(OSError):
                    a.sock.shutdown(socket.SHUT_RDWR)
            c.state = IDLE
            self._enqueue(c, None, 0)  # at device time: a dead process holds no clock back
            try:
                self._await_grant(c, lambda: self.stopping)
                self.system.host_now = self.engine.now
                proc = c.process
                desc = proc.describe()
                proc.close()
                self._settle()
                log.info(
                    "pid %d (pasid %#x) gone: %d queues destroyed, %d BOs freed, %d events dropped",
                    c.pid,
                    proc.pasid,
                    len(desc["queues"]),
                    desc["buffer_objects"],
                    len(desc["events"]),
                )
            finally:
                c.dead = True
                for a in c.attached:
                    if a in self.conns:
                        self.conns.remove(a)
                if c in self.conns:
                    self.conns.remove(c)
                if self.granted is c:
                    self.granted = None
                c.state = IDLE
                self.cond.notify_all()

    # -- the driver: advances the device, hands out turns ------------------------------------
    def _drive(self) -> None:
        with self.cond:
            while not self.stopping:
                if self.granted is not None:  # a turn is running: wait for its end
                    self.cond.wait(0.05)
                    continue
                try:
                    busy = self._step()
                except Exception:
                    log.error("driver: %s", traceback.format_exc())
                    busy = False
                if self.stopping:
                    break
                if busy:
                    if self._wanting:
                        self.cond.wait(0.0002)  # let a connection thread in
                    continue
                self.cond.wait(self._idle_timeout())

    def _idle_timeout(self) -> float:
        now = time.monotonic()
        t = 0.05
        for c in self.conns:
            if c.wall_deadline is not None:
                t = min(t, max(0.0, c.wall_deadline - now))
            if c.native and not c.dead:
                t = min(t, WATCH_INTERVAL_S)
            elif c.state == IDLE and not c.leased:
                t = min(t, max(0.0, c.last_wall + self.lease_s - now) + 0.0005)
        return t

    def _reached(self, t: int, incl: bool = True) -> bool:
        """The engine stands at `t` with every event before it fired (and, `incl`, those at
        it too)."""
        if self.engine.now < t:
            return False
        nxt = self.engine.peek()
        return nxt is None or (nxt > t if incl else nxt >= t)

    def _step(self) -> bool:
        """One bounded piece of work; False when nothing can happen until a client acts."""
        eng = self.engine
        wall = time.monotonic()
        if wall >= self._next_watch:
            self._next_watch = wall + WATCH_INTERVAL_S
            self._watch_native()
        for c in self.conns:
            if (
                c.state == IDLE
                and not c.native
                and not c.leased
                and wall - c.last_wall > self.lease_s
            ):
                c.leased = True
        parked = [c for c in self.conns if c.state == PARKED]
        for c in parked:
            if c.pred is not None and c.pred():
                self._wake(c, WaitOutcome.SATISFIED)
                return True
            if c.wall_deadline is not None and wall >= c.wall_deadline:
                self._wake(c, WaitOutcome.TIMEOUT)
                return True
        # Who holds the clock back, and how: (time, inclusive). An idle client at T lets the
        # engine fire events before T only (in-process, what its zero-cost actions scheduled
        # at T waits for its next host_advance); a request with a host cost, a wake-up or a
        # deadline runs the engine to T inclusive, as host_advance and host_wait do.
        holder: tuple[int, bool] | None = None
        for c in self.conns:
            if c.dead:
                continue
            if c.state == PARKED:
                if c.deadline is not None:
                    holder = _earlier(holder, (c.deadline, True))
            elif c.native:
                continue
            elif c.state == READY and c.act is not None:
                holder = _earlier(holder, (c.act, c.incl))
            elif c.state == IDLE and not c.leased and c.process is not None:
                holder = _earlier(holder, (c.t, False))
        ready = [
            (c.act if c.act is not None else eng.now, c.pasid, c.order, c)
            for c in self.conns
            if c.state == READY
        ]
        if ready:
            t, _, _, c = min(ready, key=lambda r: r[:3])
            if holder is None or t <= holder[0]:
                incl = c.incl and c.act is not None
                if not self._reached(t, incl):
                    self._advance(t, parked, incl)
                    return True
                self._grant(c)
                return True
        if holder is not None:
            if not self._reached(*holder):
                self._advance(holder[0], parked, holder[1])
                return True
            for c in parked:
                if c.deadline is not None and c.deadline <= eng.now:
                    if not self._reached(c.deadline, True):
                        self._advance(c.deadline, parked, True)
                        return True
                    self._wake(c, WaitOutcome.TIMEOUT)
                    return True
            return False  # an idle client holds the clock here: wait for it
        if not self.conns:
            return False
        # Nobody holds the clock: the device runs freely while it has work.
        if not eng.idle and not self.system.stalled():
            self._advance(None, parked)
            return True
        if (
            parked
            and all(x.state == PARKED for x in self.conns)
            and not any(x.wall_deadline is not None for x in parked)
        ):
            if self._watch_native():
                return True  # a native host stored something: not stuck after all
            for c in parked:  # every client is blocked and nothing can change: deadlock
                self._wake(c, WaitOutcome.DEADLOCK)
            return True
        return False

    def _advance(self, target: int | None, parked: list[Conn], incl: bool = True) -> None:
        """Fire device events (a bounded slice) toward `target`: up to it inclusive, or only
        those before it (`incl` False; the clock then stands at `target`). None: free run."""
        eng = self.engine
        budget = [SLICE_EVENTS]
        preds = [c.pred for c in parked if c.pred is not None]

        def cont() -> bool:
            budget[0] -= 1
            if budget[0] <= 0:
                return False
            return not any(p() for p in preds)

        if target is None:
            if (
                eng.run_while(cont, None, pause_housekeeping=True)
                and budget[0] > 0
                and not any(p() for p in preds)
                and not self.system.stalled()
            ):
                eng.step()  # housekeeping that lets a blocked queue run is progress
            self.system.host_now = eng.now
            return
        if incl:
            if not eng.run_while(cont, target):
                eng.run_until(target)
        elif not eng.run_while(cont, target - 1) and eng.now < target:
            eng.now = target  # every event before it fired; those at it wait
        self.system.host_now = eng.now

    def _wake(self, c: Conn, outcome: WaitOutcome) -> None:
        eng = self.engine
        if outcome == WaitOutcome.SATISFIED:
            if c.park_kind == "wait":
                c.t = max(c.t, eng.now + c.wakeup_ps)
            else:
                c.t = max(c.t, eng.now)
        elif outcome == WaitOutcome.TIMEOUT:
            # a native's clock (what its replies report) reads the limit it waited for
            limit = c.native_limit if c.deadline is None else c.deadline
            c.t = max(c.t, eng.now, limit or 0)
            if c.pred is not None and c.pred():
                outcome = WaitOutcome.SATISFIED
        c.outcome = outcome
        c.pred = None
        c.deadline = None
        c.wall_deadline = None
        c.state = READY
        c.act = c.t
        c.incl = outcome != WaitOutcome.DEADLOCK  # host_wait ran the engine to its wake-up
        if c.native:
            c.act = None  # it goes on at the device's present, which it never moves

    def _grant(self, c: Conn) -> None:
        if c.native:
            # What the host stored before this syscall (a doorbell, a signal) happened first.
            self._watch_native()
        c.state = ACTIVE
        if c.native:
            self.system.host_now = max(0, self.engine.now - c.cost)
        else:
            self.system.host_now = c.t
        self.granted = c
        self.cond.notify_all()

    # -- native clients: doorbells and monitored addresses ----------------------------------
    def _watch_native(self) -> bool:
        """Ring what native hosts stored to their doorbells and tell the watchers of monitored
        addresses they stored to. True when it found any such store."""
        mem = self.memory
        native = [c for c in self.conns if c.native and c.owner is None and not c.dead]
        if not native:
            return False
        found = False
        self.system.host_now = self.engine.now
        pasids = set()
        for c in native:
            proc = c.process
            if proc is None or proc.closed:
                continue
            pasids.add(proc.pasid)
            found |= self._ring_native_doorbells(c, proc)
        for key in mem.watched():
            if key[0] not in pasids:
                continue
            bo = mem.find(*key)
            if bo is None:
                continue
            off = key[1] - bo.va
            now = bytes(bo.data[off : off + 8])
            if self._watch_snap.get(key) != now:
                first = key not in self._watch_snap
                self._watch_snap[key] = now
                if not first:
                    found = True
                    mem.store_epoch += 1
                    mem.notify(key[0], key[1], 8)
        return found

    def _arm_doorbells(self, c: Conn, proc: KfdProcess) -> None:
        """Put the sentinel into the doorbell slot of each queue new to the watcher, so that
        the first store (often the value 0: the index of the first packet) is seen too."""
        for q in list(proc.queues.values()):
            key = (q.gpu.gpu_id, q.queue_id)
            frame = proc.doorbell_frames.get(q.gpu.gpu_id)
            if key in c.doorbells or frame is None:
                continue
            off = q.doorbell_id * q.gpu.spec.doorbell_size
            _U64.pack_into(frame.data, off, DOORBELL_SENTINEL)
            c.doorbells[key] = DOORBELL_SENTINEL
        for key in [k for k in c.doorbells if k[1] not in proc.queues]:
            del c.doorbells[key]  # destroyed: a new queue may reuse the id

    def _ring_native_doorbells(self, c: Conn, proc: KfdProcess) -> bool:
        """A native host's doorbell writes are plain stores to the shared page. Every slot
        holds the sentinel after the watcher looked at it; anything else is a store: ring
        with it. The sentinel goes back before the ring, so a store racing with the watcher
        is either seen next time or already visible to the ring (the CP reads the AQL write
        index and the packets from memory; an SDMA ring takes the larger of the doorbell and
        the write pointer in memory, which ROCr updates before the doorbell)."""
        self._arm_doorbells(c, proc)
        found = False
        for q in list(proc.queues.values()):
            frame = proc.doorbell_frames.get(q.gpu.gpu_id)
            if frame is None:
                continue
            off = q.doorbell_id * q.gpu.spec.doorbell_size
            value = _U64.unpack_from(frame.data, off)[0]
            if value == DOORBELL_SENTINEL:
                continue
            _U64.pack_into(frame.data, off, DOORBELL_SENTINEL)
            found = True
            g = q.gpu
            if q.sdma is not None:
                sq = q.sdma
                with contextlib.suppress(Exception):
                    value = max(value, self.memory.load_u64(proc.pasid, sq.wptr_addr))
                g.sdma_engines[sq.engine_id].ring(sq, value)
            else:
                pp = g.queues.get(q.mqd.doorbell_index)
                if pp is not None:
                    pp.ring(value)
        return found

    # -- inspection ----------------------------------------------------------------------------
    def sysfs_tree(self) -> dict[str, str]:
        """The KFD topology files, plus each GPU's DRM product_name (what libdrm's
        amdgpu_get_marketing_name reports) under its render node."""
        files = dict(self.kfd.sysfs)
        root = "/sys/class/kfd/kfd/topology/nodes/"
        for path, text in self.kfd.sysfs.items():
            if not (path.startswith(root) and path.endswith("/properties")):
                continue
            props = dict(line.split(" ", 1) for line in text.splitlines() if " " in line)
            minor = props.get("drm_render_minor")
            gpu_id = int(files.get(path.rsplit("/", 1)[0] + "/gpu_id", "0") or 0)
            g = next((g for g in self.system.gpus if g.gpu_id == gpu_id), None)
            if minor is not None and g is not None and int(minor) > 0:
                files[f"/sys/class/drm/renderD{int(minor)}/device/product_name"] = (
                    g.spec.marketing_name + "\n"
                )
        return files

    def status(self) -> dict:
        eng = self.engine
        clients = []
        for c in self.conns:
            clients.append(
                {
                    "pasid": c.pasid,
                    "pid": c.pid,
                    "name": c.name,
                    "native": c.native,
                    "attached": c.owner is not None,
                    "state": c.state,
                    "park": c.park_kind if c.state == PARKED else None,
                    "clock_ps": None if c.native else c.t,
                    "holds_clock": not c.native and not c.leased and c.state != PARKED,
                    "requests": c.requests,
                }
            )
        return {
            "device_time_ps": eng.now,
            "preset": self.system.spec.gpu.name,
            "clients": clients,
            "runlist": self.kfd.runlist_summary(),
            "rls": self.kfd.runlist(),
            "hqds": self.kfd.hqds(),
            "processes": [p.describe() for p in self.kfd.processes.values()],
            "memfds": len(self._memfds),
            "malformed_messages": self.errors,
        }


def _earlier(a: tuple[int, bool] | None, b: tuple[int, bool]) -> tuple[int, bool]:
    """The earlier of two clock holds; at the same time the one that fires less (exclusive)."""
    if a is None:
        return b
    return min(a, b)  # (t, False) < (t, True)


def _addr(arr: np.ndarray) -> int:
    return arr.__array_interface__["data"][0]


def peek_status(path: str, timeout: float = 10.0) -> dict:
    """STATUS of the service at `path`, without opening a process there."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        P.send_message(s, P.OP_STATUS, 1, b"{}")
        _op, _seq, body, _ = P.recv_message(s)
    return P.parse_json_reply(body)


def serve(
    path: str, preset: str | None = None, idle_lease_ms: float = DEFAULT_IDLE_LEASE_MS
) -> None:
    """Run the KFD service at `path` until SIGTERM/SIGINT."""
    KfdService(path, preset=preset, idle_lease_ms=idle_lease_ms).serve_forever()


__all__ = ["DEFAULT_IDLE_LEASE_MS", "KfdService", "peek_status", "serve"]
