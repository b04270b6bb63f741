"""Served systems: one emulated machine per client, owned by a bearer token.

Each system is a `rocr.Runtime` on a fresh machine (`rocr.init(preset=..., spec=...)`) and the
registry of what its clients created through the API: buffers by address, queues by id,
signals by handle, executables by number. One lock per system serializes its work (the machine
is single-threaded Python); different systems run side by side. Tokens are kept only as
SHA-256 digests and compared in constant time. Idle systems are shut down after
`idle_timeout_s`; every count and size a client controls is checked against `ServerLimits`.

Creating a system is admitted per client: a client is its API key when the server requires
keys (also kept only as digests), else its IP address; each may hold `max_systems_per_client`
systems and create them at `create_rate_per_minute` (a token bucket of `create_burst`).

Emulation never holds a request thread or a system without bound. Requests take turns on a
system in the event loop (`turn`, first come first served), not parked in threads; only the
request whose turn it is runs, in the emulation executor. The machine's engine calls
`ServedSystem.on_slice` every `SLICE_EVENTS` events: a wait or a `run` (`sliced()`) ends its
slice there when another request is queued or its client hung up (`Watch`), gives up its turn
and continues in a later one; a cancelled system (deleted, expired, server shutting down)
stops whatever runs on it at the next slice. A client alone on its system has its wait cut
only by a count of events (a brief wait run in the event loop ends at its first slice), so
what it simulates does not depend on real time.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from typing import Any

import anyio
from pydantic import ValidationError

import rocr
from hw_model.config import PRESETS, SystemSpec
from rocr.errors import HsaError
from rocr.service.errors import ApiError, limit_error, not_found
from rocr.service.schemas import ServerLimits, SystemCreate, SystemInfo
from rocr.status import Status

log = logging.getLogger("hsaemu.service")

PAGE = 4096
QUEUE_DESCRIPTOR_BYTES = PAGE  # the amd_queue_t page rocr allocates beside each ring
HQD_SLOTS_MAX = 1024  # sanity bound on a spec override: slots are a Python list per GPU
SIMDS_PER_CU_MAX = 16
# A shorter HW scheduler quantum lets the quantum timer, not the work, dominate a simulation
# (1 us is 1/100 of gem5's default); a served machine must not be able to spin in place.
QUANTUM_MIN_PS = 1_000_000
# SystemSpec nests three levels (spec.gpu.<field>); a deeper override is a mistake or an attack
# on the recursive merge.
SPEC_DEPTH_MAX = 8
# Host memory a trace event takes beside its strings (~500 bytes measured with tracemalloc,
# hw_model.trace): what a marker costs the system while the trace keeps it.
TRACE_EVENT_BYTES = 512
# Host memory of a signal the server holds (rocr.Signal, its amd_signal_t, the roct/KFD
# objects): ~860 B for a user signal, ~1,560 B for an interrupt signal with its KFD event,
# measured with tracemalloc over 1,000 of each.
SIGNAL_BYTES = 1024
EVENT_BYTES = 768
ADMIN_CLIENT = "admin"  # the admin token creates systems outside the per-client limits
# Rate buckets kept for clients that are not full (older, full ones are forgotten): bounds the
# table one client per address could grow.
MAX_RATE_BUCKETS = 4096
# Events between two calls of the slice hook: ~90 us an event measured on the teaching preset
# (an `empty` grid, a loaded 2-core machine), so 256 events are ~25 ms of engine work: a cancel
# or a queued request is seen within that, and the hook costs nothing per event.
SLICE_EVENTS = 256
# How often a wait or run in progress checks whether its client is still there (a guess: a
# client that hung up is noticed well within a second, at little cost to the event loop).
WATCH_S = 0.1
# At most this many pending events for the device to count as quiet (housekeeping only: a
# quantum timer per HW queue slot or so); past it the check itself would cost.
QUIET_EVENTS_MAX = 64
TURN_POLL_S = 0.001  # while a thread outside the turns (reaper, shutdown) holds the lock
# A quiet system holding at most this many buffers, queues, signals and executables is shut
# down in the event loop (a light call): hsa_shut_down of one with a queue, a buffer, a
# signal and a code object takes ~0.4 ms, each further object tens of us (a guess with
# margin: 64 keeps it within a few ms).
LIGHT_CLOSE_OBJECTS = 64


class SliceEnd(Exception):
    """Raised by the slice hook: a sliced run gives up its turn; resume by running again."""


class Watch:
    """What a sliced section is told from the event loop while it runs: its client hung up.
    `inline`: the section runs in the event loop itself, which no client can reach while it
    runs; it ends at its first slice (`ServedSystem.fresh_slice` makes that a whole one)."""

    __slots__ = ("abandoned", "inline")

    def __init__(self, inline: bool = False) -> None:
        self.abandoned = False
        self.inline = inline


class Cancelled(Exception):
    """Raised by the slice hook: the system was cancelled (`ServedSystem.cancelled` says why)."""


# The system whose turn the current request holds (its lock is held for it): `use` does not
# take the lock again.
_HELD: ContextVar[ServedSystem | None] = ContextVar("hsaemu_turn", default=None)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _pages(n: int) -> int:
    return -(-n // PAGE) * PAGE


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def build_spec(preset: str, overrides: dict[str, Any], limits: ServerLimits) -> SystemSpec | None:
    """The SystemSpec for `preset` with `overrides`; None when there are none (plain preset)."""
    if preset not in PRESETS:
        raise ApiError(
            422,
            Status.ERROR_INVALID_ARGUMENT,
            f"unknown preset {preset!r}; choose one of {', '.join(sorted(PRESETS))}",
        )
    base = SystemSpec(gpu=PRESETS[preset])
    if not overrides:
        spec = base
    else:
        _check_overrides(overrides, base.model_dump())
        try:
            spec = SystemSpec.model_validate(_merge(base.model_dump(), overrides))
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(x) for x in first["loc"])
            raise ApiError(
                422,
                Status.ERROR_INVALID_ARGUMENT,
                f"bad spec override {where}: {first['msg']} ({e.error_count()} error(s))",
            ) from None
    if spec.num_gpus < 1 or spec.num_gpus > limits.max_gpus:
        raise limit_error(
            422, "max_gpus", limits.max_gpus, f"spec asks for {spec.num_gpus} GPUs (at least 1)"
        )
    cus = spec.num_gpus * spec.gpu.num_cus
    if cus > limits.max_compute_units:
        raise limit_error(
            422, "max_compute_units", limits.max_compute_units, f"spec asks for {cus} CUs"
        )
    if spec.gpu.quantum_ps < QUANTUM_MIN_PS:
        raise ApiError(
            422,
            Status.ERROR_INVALID_ARGUMENT,
            f"spec gpu.quantum_ps {spec.gpu.quantum_ps} is below this server's minimum "
            f"{QUANTUM_MIN_PS} ps",
        )
    if spec.gpu.hqd_slots > HQD_SLOTS_MAX or spec.gpu.simds_per_cu > SIMDS_PER_CU_MAX:
        raise ApiError(
            422,
            Status.ERROR_INVALID_ARGUMENT,
            f"spec asks for {spec.gpu.hqd_slots} HQD slots and {spec.gpu.simds_per_cu} "
            f"SIMDs per CU; this server allows at most {HQD_SLOTS_MAX} and {SIMDS_PER_CU_MAX}",
        )
    return spec if overrides else None


def _check_overrides(over: dict[str, Any], base: dict[str, Any], where: str = "") -> None:
    """Overridden latencies (`*_ps`) may be 0; any other overridden number sizes, counts or
    clocks the machine and must be positive (or 0 where the preset itself has 0)."""
    if where.count(".") >= SPEC_DEPTH_MAX:
        raise ApiError(
            422,
            Status.ERROR_INVALID_ARGUMENT,
            f"spec override {where.rstrip('.')} is nested deeper than any SystemSpec field "
            f"(at most {SPEC_DEPTH_MAX} levels)",
        )
    for k, v in over.items():
        b = base.get(k) if isinstance(base, dict) else None
        if isinstance(v, dict):
            _check_overrides(v, b if isinstance(b, dict) else {}, f"{where}{k}.")
            continue
        if not isinstance(v, int | float) or isinstance(v, bool):
            continue
        floor_ok = v >= 0 if (k.endswith("_ps") or b == 0) else v > 0
        if not floor_ok:
            need = "negative" if k.endswith("_ps") or b == 0 else "zero or negative"
            raise ApiError(
                422, Status.ERROR_INVALID_ARGUMENT, f"spec {where}{k} = {v} may not be {need}"
            )


class ServedSystem:
    """One emulated machine and the objects its clients created, behind one lock."""

    def __init__(
        self,
        sid: str,
        token: str,
        rt: rocr.Runtime,
        preset: str,
        name: str,
        limits: ServerLimits,
        client: str | None = None,
    ) -> None:
        self.id = sid
        self.client = client  # who created it, for the per-client limits
        self._token = _digest(token)
        self.rt = rt
        self.preset = preset
        self.name = name
        self.limits = limits
        self.lock = threading.Lock()
        self._fair: anyio.Lock | None = None  # made in the event loop, by the first turn
        self.queued = 0  # requests waiting for their turn
        self.cancelled: str | None = None  # why the system's work stops (deleted, ...)
        self._sliced: Watch | None = None  # the running section may end its slice
        self.last_used = time.monotonic()
        self.closed = False
        self.waiters = 0
        self.activity = 0  # requests served; a waiter retries when someone else acted
        self.saved_activity = -1  # `activity` at the last checkpoint (-1: none yet)
        # (completion signal, `activity` right after) of a dispatch small enough for its wait
        # to run in the event loop, while nothing else has happened on the system since
        # (routes.queues.dispatch, routes.signals.wait)
        self.brief_wait: tuple[int, int] | None = None
        self.pools = [p for a in rt.agents() for p in a.pools()]
        self.buffers: dict[int, rocr.Buffer] = {}
        self.buffer_agents: dict[int, list[int]] = {}
        self.queues: dict[int, rocr.Queue] = {}
        self.signals: dict[int, rocr.Signal] = {}
        self.executables: dict[int, rocr.Executable] = {}
        self._next_executable = 0
        self._charges: dict[tuple[str, int], int] = {}
        self.memory_bytes = 0
        self._markers: deque[tuple[int, int]] = deque()  # (trace sequence number, bytes)
        if rt.system is not None:
            # Bound the trace's memory: a server holds many machines.
            rt.system.tracer.max_events = limits.max_trace_events
            rt.system.engine.set_slice_hook(self.on_slice, SLICE_EVENTS)

    # -- checkpoints (rocr.service.state) ------------------------------------------------------
    # What a request or the event loop holds is not part of a checkpoint: the locks, the turn
    # queue, a section in progress, the waiters; a restored system starts idle and unclaimed.
    _TRANSIENT = (
        "lock",
        "_fair",
        "_sliced",
        "queued",
        "waiters",
        "cancelled",
        "closed",
        "brief_wait",
    )

    def __getstate__(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k not in self._TRANSIENT}
        state["idle_s"] = self.idle_s()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        idle = state.pop("idle_s", 0.0)
        self.__dict__.update(state)
        self.lock = threading.Lock()
        self._fair = None
        self._sliced = None
        self.queued = self.waiters = 0
        self.cancelled = None
        self.closed = False
        self.brief_wait = None
        self.last_used = time.monotonic() - idle
        self.saved_activity = self.activity

    def adopt(self, limits: ServerLimits) -> None:
        """Serve a restored system under this server's limits."""
        self.limits = limits
        if self.rt.system is not None:
            self.rt.system.tracer.max_events = limits.max_trace_events
            self.rt.system.engine.set_slice_hook(self.on_slice, SLICE_EVENTS)

    # -- slices and cancellation ---------------------------------------------------------------
    def on_slice(self) -> None:
        """The engine's slice hook (between two events)."""
        if self.cancelled is not None:
            raise Cancelled(self.cancelled)
        cut = self._sliced
        if cut is not None and (self.queued > 0 or cut.abandoned or cut.inline):
            raise SliceEnd()

    def fresh_slice(self) -> None:
        """The next slice hook call SLICE_EVENTS events from now (not wherever the count of
        the last slice left it)."""
        if self.rt.system is not None:
            self.rt.system.engine.set_slice_hook(self.on_slice, SLICE_EVENTS)

    @contextmanager
    def sliced(self, watch: Watch) -> Iterator[None]:
        """A section (under the turn) that may end its slice: SliceEnd leaves it; the host
        slept until the device's clock, so it resumes from where the device got to."""
        self._sliced = watch
        try:
            yield
        except SliceEnd:
            sysm = self.rt.system
            if sysm is not None:
                sysm.host_now = max(sysm.host_now, sysm.engine.now)
            raise
        finally:
            self._sliced = None

    def quiet(self) -> bool:
        """The device has no work pending (nothing but housekeeping such as the HW scheduler's
        quantum timer), so a host call that does not wait cannot make it run long. Checked
        under the turn; a long event list answers no without looking through it."""
        sysm = self.rt.system
        if sysm is None or self.closed:
            return False
        # An interrupt on its way to the KFD (a completion signal's event, 2 us after the
        # store a wait returned on) only sets an event: no work for the device.
        return sysm.engine.quiet(QUIET_EVENTS_MAX, (type(sysm).deliver_interrupt,))

    def cancel(self, why: str) -> None:
        """Stop the system's work at its next slice (thread-safe: only sets a flag)."""
        if self.cancelled is None:
            self.cancelled = why

    def stopped_error(self) -> ApiError:
        if self.cancelled == SHUTTING_DOWN:
            return ApiError(503, Status.ERROR, f"system {self.id}: {SHUTTING_DOWN}")
        return gone(self.id)

    @asynccontextmanager
    async def turn(self, *, closing: bool = False) -> AsyncIterator[None]:
        """This request's turn on the system (in the event loop, first come first served);
        409 after max_wait_ms. Code it runs in the emulation executor holds the lock."""
        if self._fair is None:
            self._fair = anyio.Lock()
        fair = self._fair
        got_fair = got = False
        # Nobody holds or awaits the turn: take it at once, without the timer and the trip
        # through the event loop's queue that waiting for it costs.
        try:
            fair.acquire_nowait()
            got_fair = True
        except anyio.WouldBlock:
            pass
        if got_fair and self.lock.acquire(blocking=False):
            got = True
        elif got_fair:
            fair.release()
            got_fair = False
        if not got:
            self.queued += 1
            try:
                with anyio.move_on_after(self.limits.max_wait_ms / 1000):
                    await fair.acquire()
                    got_fair = True
                    while not self.lock.acquire(blocking=False):
                        await anyio.sleep(TURN_POLL_S)
                    got = True
            finally:
                self.queued -= 1
                if got_fair and not got:
                    fair.release()
        if not got:
            if self.cancelled is not None and not closing:
                raise self.stopped_error()
            raise limit_error(
                409,
                "max_wait_ms",
                self.limits.max_wait_ms,
                f"system {self.id} stayed busy with another request",
            )
        held = _HELD.set(self)
        try:
            if not closing and (self.closed or self.cancelled is not None):
                raise self.stopped_error()
            yield
        finally:
            _HELD.reset(held)
            self.last_used = time.monotonic()
            self.lock.release()
            fair.release()

    # -- ownership and serialization ---------------------------------------------------------
    def owned_by(self, token: str | None) -> bool:
        given = _digest(token or "")
        return hmac.compare_digest(given, self._token) and token is not None

    @contextmanager
    def use(self, *, counts: bool = True) -> Iterator[rocr.Runtime]:
        """Hold the system's lock (already held in the request's turn); a request that cannot
        get it within max_wait_ms fails."""
        if _HELD.get() is self:
            if self.closed or self.cancelled is not None:
                raise self.stopped_error()
            try:
                yield self.rt
            finally:
                self.last_used = time.monotonic()
                if counts:
                    self.activity += 1
            return
        wait_s = self.limits.max_wait_ms / 1000
        if not self.lock.acquire(timeout=wait_s):
            raise limit_error(
                409,
                "max_wait_ms",
                self.limits.max_wait_ms,
                f"system {self.id} stayed busy with another request",
            )
        try:
            if self.closed:
                raise gone(self.id)
            yield self.rt
        finally:
            self.last_used = time.monotonic()
            if counts:
                self.activity += 1
            self.lock.release()

    def touch(self) -> None:
        self.last_used = time.monotonic()

    def idle_s(self, now: float | None = None) -> float:
        return (time.monotonic() if now is None else now) - self.last_used

    def expired(self, now: float | None = None) -> bool:
        return self.waiters == 0 and self.idle_s(now) > self.limits.idle_timeout_s

    def objects(self) -> int:
        """What hsa_shut_down has to destroy, one by one."""
        return len(self.buffers) + len(self.queues) + len(self.signals) + len(self.executables)

    def close(self) -> None:
        """Shut the runtime down (destroys its queues, frees its memory, closes the KFD)."""
        if not self.closed:
            self.closed = True
            self.cancel(self.cancelled or "shut down")
            sysm = self.rt.system
            if sysm is not None:
                sysm.engine.set_slice_hook(None)  # shutdown's own work must not stop halfway
            self.rt.shutdown()

    # -- memory accounting -------------------------------------------------------------------
    def ensure_room(self, nbytes: int) -> None:
        lim = self.limits.max_memory_per_system
        if self.memory_bytes + nbytes > lim:
            raise limit_error(
                429,
                "max_memory_per_system",
                lim,
                f"{nbytes} more bytes would bring system {self.id} to "
                f"{self.memory_bytes + nbytes} bytes; free buffers or queues first",
            )

    def charge(self, kind: str, key: int, nbytes: int) -> None:
        """Count `nbytes` held by object (kind, key); call ensure_room before allocating."""
        self._charges[(kind, key)] = nbytes
        self.memory_bytes += nbytes

    def refund(self, kind: str, key: int) -> None:
        self.memory_bytes -= self._charges.pop((kind, key), 0)

    def charge_marker(self, nbytes: int, record: Any) -> None:
        """Record a trace marker of `nbytes` (by calling `record()`), charged to the system
        while the trace keeps it: the trace is a ring, so markers it dropped are refunded."""
        self.release_markers()
        self.ensure_room(nbytes)
        log = self.rt.system.tracer.events if self.rt.system is not None else None
        before = log.total if log is not None else 0
        record()
        if log is not None and log.total > before:
            self._markers.append((log.total - 1, nbytes))
            self.memory_bytes += nbytes

    def release_markers(self) -> None:
        if self.rt.system is None:
            return
        log = self.rt.system.tracer.events
        gone_below = log.dropped
        if self._markers and self._markers[-1][0] >= log.total:
            # The trace was cleared and numbers its events from 0 again: every marker is gone.
            gone_below = self._markers[-1][0] + 1
        while self._markers and self._markers[0][0] < gone_below:
            self.memory_bytes -= self._markers.popleft()[1]

    @staticmethod
    def buffer_bytes(size: int) -> int:
        return _pages(size)

    @staticmethod
    def queue_bytes(packets: int) -> int:
        return _pages(packets * 64) + QUEUE_DESCRIPTOR_BYTES

    # -- lookups (404 with the real status when the id is unknown) ---------------------------
    def agent(self, node: int) -> rocr.Agent:
        for a in self.rt.agents():
            if a.node == node:
                return a
        nodes = ", ".join(str(a.node) for a in self.rt.agents())
        raise not_found(Status.ERROR_INVALID_AGENT, f"no agent with node {node}; nodes: {nodes}")

    def gpu(self, node: int) -> rocr.Agent:
        a = self.agent(node)
        if not a.is_gpu:
            raise ApiError(400, Status.ERROR_INVALID_AGENT, f"agent {node} ({a.name}) is not a GPU")
        return a

    def pool(self, pid: int) -> rocr.MemoryPool:
        if 0 <= pid < len(self.pools):
            return self.pools[pid]
        raise not_found(
            Status.ERROR_INVALID_MEMORY_POOL,
            f"no memory pool {pid}; this system has pools 0..{len(self.pools) - 1}",
        )

    def pool_id(self, pool: rocr.MemoryPool) -> int:
        return next(i for i, p in enumerate(self.pools) if p is pool)

    def buffer(self, address: int) -> rocr.Buffer:
        buf = self.buffers.get(address)
        if buf is None:
            raise not_found(
                Status.ERROR_INVALID_ARGUMENT,
                f"no buffer at address {address:#x} (allocate one with POST buffers)",
            )
        return buf

    def queue(self, qid: int) -> rocr.Queue:
        q = self.queues.get(qid)
        if q is None:
            raise not_found(Status.ERROR_INVALID_QUEUE, f"no queue {qid}")
        return q

    def signal(self, handle: int) -> rocr.Signal:
        s = self.signals.get(handle)
        if s is None:
            raise not_found(Status.ERROR_INVALID_SIGNAL, f"no signal with handle {handle:#x}")
        return s

    def executable(self, eid: int) -> rocr.Executable:
        exe = self.executables.get(eid)
        if exe is None:
            raise not_found(Status.ERROR_INVALID_EXECUTABLE, f"no executable {eid}")
        return exe

    def add_executable(self, exe: rocr.Executable) -> int:
        eid = self._next_executable
        self._next_executable += 1
        self.executables[eid] = exe
        return eid

    def kernel(self, kernel_object: int | None, name: str | None) -> rocr.KernelSymbol:
        for exe in self.executables.values():
            for sym in exe.symbols.values():
                if sym.kernel_object == kernel_object or (name is not None and sym.name == name):
                    return sym
        what = f"kernel_object {kernel_object:#x}" if name is None else f"name {name!r}"
        raise not_found(
            Status.ERROR_INVALID_EXECUTABLE_SYMBOL,
            f"no loaded kernel has {what}; load a code object first (POST executables)",
        )

    @staticmethod
    def signal_bytes(interrupt: bool) -> int:
        return SIGNAL_BYTES + (EVENT_BYTES if interrupt else 0)

    def add_signal(self, sig: rocr.Signal) -> None:
        """Register `sig`, charged to the system (signal, and its KFD event if it has one)."""
        if sig.handle in self.signals:
            return
        if len(self.signals) >= self.limits.max_signals_per_system:
            raise limit_error(
                429,
                "max_signals_per_system",
                self.limits.max_signals_per_system,
                "too many signals; destroy some first",
            )
        self.signals[sig.handle] = sig
        self.charge("signal", sig.handle, self.signal_bytes(sig.event is not None))

    def remove_signal(self, handle: int) -> None:
        del self.signals[handle]
        self.refund("signal", handle)

    def check_signal_room(self, interrupt: bool = True) -> None:
        """429 unless one more signal fits (its count, and its bytes)."""
        self.ensure_room(self.signal_bytes(interrupt))
        if len(self.signals) >= self.limits.max_signals_per_system:
            raise limit_error(
                429,
                "max_signals_per_system",
                self.limits.max_signals_per_system,
                "too many signals; destroy some first",
            )

    # -- description -------------------------------------------------------------------------
    def info(self) -> SystemInfo:
        self.release_markers()
        sysm = self.rt.system
        idle = self.idle_s()
        return SystemInfo(
            id=self.id,
            preset=self.preset,
            name=self.name,
            spec=sysm.spec.model_dump(mode="json") if sysm is not None else {},
            host_ns=self.rt.now_ns,
            device_ns=(sysm.engine.now / 1000) if sysm is not None else 0.0,
            idle_s=round(idle, 3),
            expires_in_s=round(max(0.0, self.limits.idle_timeout_s - idle), 3),
            waiters=self.waiters,
            buffers=len(self.buffers),
            queues=len(self.queues),
            signals=len(self.signals),
            executables=len(self.executables),
            memory_bytes=self.memory_bytes,
        )


def key_digest(entry: str) -> bytes:
    """The SHA-256 digest of an API key, or of 'sha256:<64 hex digits>' (a digest given)."""
    kind, sep, rest = entry.partition(":")
    if sep and kind == "sha256" and len(rest) == 64:
        try:
            return bytes.fromhex(rest)
        except ValueError:
            pass
    return _digest(entry)


def read_api_keys(path: str) -> list[str]:
    """API keys from a file, one a line ('#' comments and blank lines skipped); OSError or
    ValueError naming the file."""
    with open(path, encoding="utf-8") as f:
        keys = [ln.strip() for ln in f if ln.strip() and not ln.lstrip().startswith("#")]
    if not keys:
        raise ValueError(f"{path} holds no API key (one a line)")
    return keys


SHUTTING_DOWN = "the server is shutting down"


def gone(sid: str) -> ApiError:
    return not_found(
        Status.ERROR_NOT_INITIALIZED,
        f"no system {sid!r} for this token (it may have been shut down, or expired when idle)",
    )


class SystemRegistry:
    """Every served system, by id; creation, lookup with the token, expiry."""

    def __init__(
        self,
        limits: ServerLimits | None = None,
        default_preset: str = "gfx900",
        admin_token: str | None = None,
        api_keys: Iterable[str] | None = None,
    ) -> None:
        """`api_keys`: when given, creating a system needs one of them (header X-API-Key);
        an entry 'sha256:<hex>' is a key's digest, so a key file need not hold the keys."""
        self.limits = limits or ServerLimits()
        self.default_preset = default_preset
        self._admin = _digest(admin_token) if admin_token else None
        self._keys = None if api_keys is None else [key_digest(k) for k in api_keys]
        self._lock = threading.Lock()
        self._systems: dict[str, ServedSystem] = {}
        self._pending = 0
        self._pending_by: dict[str, int] = {}
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, at)
        self.store: Any = None  # a rocr.service.state.SystemStore with --state DIR

    def __len__(self) -> int:
        return len(self._systems)

    @property
    def requires_key(self) -> bool:
        return self._keys is not None

    # -- admission of new systems ------------------------------------------------------------
    def _known_key(self, key: str) -> bytes | None:
        given = _digest(key)
        found = None
        for d in self._keys or ():  # every digest compared, in constant time each
            if hmac.compare_digest(given, d):
                found = d
        return found

    def client_of(self, *, api_key: str | None, token: str | None, address: str | None) -> str:
        """Who is creating a system: the admin, an API key (digest), or an IP address."""
        if token is not None and self.is_admin(token):
            return ADMIN_CLIENT
        if self._keys is None:
            return f"addr:{address or 'unknown'}"
        if not api_key:
            raise ApiError(
                401,
                Status.ERROR,
                "this server creates systems only for clients with an API key: send it in "
                "the X-API-Key header (the person running the server hands out keys)",
                headers={"WWW-Authenticate": 'ApiKey header="X-API-Key"'},
            )
        digest = self._known_key(api_key)
        if digest is None:
            raise ApiError(403, Status.ERROR, "this API key is not one the server accepts")
        return "key:" + digest.hex()[:16]

    def _held_by(self, client: str) -> list[ServedSystem]:
        now = time.monotonic()  # an expired system is as good as gone (the reaper is due)
        return [s for s in self._systems.values() if s.client == client and not s.expired(now)]

    def _check_client_room(self, client: str) -> None:
        """Under self._lock: 429 when `client` holds max_systems_per_client already."""
        if client == ADMIN_CLIENT:
            return
        lim = self.limits.max_systems_per_client
        held = self._held_by(client)
        if len(held) + self._pending_by.get(client, 0) >= lim:
            now = time.monotonic()
            soonest = min(
                (self.limits.idle_timeout_s - s.idle_s(now) for s in held),
                default=1.0,
            )
            raise limit_error(
                429,
                "max_systems_per_client",
                lim,
                f"this client holds {len(held)} systems already; delete one it no longer "
                "needs (or wait until an idle one expires)",
                retry_after_s=soonest,
            )

    def _take_rate_token(self, client: str) -> None:
        """Under self._lock: one token of the client's creation bucket, or 429."""
        if client == ADMIN_CLIENT:
            return
        rate = self.limits.create_rate_per_minute / 60.0  # tokens per second
        burst = float(self.limits.create_burst)
        now = time.monotonic()
        tokens, at = self._buckets.get(client, (burst, now))
        tokens = min(burst, tokens + (now - at) * rate)
        if tokens < 1.0:
            self._buckets[client] = (tokens, now)
            raise limit_error(
                429,
                "create_rate_per_minute",
                self.limits.create_rate_per_minute,
                f"this client creates systems faster than the server allows (bursts of "
                f"{self.limits.create_burst}); reuse a system, or retry later",
                retry_after_s=(1.0 - tokens) / rate,
            )
        self._buckets[client] = (tokens - 1.0, now)
        if len(self._buckets) > MAX_RATE_BUCKETS:
            full = [
                c
                for c, (t, a) in self._buckets.items()
                if min(burst, t + (now - a) * rate) >= burst
            ]
            for c in full:
                del self._buckets[c]

    def admit(self, *, api_key: str | None, token: str | None, address: str | None) -> str:
        """Admission of a new system from the request's headers alone (before its body is
        read): the client's identity, or 401/403 (API key) or 429 (per-client limits)."""
        client = self.client_of(api_key=api_key, token=token, address=address)
        with self._lock:
            self._check_client_room(client)
            self._take_rate_token(client)
        return client

    def create(
        self, req: SystemCreate, client: str | None = None, *, reap: bool = True
    ) -> tuple[ServedSystem, str]:
        """A new system for `client`. `reap=False`: never block (on an expired system's
        lock); call it so only where a full server would not need the room."""
        if reap:
            self.reap()
        preset = req.preset or self.default_preset
        spec = build_spec(preset, req.spec, self.limits)
        with self._lock:
            if len(self._systems) + self._pending >= self.limits.max_systems:
                now = time.monotonic()
                soonest = min(
                    (self.limits.idle_timeout_s - s.idle_s(now) for s in self._systems.values()),
                    default=1.0,
                )
                raise limit_error(
                    429,
                    "max_systems",
                    self.limits.max_systems,
                    "the server runs as many systems as it may; delete one you no longer "
                    "need, or try again when idle ones have expired",
                    retry_after_s=soonest,
                )
            if client is not None:
                self._check_client_room(client)
                self._pending_by[client] = self._pending_by.get(client, 0) + 1
            self._pending += 1
        try:
            try:
                # A served machine is traced unless asked not to: its trace routes and live
                # view read the trace. A spec override of `trace` says the same, and wins.
                trace = spec.trace if spec is not None and "trace" in req.spec else req.trace
                rt = rocr.init(preset=preset, spec=spec, name=req.name, trace=trace)
            except HsaError:
                raise
            except Exception as e:  # a spec the emulator cannot build a machine from
                raise ApiError(
                    422,
                    Status.ERROR_INVALID_ARGUMENT,
                    f"the spec does not make a working machine: {type(e).__name__}: {e}",
                ) from None
            if spec is not None and not rt.gpus:
                rt.shutdown()
                raise ApiError(
                    422, Status.ERROR_INVALID_ARGUMENT, "the spec makes a machine without a GPU"
                )
            sid = secrets.token_hex(8)
            token = secrets.token_urlsafe(32)
            served = ServedSystem(sid, token, rt, preset, req.name, self.limits, client)
            with self._lock:
                self._systems[sid] = served
        finally:
            with self._lock:
                self._pending -= 1
                if client is not None:
                    left = self._pending_by.pop(client) - 1
                    if left:
                        self._pending_by[client] = left
        return served, token

    def get(self, sid: str, token: str | None) -> ServedSystem:
        with self._lock:
            served = self._systems.get(sid)
        if served is None:
            _digest(token or "")  # same work as a real comparison: timing tells nothing
            raise gone(sid)
        if not served.owned_by(token):
            raise gone(sid)
        if served.expired():
            self._remove(served, "expired when idle")
            raise gone(sid)
        served.touch()
        return served

    def authorize(self, sid: str, token: str) -> ServedSystem:
        """The system `sid` if `token` owns it, else the 404 of an unknown id. Never blocks:
        an expired system is refused here and shut down by the reaper (or `get`)."""
        with self._lock:
            served = self._systems.get(sid)
        if served is None:
            _digest(token)  # same work as a real comparison: timing tells nothing
            raise gone(sid)
        if not served.owned_by(token) or served.closed or served.expired():
            raise gone(sid)
        return served

    def is_admin(self, token: str | None) -> bool:
        if self._admin is None or token is None:
            return False
        return hmac.compare_digest(_digest(token), self._admin)

    def get_admin(self, sid: str) -> ServedSystem:
        with self._lock:
            served = self._systems.get(sid)
        if served is None:
            raise gone(sid)
        return served

    def all(self) -> list[ServedSystem]:
        with self._lock:
            return list(self._systems.values())

    def delete(self, served: ServedSystem) -> None:
        self._remove(served)

    def forget(self, served: ServedSystem, why: str) -> None:
        """Take `served` off the registry and cancel its work (never blocks); closing it is
        the caller's (under a turn: `close_in_turn`)."""
        served.cancel(why)
        with self._lock:
            if self._systems.get(served.id) is served:
                del self._systems[served.id]
        if self.store is not None and why != SHUTTING_DOWN:
            self.store.discard(served.id)  # a deleted or expired system stays gone

    async def close_in_turn(self, served: ServedSystem, run: Any) -> None:
        """Close `served` in its turn once the work in progress has stopped at its slice;
        `run(fn)` runs fn in the emulation executor."""
        try:
            async with served.turn(closing=True):
                if served.quiet() and served.objects() <= LIGHT_CLOSE_OBJECTS:
                    served.close()  # bounded: in the event loop, as a light call
                else:
                    await run(served.close)
        except ApiError:  # the turn never came: whoever holds it sees `cancelled` and stops
            served.closed = True

    def cancel_all(self, why: str = SHUTTING_DOWN) -> None:
        """Stop every system's work at its next slice. Safe from a signal handler: takes no
        lock (the handler may interrupt a thread holding the registry's)."""
        for s in list(self._systems.values()):
            s.cancel(why)

    def _remove(self, served: ServedSystem, why: str = "deleted") -> None:
        self.forget(served, why)
        # Shut down under the system's lock so no request is inside; if one is, it will see
        # `closed` when it next takes the lock.
        if served.lock.acquire(timeout=self.limits.max_wait_ms / 1000):
            try:
                served.close()
            finally:
                served.lock.release()
        else:
            served.closed = True

    def reap(self) -> int:
        """Shut down systems idle for longer than idle_timeout_s; returns how many."""
        now = time.monotonic()
        victims = [s for s in self.all() if s.expired(now) and not s.lock.locked()]
        for s in victims:
            self._remove(s, "expired when idle")
        return len(victims)

    def close_all(self) -> None:
        self.cancel_all()
        if self.store is not None:
            self.checkpoint_all()  # work stopped at its slice: the machines are between events
        for s in self.all():
            self._remove(s, SHUTTING_DOWN)

    # -- checkpoints (--state DIR) -----------------------------------------------------------
    def adopt(self, served: ServedSystem) -> None:
        """Serve a system restored from a checkpoint, under its id and token."""
        served.adopt(self.limits)
        with self._lock:
            self._systems[served.id] = served

    def checkpoint_all(self) -> int:
        """Checkpoint every system used since its last checkpoint, each under its lock (taken
        between two requests or two slices, so the machine is between events); a system busy
        for max_wait_ms keeps its previous checkpoint. Returns how many were written."""
        written = 0
        for s in self.all():
            if s.closed or s.activity == s.saved_activity:
                continue
            if s.cancelled not in (None, SHUTTING_DOWN):
                continue
            if not s.lock.acquire(timeout=self.limits.max_wait_ms / 1000):
                continue
            try:
                if s.closed or s.cancelled not in (None, SHUTTING_DOWN):
                    continue  # deleted or expired meanwhile: its file is gone, keep it so
                activity = s.activity
                try:
                    self.store.save(s)
                except Exception:  # one system that cannot be saved must not stop the rest
                    log.exception("checkpointing system %s", s.id)
                    continue
                s.saved_activity = activity
                written += 1
            finally:
                s.lock.release()
        return written
