"""The KFD as a service (hsaemu kfd): real OS processes share one emulated GPU."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import rocr
from rock_emu.service import peek_status

ROOT = Path(__file__).resolve().parents[2]
WORKER = str(Path(__file__).with_name("kfd_worker.py"))
TIMEOUT = 60  # wall seconds any one process may take: a bound, not a measurement


def _env(sock: Path | None = None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("HSAEMU_KFD", None)
    if sock is not None:
        env["HSAEMU_KFD"] = f"unix:{sock}"
    return env


class Daemon:
    def __init__(
        self, sock: Path, preset: str = "teaching", lease_ms: int = 50, trace: bool = False
    ) -> None:
        self.sock = sock
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "rocr.cli",
                "kfd",
                "--socket",
                str(sock),
                "--preset",
                preset,
                "--idle-lease-ms",
                str(lease_ms),
                *(["--trace"] if trace else []),
            ],
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        end = time.monotonic() + TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"hsaemu kfd exited: {self.proc.stderr.read()}")
            try:
                peek_status(str(sock), timeout=5)
                break
            except OSError:
                if time.monotonic() > end:
                    raise
                time.sleep(0.05)

    def status(self) -> dict:
        return peek_status(str(self.sock))

    def stop(self) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            _, err = self.proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return self.proc.returncode, err


@pytest.fixture
def daemon(tmp_path):
    started: list[Daemon] = []

    def start(**kw) -> Daemon:
        d = Daemon(tmp_path / "kfd.sock", **kw)
        started.append(d)
        return d

    yield start
    for d in started:
        d.stop()


def _client(sock: Path, *args: str, stdin: bool = False) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, WORKER, *args],
        env=_env(sock),
        stdin=subprocess.PIPE if stdin else None,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _line(p: subprocess.Popen, kind: str) -> dict:
    """The next JSON line of `kind` from a worker (its stdout), within TIMEOUT."""
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(p.stdout, selectors.EVENT_READ)
    end = time.monotonic() + TIMEOUT
    while time.monotonic() < end:
        if not sel.select(timeout=max(0.0, end - time.monotonic())):
            break
        line = p.stdout.readline()
        if not line:
            break
        obj = json.loads(line)
        if obj["kind"] == kind:
            return obj
    p.kill()
    raise AssertionError(f"no {kind!r} line from the worker; stderr: {p.stderr.read()}")


def _finish(p: subprocess.Popen) -> None:
    try:
        p.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        p.kill()
        raise
    assert p.returncode == 0, p.stderr.read()


def test_one_client_gets_the_in_process_trace_and_timestamps(daemon, tmp_path):
    """Conservative synchronisation with one client: the same device timeline as in-process,
    event for event in the trace."""
    d = daemon(lease_ms=600_000, trace=True)  # no wall-clock lease can enter this comparison
    p = _client(d.sock, "square", "3000", "--reports", str(tmp_path / "served"))
    served = _line(p, "result")
    _finish(p)
    spec = importlib.util.spec_from_file_location("kfd_worker", WORKER)
    worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker)
    with rocr.init(preset="teaching", name="square", trace=True) as rt:
        local = worker.square(rt, 3000)()
        rt.transport.write_reports(str(tmp_path / "local"))
    assert served["ok"] and local["ok"]
    for name in ("trace.json", "kernel_trace.csv"):
        mine = (tmp_path / "served" / name).read_text()
        assert mine == (tmp_path / "local" / name).read_text(), name
    assert (served["start_ns"], served["end_ns"]) == (local["start_ns"], local["end_ns"])
    assert served["now_ns"] == local["now_ns"]


def test_two_processes_share_the_gpu_and_status_lists_both(daemon):
    d = daemon()
    flag = d.sock.parent / "go"
    a = _client(d.sock, "square", "5000", "--after", str(flag))
    b = _client(d.sock, "square", "7000", "--after", str(flag))
    ra, rb = _line(a, "ready"), _line(b, "ready")
    st = d.status()
    assert {c["pasid"] for c in st["clients"]} == {ra["pasid"], rb["pasid"]}
    assert {c["pid"] for c in st["clients"]} == {ra["pid"], rb["pid"]}
    assert st["runlist"]["queues"] == 2
    flag.touch()
    assert _line(a, "result")["ok"] and _line(b, "result")["ok"]
    _finish(a)
    _finish(b)
    assert d.status()["clients"] == []


def test_twelve_processes_oversubscribe_the_eight_vmids(daemon):
    d = daemon(preset="gfx900")  # 24 HQDs: only the VMIDs run short
    p = _client(d.sock, "fork", "12", "2048")
    st = _line(p, "status")
    assert st["ready"] == 12
    rl = st["status"]["runlist"]
    gpu = rl["gpus"][0]
    assert gpu["processes"] == 12 and gpu["vmids"] == 8
    assert gpu["oversubscribed"] and rl["oversubscribed"]
    assert len({q["pasid"] for q in st["status"]["rls"][0]["queues"]}) == 12
    results = [_line(p, "result") for _ in range(12)]
    assert all(r["ok"] for r in results)
    assert len({r["pasid"] for r in results}) == 12
    assert _line(p, "exit")["codes"] == [0] * 12
    _finish(p)


def test_kill_9_is_process_exit_and_the_other_client_finishes(daemon):
    d = daemon()
    flag = d.sock.parent / "go"
    victim = _client(d.sock, "gated")
    v = _line(victim, "ready")
    survivor = _client(d.sock, "square", "4000", "--after", str(flag))
    s = _line(survivor, "ready")
    before = d.status()
    assert v["pasid"] in {p["pasid"] for p in before["processes"]}
    os.kill(v["pid"], signal.SIGKILL)
    victim.wait(timeout=TIMEOUT)
    end = time.monotonic() + TIMEOUT
    while v["pasid"] in {p["pasid"] for p in d.status()["processes"]}:
        assert time.monotonic() < end, "the killed client's process was never cleaned up"
        time.sleep(0.02)
    after = d.status()
    queues = [q["pasid"] for q in after["rls"][0]["queues"]]
    assert v["pasid"] not in queues and s["pasid"] in queues
    assert after["memfds"] < before["memfds"]  # its BOs' memfds were closed
    flag.touch()
    assert _line(survivor, "result")["ok"]
    _finish(survivor)
    assert d.proc.poll() is None


def test_barrier_and_in_one_process_waits_on_an_ipc_signal_of_another(daemon):
    d = daemon()
    exporter = _client(d.sock, "ipc-export", stdin=True)
    handle = _line(exporter, "ready")["handle"]
    importer = _client(d.sock, "ipc-import", handle, "500")
    gated = _line(importer, "gated")
    assert gated["gated"] and gated["value"] == 1  # the barrier held the kernel back
    exporter.stdin.write("go\n")
    exporter.stdin.flush()
    assert _line(exporter, "stored")["value"] == 0
    assert _line(importer, "result")["ok"]
    _finish(importer)
    exporter.stdin.close()
    _finish(exporter)


def test_sigterm_exits_cleanly_and_unlinks_the_socket(daemon):
    d = daemon()
    assert (d.sock.stat().st_mode & 0o777) == 0o600
    code, err = d.stop()
    assert code == 0, err
    assert not d.sock.exists()
