"""A client OS process of the KFD-service tests (run with HSAEMU_KFD=unix:PATH).

    python tests/e2e/kfd_worker.py square N [--after FILE]   one dispatch; JSON result line
    python tests/e2e/kfd_worker.py fork K N                   K forked clients (see fork())
    python tests/e2e/kfd_worker.py gated                      a kernel that never runs, then sleeps
    python tests/e2e/kfd_worker.py ipc-export                 an IPC signal; stores 0 on "go"
    python tests/e2e/kfd_worker.py ipc-import HANDLE N        waits on it with a barrier-AND

Every wait is bounded (WAIT_S of wall time); results are one JSON object per line.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

import rocr
from hw_model import aql

WAIT_S = 30.0


def emit(kind: str, **fields) -> None:
    os.write(1, (json.dumps({"kind": kind, **fields}) + "\n").encode())


def wait_for_file(path: str) -> None:
    end = time.monotonic() + WAIT_S
    while not os.path.exists(path):
        if time.monotonic() > end:
            raise SystemExit(f"timed out waiting for {path}")
        time.sleep(0.01)


def square(rt, n: int):
    gpu = rt.gpus[0]
    pool = rt.cpu.pools(fine_grained=True, kernarg=False)[0]
    src, dst = pool.allocate(4 * n), pool.allocate(4 * n)
    rt.allow_access([gpu], src)
    rt.allow_access([gpu], dst)
    x = np.linspace(-3, 3, n, dtype=np.float32)
    src.view(np.float32, n)[:] = x
    k = rt.load_code_object("builtin:square").kernel("square")
    q = gpu.create_queue(256)
    done = rt.create_signal(1)
    h = q.dispatch(k, grid=n, workgroup=256, args=(dst, src, n), completion_signal=done)

    def finish() -> dict:
        h.wait()
        start, end = done.dispatch_time()
        return {
            "ok": bool(np.array_equal(dst.view(np.float32, n), x * x)),
            "start_ns": start,
            "end_ns": end,
            "now_ns": rt.now_ns,
        }

    return finish


def cmd_square(argv: list[str]) -> None:
    n = int(argv[0])
    after = argv[argv.index("--after") + 1] if "--after" in argv else None
    reports = argv[argv.index("--reports") + 1] if "--reports" in argv else None
    with rocr.init(name="square") as rt:
        finish = square(rt, n)
        pasid = rt.transport.pasid
        emit("ready", pasid=pasid, pid=os.getpid())
        if after:
            wait_for_file(after)
        emit("result", pasid=pasid, **finish())
        if reports:
            rt.transport.write_reports(reports)


def fork(k: int, n: int) -> None:
    """K child processes, each a client with a queue and a kernel in flight; once all are up
    the parent prints the service's STATUS, then lets them finish."""
    from rock_emu.service import peek_status

    path = os.environ["HSAEMU_KFD"][len("unix:") :]
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pids = []
    for _ in range(k):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.close(ready_r)
                os.close(go_w)
                with rocr.init(name=f"child {os.getpid()}") as rt:
                    finish = square(rt, n)
                    os.write(ready_w, b"r")
                    os.read(go_r, 1)
                    emit("result", pasid=rt.transport.pasid, **finish())
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    os.close(ready_w)
    os.close(go_r)
    got = 0
    end = time.monotonic() + WAIT_S
    while got < k and time.monotonic() < end:
        got += len(os.read(ready_r, k))
    emit("status", ready=got, status=peek_status(path))
    os.write(go_w, b"g" * k)
    codes = [os.waitpid(pid, 0)[1] for pid in pids]
    emit("exit", codes=codes)


def cmd_gated(argv: list[str]) -> None:
    """A queue whose kernel waits behind a barrier-AND on a signal nobody sets, BOs, events;
    then sleep until killed."""
    rt = rocr.init(name=f"gated {os.getpid()}")
    q = rt.gpus[0].create_queue(64)
    gate = rt.create_signal(1)
    q.submit(
        rocr.BarrierAndPacket(
            header=aql.make_header(aql.PacketType.BARRIER_AND),
            dep_signal=[gate.handle, 0, 0, 0, 0],
        )
    )
    k = rt.load_code_object("builtin:empty").kernel("empty")
    q.dispatch(k, grid=64, workgroup=64)
    emit("ready", pasid=rt.transport.pasid, pid=os.getpid())
    time.sleep(WAIT_S)


def cmd_ipc_export(argv: list[str]) -> None:
    with rocr.init(name=f"exporter {os.getpid()}") as rt:
        sig = rt.create_signal(1, ipc=True)
        handle = rt.ipc_signal_create(sig)
        emit("ready", pasid=rt.transport.pasid, handle=handle.hex())
        line = sys.stdin.readline()  # "go"
        if line.strip() == "go":
            sig.store(0)
            emit("stored", value=sig.load())


def cmd_ipc_import(argv: list[str]) -> None:
    handle, n = bytes.fromhex(argv[0]), int(argv[1])
    with rocr.init(name=f"importer {os.getpid()}") as rt:
        sig = rt.ipc_signal_attach(handle)
        gpu = rt.gpus[0]
        q = gpu.create_queue(64)
        q.submit(
            rocr.BarrierAndPacket(
                header=aql.make_header(aql.PacketType.BARRIER_AND),
                dep_signal=[sig.handle, 0, 0, 0, 0],
            )
        )
        pool = rt.cpu.pools(fine_grained=True, kernarg=False)[0]
        src, dst = pool.allocate(4 * n), pool.allocate(4 * n)
        rt.allow_access([gpu], src)
        rt.allow_access([gpu], dst)
        x = np.arange(n, dtype=np.float32)
        src.view(np.float32, n)[:] = x
        k = rt.load_code_object("builtin:square").kernel("square")
        h = q.dispatch(k, grid=n, workgroup=64, args=(dst, src, n))
        try:
            h.wait(timeout_ns=2_000_000)
            gated = False
        except rocr.HsaError:
            gated = True
        emit("gated", gated=gated, value=sig.load(), pasid=rt.transport.pasid)
        h.wait()
        emit("result", ok=bool(np.array_equal(dst.view(np.float32, n), x * x)))


def main() -> None:
    role, argv = sys.argv[1], sys.argv[2:]
    if role == "square":
        cmd_square(argv)
    elif role == "fork":
        fork(int(argv[0]), int(argv[1]))
    elif role == "gated":
        cmd_gated(argv)
    elif role == "ipc-export":
        cmd_ipc_export(argv)
    elif role == "ipc-import":
        cmd_ipc_import(argv)
    else:
        raise SystemExit(f"unknown role {role}")


if __name__ == "__main__":
    main()
