"""`rocr.connect()`: a runtime on a served machine, with the local runtime's names and methods.

    rt = rocr.connect("http://127.0.0.1:8000", preset="teaching")   # a new system
    rt = rocr.connect("http://host:8000/v1/systems/<id>", token=...)  # an existing one

A lab script written against `rocr.init()` runs unchanged on what this returns: agents and
pools, buffers, queues and packets, signals, code objects, `dispatch`, and `rt.system` for
inspection. Each call is one request; the server runs the same rocr code a local program
would, so results and traces are the same.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from rocr.client.agent import Agent
from rocr.client.connection import Connection
from rocr.client.executable import Executable
from rocr.client.memory import Buffer, MemoryPool
from rocr.client.queue import Queue
from rocr.client.signal import Signal
from rocr.client.system import System
from rocr.copy import CopyHandle
from rocr.errors import HsaError
from rocr.executable import read_code_object
from rocr.runtime import DispatchHandle as LocalDispatchHandle
from rocr.service.schemas import (
    AgentInfo,
    BufferInfo,
    ExecutableInfo,
    PoolInfo,
    QueueErrorEntry,
    QueueInfo,
    ServerLimits,
    SignalInfo,
    SystemCreate,
    SystemCreated,
)
from rocr.status import Status
from rocr.validate import (
    as_bool,
    as_int,
    as_signal_value,
    as_u64,
    check_allow_access,
    check_kernel_agent,
    show,
)

if TYPE_CHECKING:
    import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
_SYSTEMS = "/v1/systems/"


class DispatchHandle(LocalDispatchHandle):
    """What `queue.dispatch()` returns; the queue's error comes from the server."""

    def _queue_error(self) -> HsaError | None:
        return self.queue.error


class Runtime:
    """A runtime on a served system (`rocr.Runtime`'s interface over HTTP)."""

    def __init__(
        self, conn: Connection, system_id: str, *, owns_system: bool, wall_timeout_ms: int = 0
    ) -> None:
        self.conn = conn
        self.id = system_id
        self.owns_system = owns_system
        self.wall_timeout_ms = wall_timeout_ms
        self.timeout: float | None = None
        self.closed = False
        self._prefix = _SYSTEMS + system_id
        self._buffers: dict[int, Buffer] = {}
        self._queues: dict[int, Queue] = {}
        self._signals: dict[int, Signal] = {}
        self.limits = ServerLimits.model_validate(conn.get("/v1/limits"))
        self._chunk = self.limits.max_body_bytes
        agents = [Agent(self, AgentInfo.model_validate(a)) for a in self._get("/agents")]
        self.agent_list = agents
        by_node = {a.node: a for a in agents}
        for p in self._get("/pools"):
            info = PoolInfo.model_validate(p)
            owner = by_node[info.agent]
            owner._pools.append(MemoryPool(self, info, owner))
        self.cpu = next(a for a in agents if not a.is_gpu)
        self.gpus = [a for a in agents if a.is_gpu]
        self.system = System(self)

    def __repr__(self) -> str:
        return f"rocr.client.Runtime({self.url!r})"

    @property
    def url(self) -> str:
        """This system's URL: with the token, another client can attach to it."""
        return self.conn.base_url + self._prefix

    @property
    def token(self) -> str | None:
        return self.conn.token

    # -- requests ------------------------------------------------------------------------------
    def _check(self) -> None:
        if self.closed:
            raise HsaError(Status.ERROR_NOT_INITIALIZED, "the runtime was shut down")

    def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        self._check()
        return self.conn.request(method, self._prefix + path, **kw)

    def _get(self, path: str, **kw: Any) -> Any:
        return self._request("GET", path, **kw).json()

    def _post(self, path: str, body: Any = None, **kw: Any) -> Any:
        r = self._request("POST", path, json=body, **kw)
        return r.json() if r.content else None

    def _put(self, path: str, body: Any = None, **kw: Any) -> Any:
        r = self._request("PUT", path, json=body, **kw)
        return r.json() if r.content else None

    def _delete(self, path: str) -> None:
        self._request("DELETE", path)

    # -- lifetime ------------------------------------------------------------------------------
    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def shutdown(self) -> None:
        """hsa_shut_down: a system this runtime created is deleted; an attached one is left
        running for its other clients."""
        if self.closed:
            return
        try:
            if self.owns_system:
                self._delete("")
        finally:
            self.closed = True
            self.conn.close()

    # -- agents --------------------------------------------------------------------------------
    def agents(self) -> list[Agent]:
        """hsa_iterate_agents."""
        return list(self.agent_list)

    # -- memory --------------------------------------------------------------------------------
    def _add_buffer(self, buf: Buffer) -> Buffer:
        self._buffers[buf.address] = buf
        return buf

    def allow_access(self, agents: Iterable[Agent], buf: Buffer) -> None:
        """hsa_amd_agents_allow_access: map `buf` into the page tables of `agents`."""
        self._check()
        agents = check_allow_access(agents, buf, self, Agent, Buffer)
        self._post(f"/buffers/{buf.address}/allow-access", {"agents": [a.node for a in agents]})

    # -- signals -------------------------------------------------------------------------------
    def signal(self, handle: int) -> Signal:
        """The signal with this handle (e.g. one another client of the system created)."""
        handle = as_u64(handle, "handle", why="an hsa_signal_t handle")
        sig = self._signals.get(handle)
        if sig is None:
            sig = Signal(self, SignalInfo.model_validate(self._get(f"/signals/{handle}")))
            self._signals[handle] = sig
        return sig

    def create_signal(self, initial: int = 0, *, interrupt: bool = True) -> Signal:
        """hsa_signal_create (interrupt=True: backed by a KFD event, as ROCr's default)."""
        initial = as_signal_value(initial, "initial")
        interrupt = as_bool(interrupt, "interrupt")
        info = SignalInfo.model_validate(
            self._post("/signals", {"initial": initial, "interrupt": interrupt})
        )
        sig = Signal(self, info)
        self._signals[sig.handle] = sig
        return sig

    # -- copies (hsa_ext_amd.h) ----------------------------------------------------------------
    def memory_async_copy(
        self,
        dst: Any,
        dst_agent: Agent,
        src: Any,
        src_agent: Agent,
        size: int,
        deps: Iterable[Signal] = (),
        completion_signal: Signal | None = None,
    ) -> CopyHandle:
        """hsa_amd_memory_async_copy on the served system; a handle with `.wait()`."""
        body = {
            "dst": int(dst),
            "dst_agent": _node(dst_agent, "dst_agent"),
            "src": int(src),
            "src_agent": _node(src_agent, "src_agent"),
            "size": as_u64(size, "size", why="a byte count (size_t)"),
            "deps": [_handle(d, f"deps[{i}]") for i, d in enumerate(deps)],
            "completion_signal": None
            if completion_signal is None
            else _handle(completion_signal, "completion_signal"),
        }
        r = self._post("/copies", body)
        sig = self.signal(r["signal"])
        return CopyHandle(self, sig, r["target"], r["engine"], completion_signal is None)

    def memory_copy(self, dst: Any, src: Any, size: int) -> None:
        """hsa_memory_copy (synchronous)."""
        self._post("/memory-copy", {"dst": int(dst), "src": int(src), "size": size})

    def memory_fill(self, ptr: Any, value: int, count: int) -> None:
        """hsa_amd_memory_fill."""
        self._post("/memory-fill", {"ptr": int(ptr), "value": value, "count": count})

    def memory_lock(self, buf: Any, agents: Iterable[Agent] | None = None) -> int:
        """hsa_amd_memory_lock."""
        nodes = None if agents is None else [_node(a, "agents") for a in agents]
        return int(self._post("/memory-lock", {"buffer": int(buf), "agents": nodes}))

    def memory_unlock(self, buf: Any) -> None:
        """hsa_amd_memory_unlock."""
        self._post("/memory-unlock", {"buffer": int(buf)})

    def profiling_async_copy_enable(self, enable: bool = True) -> None:
        """hsa_amd_profiling_async_copy_enable."""
        self._put("/profiling/async-copy", {"enable": as_bool(enable, "enable")})

    def async_copy_time(self, signal: Signal) -> tuple[float, float]:
        """hsa_amd_profiling_get_async_copy_time: (start, end) in ns."""
        d = self._get(f"/signals/{_handle(signal, 'signal')}/async-copy-time")
        return float(d["start_ns"]), float(d["end_ns"])

    # -- code objects --------------------------------------------------------------------------
    def load_code_object(self, source: Any = "builtin", agent: Agent | None = None) -> Executable:
        """Load a code object for `agent` (default: the first GPU). A path is read here and
        its bytes are sent; built-ins go by name."""
        self._check()
        agent = check_kernel_agent(agent, self, Agent)
        if isinstance(source, str) and (source == "builtin" or source.startswith("builtin:")):
            raw = self._post("/executables", {"source": source, "agent": agent.node})
        else:
            # Paths are read here (the same checks and messages as the local loader).
            blob = read_code_object(source)
            raw = self._request(
                "POST", "/executables", content=blob, params={"agent": agent.node}
            ).json()
        return Executable(ExecutableInfo.model_validate(raw), agent)

    # -- queues --------------------------------------------------------------------------------
    def _create_queue(
        self, agent: Agent, size: int, callback: Callable | None, priority: int
    ) -> Queue:
        body = {
            "agent": agent.node,
            "size": int(size),
            "priority": int(priority),
            "error_callback": callback is not None,
        }
        q = Queue(self, QueueInfo.model_validate(self._post("/queues", body)), agent, callback)
        self._queues[q.id] = q
        return q

    def _queue(self, info: QueueInfo) -> Queue:
        q = self._queues.get(info.id)
        if q is None:
            agent = next(a for a in self.agent_list if a.node == info.agent)
            q = self._queues[info.id] = Queue(self, info, agent, None)
        return q

    def queue(self, queue_id: int) -> Queue:
        """The queue with this id (e.g. one another client of the system created)."""
        queue_id = as_int(queue_id, "queue_id", 0, None)
        return self._queue(QueueInfo.model_validate(self._get(f"/queues/{queue_id}")))

    def queues(self) -> list[Queue]:
        return [self._queue(QueueInfo.model_validate(q)) for q in self._get("/queues")]

    def buffer(self, address: int) -> Buffer:
        """The buffer at this address (e.g. one another client of the system allocated)."""
        address = as_u64(address, "address")
        buf = self._buffers.get(address)
        if buf is None:
            info = BufferInfo.model_validate(self._get(f"/buffers/{address}"))
            pool = next(p for a in self.agent_list for p in a._pools if p.id == info.pool)
            buf = self._add_buffer(Buffer(self, pool, info))
        return buf

    def poll_async(self) -> None:
        """Deliver queue errors the server has seen to the queues' callbacks."""
        for raw in self._get("/queues"):
            q = self._queues.get(raw["id"])
            if q is not None:
                q._update(raw)

    def _note_queue_errors(self, errors: list[QueueErrorEntry]) -> None:
        for e in errors:
            q = self._queues.get(e.queue)
            if q is not None:
                q._note_error(HsaError(Status(e.code), e.message))

    def queue_report(self, q: Queue) -> list[str]:
        """Why `q` is not making progress, read from its memory as a debugger would."""
        return list(self._get(f"/queues/{q.id}/report")["lines"])

    # -- host time / trace ---------------------------------------------------------------------
    @property
    def now_ns(self) -> float:
        return float(self._get("/clock")["host_ns"])

    def trace(self, track: str, name: str, **args: object) -> None:
        """A marker of your own in the trace, at the current host time."""
        self._post("/trace/markers", {"track": track, "name": name, "args": args})


def _node(agent: Any, what: str) -> int:
    if not isinstance(agent, Agent):
        raise HsaError(
            Status.ERROR_INVALID_AGENT, f"{what} = {show(agent)} is not an agent (rt.gpus[i])"
        )
    return agent.node


def _handle(sig: Any, what: str) -> int:
    if not isinstance(sig, Signal):
        raise HsaError(Status.ERROR_INVALID_SIGNAL, f"{what} = {show(sig)} is not a signal")
    return sig.handle


def _split(url: str) -> tuple[str, str | None]:
    base, sep, rest = url.partition(_SYSTEMS)
    if not sep:
        return url.rstrip("/"), None
    sid = rest.strip("/").split("/")[0] or None
    return base.rstrip("/"), sid


def connect(
    url: str | None = None,
    token: str | None = None,
    *,
    system: str | None = None,
    preset: str | None = None,
    spec: dict[str, Any] | None = None,
    name: str = "",
    client: httpx.Client | None = None,
    transport: httpx.BaseTransport | None = None,
    timeout: float | None = 300.0,
    wall_timeout_ms: int = 0,
    trace: bool = True,
) -> Runtime:
    """A runtime on an hsaemu server (default $HSAEMU_URL, else http://127.0.0.1:8000).

    Without a token: creates a system (`preset`, `spec` overrides) that `shutdown()` deletes,
    traced unless `trace=False` (the server's trace routes read it; untraced is faster).
    With a token: attaches to system `system` (or the id in `url`, as `rt.url` gives it).
    `client`/`transport` pass an httpx client or transport (e.g. an in-process one for tests).
    `wall_timeout_ms` is how long waits may block for other clients of a shared system.
    """
    base, sid = _split(url or os.environ.get("HSAEMU_URL", DEFAULT_URL))
    sid = system or sid
    conn = Connection(base, client=client, transport=transport, timeout=timeout)
    try:
        if token is None:
            if sid is not None:
                raise HsaError(
                    Status.ERROR_INVALID_ARGUMENT,
                    f"attaching to system {sid} needs its token: rocr.connect(url, token=...)",
                )
            body = SystemCreate(preset=preset, spec=spec or {}, name=name, trace=trace)
            created = SystemCreated.model_validate(conn.post("/v1/systems", json=body.model_dump()))
            conn.token, sid, owns = created.token, created.id, True
        else:
            if preset is not None or spec:
                raise HsaError(
                    Status.ERROR_INVALID_ARGUMENT,
                    "preset and spec apply when creating a system; an attached one has its own",
                )
            if sid is None:
                raise HsaError(
                    Status.ERROR_INVALID_ARGUMENT,
                    "which system? pass system=<id> or a URL ending in /v1/systems/<id>",
                )
            conn.token, owns = token, False
        rt = Runtime(conn, sid, owns_system=owns, wall_timeout_ms=wall_timeout_ms)
    except BaseException:
        conn.close()
        raise
    rt.timeout = timeout
    return rt
