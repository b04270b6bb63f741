"""`hsaemu view script.py`: the live view (/ui) of the machines a local script made.

The script runs first, as under `hsaemu trace`: each runtime it creates is collected at
hsa_init (`rocr.runtime.INIT_HOOKS`, as ROCr loads the tools of HSA_TOOLS_LIB). Its
hsa_shut_down calls are held back until the view ends, as a debugger holds a process at its
exit: the queues, rings, signals and work still in flight stay there to look at. Then each
runtime is served as a system of a small hsaemu API on 127.0.0.1 — the same routes as
`hsaemu serve`, so the page can step and play the machine on from where the script left it —
under a fresh id and token, and the page's URL (with them in its fragment) is printed.
"""

from __future__ import annotations

import contextlib
import secrets
import socket
from collections.abc import Callable
from typing import Any

from rocr.runtime import Runtime

HOST = "127.0.0.1"  # only this machine: the page drives the script's machines
# Seconds a served runtime may sit unused before the server would shut it down: never, in
# practice (the view ends with Ctrl-C, not by expiry).
IDLE_S = 10.0 * 365 * 24 * 3600


class LocalView:
    """Collects runtimes at hsa_init (`hook`), serves them (`app`), shuts them down (`close`)."""

    def __init__(self) -> None:
        self.runtimes: list[Runtime] = []
        self._shutdowns: dict[int, Callable[[], None]] = {}
        self.systems: list[tuple[str, str]] = []  # (id, token) of each served runtime

    def hook(self, rt: Runtime) -> None:
        if rt.system is None or any(r is rt for r in self.runtimes):
            return
        self.runtimes.append(rt)
        self._shutdowns[id(rt)] = rt.shutdown
        # The instance's attribute shadows the method: the script's shutdown() (or the end of
        # its `with rocr.init()` block) leaves the machine as it was.
        rt.shutdown = lambda: None  # type: ignore[method-assign]

    def app(self) -> Any:
        """The hsaemu API serving each collected runtime under a fresh id and token."""
        from rocr.service.app import create_app
        from rocr.service.schemas import ServerLimits
        from rocr.service.systems import ServedSystem

        limits = ServerLimits(idle_timeout_s=IDLE_S, max_systems=max(1, len(self.runtimes)))
        app = create_app(limits, default_preset="teaching")
        registry = app.state.registry
        for i, rt in enumerate(self.runtimes):
            sid, token = f"local-{i}", secrets.token_urlsafe(32)
            served = ServedSystem(sid, token, rt, "local", f"script machine {i}", limits)
            served.queues = {q.id: q for q in rt.queues()}
            signals = sorted(getattr(rt, "_signals", ()), key=lambda s: s.handle)
            served.signals = {s.handle: s for s in signals}
            registry.adopt(served)
            self.systems.append((sid, token))
        return app

    def urls(self, base: str) -> list[str]:
        return [f"{base}/ui#system={sid}&token={token}" for sid, token in self.systems]

    def close(self) -> None:
        """The hsa_shut_down the script asked for, now."""
        for rt in self.runtimes:
            shutdown = self._shutdowns.pop(id(rt), None)
            vars(rt).pop("shutdown", None)
            if shutdown is not None and not rt.closed:
                shutdown()
        self.runtimes.clear()


def listen(port: int) -> socket.socket:
    """A socket listening on 127.0.0.1:`port` (0: a free port the OS picks): connections
    made before the server runs wait in its backlog rather than being refused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, port))
    sock.listen()
    return sock


def serve(app: Any, sock: socket.socket, log_level: str = "warning") -> None:
    """Serve `app` on `sock` until Ctrl-C (SIGINT) or SIGTERM."""
    import uvicorn

    config = uvicorn.Config(app, log_level=log_level, lifespan="on")
    # uvicorn stops serving at the signal, then raises it again: the view ended as asked.
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.Server(config).run(sockets=[sock])
