"""hsaemu servers for tests, notebooks and test farms: a real one in a thread, or in-process.

    with ServerThread(limits=ServerLimits(max_systems=4)) as url:
        rt = rocr.connect(url, preset="teaching")

    with in_process_client() as http:            # no socket: the ASGI app called directly
        rt = rocr.connect("http://testserver", preset="teaching", client=http)

`ServerThread` listens on 127.0.0.1 and a port the OS picks, runs uvicorn exactly as
`hsaemu serve` does, and stops when the block ends.
"""

from __future__ import annotations

import socket
import threading
import time
import warnings
from typing import Any

from rocr.service.schemas import ServerLimits

START_TIMEOUT_S = 20.0


class ServerThread:
    def __init__(
        self,
        app: Any = None,
        *,
        limits: ServerLimits | None = None,
        host: str = "127.0.0.1",
        **app_options: Any,
    ) -> None:
        if app is None:
            from rocr.service.app import create_app

            app = create_app(limits, **app_options)
        self.app = app
        self.host = host
        self.port = 0
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> str:
        import uvicorn

        # proto IPPROTO_TCP: asyncio then sets TCP_NODELAY on accepted connections (without
        # it a response split in two segments waits ~40 ms for the delayed ACK).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True, name="hsaemu-api"
        )
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the hsaemu server on {self.url} did not start")
            time.sleep(0.01)
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=START_TIMEOUT_S)
        self._server = self._thread = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def in_process_client(
    app: Any = None, *, raise_server_exceptions: bool = True, **app_options: Any
) -> Any:
    """A synchronous httpx client (Starlette's TestClient) calling the app in this process;
    use it as a context manager so the app's startup and shutdown run. With
    raise_server_exceptions=False an unexpected server error is a 500 response, as over TCP."""
    with warnings.catch_warnings():
        # Starlette now prefers the httpx2 package for its test client; httpx works the same.
        warnings.filterwarnings("ignore", message=".*starlette.testclient.*")
        from starlette.testclient import TestClient
    if app is None:
        from rocr.service.app import create_app

        app = create_app(**app_options)
    return TestClient(app, raise_server_exceptions=raise_server_exceptions)


def until(cond, what: str, timeout: float = 60.0) -> None:
    """Wait (bounded) until `cond()` holds; a regression fails here instead of hanging."""
    ev = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if cond():
            return
        ev.wait(0.01)
    raise AssertionError(what)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that nothing listens on now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ServeProcess:
    """`hsaemu serve ARGS` as a child process on 127.0.0.1 and a free port, for tests that need
    a real process (signals, exit codes). `with ServeProcess("--preset", "teaching") as p:`
    waits until /healthz answers; `p.url`, `p.proc`. The process is killed at the end if it
    still runs."""

    def __init__(self, *args: str, start_timeout_s: float = START_TIMEOUT_S) -> None:
        import subprocess
        import sys

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rocr.cli", "serve", "--port", str(self.port), *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._start_timeout_s = start_timeout_s

    def __enter__(self) -> ServeProcess:
        import httpx

        deadline = time.monotonic() + self._start_timeout_s
        while True:
            try:
                if httpx.get(self.url + "/healthz").is_success:
                    return self
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError(f"hsaemu serve did not start on {self.url}")
            time.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
