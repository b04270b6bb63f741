"""HTTP load: the full create → dispatch → read → delete loop at 32 clients, hsaemu vs a bare app.

Each client loops: create a system (teaching preset), load `builtin:square`, allocate a 16 KiB
buffer and allow the GPU to reach it, create a queue, write the input, dispatch `square`, wait
for its completion signal, read the result back (and check it), delete the system. The same
loop runs against `hsaemu serve` and against a bare FastAPI app with the same routes whose
"machine" is a dict of numpy arrays (the dispatch squares the array in numpy): what the HTTP
stack, JSON and one request per step cost without any emulation. Both servers run in
subprocesses on 127.0.0.1, up at once; the same clients drive one, then the other, in
alternating rounds (so that a change in the rest of the machine's load during the run falls
on both); prints loops/s, the ratio, p50/p99 of the whole loop and of dispatch + wait, and
each server's peak RSS; writes bench/results/http_load.json.

    python bench/http_load.py                      # 32 clients, 20 s per server, 4 rounds
    python bench/http_load.py --clients 8 --seconds 10 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import secrets
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import numpy as np
from fastapi import FastAPI, Header, HTTPException, Request, Response

N = 4096  # float32 elements: a 16 KiB buffer
LIMITS = [
    "create_rate_per_minute=1000000000",
    "create_burst=1000000",
    "max_systems_per_client=1024",
    "max_systems=1024",
]


# -- the bare app ------------------------------------------------------------------------------


def bare_app() -> FastAPI:
    """The same routes, no emulation: a system is a dict of numpy arrays behind a token."""
    app = FastAPI()
    systems: dict[str, dict[str, Any]] = {}

    def sys_of(sid: str, authorization: str | None) -> dict[str, Any]:
        s = systems.get(sid)
        if s is None or authorization != f"Bearer {s['token']}":
            raise HTTPException(404, "no system")
        return s

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "systems": len(systems)}

    @app.post("/v1/systems", status_code=201)
    def create(body: dict[str, Any]) -> dict[str, Any]:
        sid, token = secrets.token_hex(8), secrets.token_urlsafe(32)
        systems[sid] = {"token": token, "buffers": {}, "signals": {}, "next": 1 << 32}
        return {"id": sid, "token": token}

    @app.post("/v1/systems/{sid}/executables", status_code=201)
    def load(sid: str, body: dict[str, Any], authorization: str = Header(None)) -> dict:
        sys_of(sid, authorization)
        return {"id": 0, "symbols": [{"name": "square", "kernel_object": 1}]}

    @app.post("/v1/systems/{sid}/buffers", status_code=201)
    def allocate(sid: str, body: dict[str, Any], authorization: str = Header(None)) -> dict:
        s = sys_of(sid, authorization)
        addr = s["next"]
        s["next"] += 1 << 20
        s["buffers"][addr] = np.zeros(body["size"], np.uint8)
        return {"address": addr, "size": body["size"]}

    @app.post("/v1/systems/{sid}/buffers/{addr}/allow-access")
    def allow(sid: str, addr: int, body: dict[str, Any], authorization: str = Header(None)):
        sys_of(sid, authorization)
        return {"address": addr}

    @app.post("/v1/systems/{sid}/queues", status_code=201)
    def queue(sid: str, body: dict[str, Any], authorization: str = Header(None)) -> dict:
        sys_of(sid, authorization)
        return {"id": 0}

    @app.put("/v1/systems/{sid}/buffers/{addr}/bytes")
    async def write(sid: str, addr: int, request: Request, authorization: str = Header(None)):
        s = sys_of(sid, authorization)
        data = await request.body()
        s["buffers"][addr][: len(data)] = np.frombuffer(data, np.uint8)
        return {"offset": 0, "size": len(data)}

    @app.post("/v1/systems/{sid}/queues/{qid}/dispatch", status_code=201)
    def dispatch(sid: str, qid: int, body: dict[str, Any], authorization: str = Header(None)):
        s = sys_of(sid, authorization)
        dst, src, n = body["args"]
        s["buffers"][dst].view(np.float32)[:n] = s["buffers"][src].view(np.float32)[:n] ** 2
        handle = len(s["signals"]) + 1
        s["signals"][handle] = 0
        return {"queue": qid, "index": 0, "signal": handle, "kernel_object": 1}

    @app.post("/v1/systems/{sid}/signals/{handle}/wait")
    def wait(sid: str, handle: int, body: dict[str, Any], authorization: str = Header(None)):
        s = sys_of(sid, authorization)
        return {"value": s["signals"][handle], "satisfied": True}

    @app.get("/v1/systems/{sid}/buffers/{addr}/bytes", response_model=None)
    def read(sid: str, addr: int, authorization: str = Header(None)) -> Response:
        s = sys_of(sid, authorization)
        return Response(s["buffers"][addr].tobytes(), media_type="application/octet-stream")

    @app.delete("/v1/systems/{sid}", status_code=204, response_model=None)
    def delete(sid: str, authorization: str = Header(None)) -> Response:
        sys_of(sid, authorization)
        del systems[sid]
        return Response(status_code=204)

    return app


# -- servers in subprocesses -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(kind: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    if kind == "hsaemu":
        cmd = [sys.executable, "-m", "rocr.cli", "serve", "--port", str(port)]
        cmd += ["--preset", "teaching", "--log-level", "warning"]
        for lim in LIMITS:
            cmd += ["--limit", lim]
    else:
        cmd = [sys.executable, __file__, "--bare-server", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    import httpx

    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url + "/healthz").is_success:
                return proc, url
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{kind} server did not start")
        time.sleep(0.1)


def rss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return 0.0


# -- the clients -------------------------------------------------------------------------------


def one_loop(c: Any, data: bytes, want: np.ndarray, stats: dict[str, list[float]]) -> None:
    t0 = time.perf_counter()
    d = c.post("/v1/systems", json={"preset": "teaching"})
    d.raise_for_status()
    d = d.json()
    p, auth = f"/v1/systems/{d['id']}", {"Authorization": f"Bearer {d['token']}"}
    c.post(p + "/executables", json={"source": "builtin:square"}, headers=auth).raise_for_status()
    buf = c.post(p + "/buffers", json={"pool": 1, "size": 4 * N}, headers=auth)
    buf.raise_for_status()
    addr = buf.json()["address"]
    c.post(f"{p}/buffers/{addr}/allow-access", json={"agents": [1]}, headers=auth)
    q = c.post(p + "/queues", json={"agent": 1, "size": 64}, headers=auth).json()
    octet = {**auth, "Content-Type": "application/octet-stream"}
    c.put(f"{p}/buffers/{addr}/bytes", content=data, headers=octet).raise_for_status()
    t1 = time.perf_counter()
    r = c.post(
        f"{p}/queues/{q['id']}/dispatch",
        json={"kernel": "square", "grid": N, "workgroup": 256, "args": [addr, addr, N]},
        headers=auth,
    )
    r.raise_for_status()
    w = c.post(
        f"{p}/signals/{r.json()['signal']}/wait",
        json={"condition": "EQ", "compare_value": 0},
        headers=auth,
    )
    w.raise_for_status()
    t2 = time.perf_counter()
    got = c.get(f"{p}/buffers/{addr}/bytes", headers={**auth, "Accept": "application/octet-stream"})
    got.raise_for_status()
    if not np.array_equal(np.frombuffer(got.content, np.float32), want):
        raise AssertionError("wrong result")
    c.delete(p, headers=auth).raise_for_status()
    stats["loop"].append(time.perf_counter() - t0)
    stats["dispatch_wait"].append(t2 - t1)


class Run:
    """What the clients measured against one server, over one or more stretches."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.stats: dict[str, list[float]] = {"loop": [], "dispatch_wait": []}
        self.errors: list[str] = []
        self.peak = [rss_mib(pid)]
        self.elapsed = 0.0


def drive(url: str, clients: int, seconds: float, pid: int, run: Run | None = None) -> dict:
    """`clients` threads looping for `seconds` against the server at `url` (process `pid`);
    with `run`, adds to what it holds. Returns the figures of everything in the run."""
    import httpx

    x = np.arange(N, dtype=np.float32) / 7
    data, want = x.tobytes(), x * x
    run = run if run is not None else Run(pid)
    stats, errors, peak = run.stats, run.errors, run.peak
    stop = time.monotonic() + seconds

    def client() -> None:
        with httpx.Client(base_url=url, timeout=60) as c:
            while time.monotonic() < stop:
                try:
                    one_loop(c, data, want, stats)
                except Exception as e:  # counted, the run goes on
                    errors.append(f"{type(e).__name__}: {e}")

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        peak.append(rss_mib(pid))
        time.sleep(0.25)
    run.elapsed += time.monotonic() - t0
    elapsed = run.elapsed

    def pct(xs: list[float], q: float) -> float:
        return float(np.percentile(xs, q) * 1000) if xs else float("nan")

    return {
        "loops": len(stats["loop"]),
        "loops_per_s": len(stats["loop"]) / elapsed,
        "loop_p50_ms": pct(stats["loop"], 50),
        "loop_p99_ms": pct(stats["loop"], 99),
        "dispatch_wait_p50_ms": pct(stats["dispatch_wait"], 50),
        "dispatch_wait_p99_ms": pct(stats["dispatch_wait"], 99),
        "errors": len(errors),
        "first_errors": errors[:3],
        "rss_peak_mib": max(peak),
        "rss_end_mib": rss_mib(pid),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=20.0, help="per server (default 20)")
    ap.add_argument(
        "--rounds",
        type=int,
        default=4,
        help="stretches each server's seconds are cut into, alternating the servers (default 4)",
    )
    ap.add_argument("--bare-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.bare_server:
        import uvicorn

        uvicorn.run(bare_app(), host="127.0.0.1", port=args.bare_server, log_level="warning")
        return
    results: dict[str, Any] = {"clients": args.clients, "seconds": args.seconds, "n": N}
    results["rounds"] = args.rounds
    kinds = ("hsaemu", "bare")
    servers: dict[str, tuple[subprocess.Popen, str]] = {}
    try:
        for kind in kinds:
            servers[kind] = start(kind)
        runs = {kind: Run(servers[kind][0].pid) for kind in kinds}
        # Both servers stay up; the clients alternate between them (hsaemu, bare, bare,
        # hsaemu, ...) so that a change in the rest of the machine's load falls on both.
        for r in range(args.rounds):
            for kind in kinds if r % 2 == 0 else kinds[::-1]:
                proc, url = servers[kind]
                per = args.seconds / args.rounds
                results[kind] = drive(url, args.clients, per, proc.pid, runs[kind])
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(timeout=30)
    h, b = results["hsaemu"], results["bare"]
    results["ratio"] = h["loops_per_s"] / b["loops_per_s"] if b["loops_per_s"] else None
    print(f"{args.clients} clients, {args.seconds:g} s each in {args.rounds} alternating rounds")
    print(f"{'':8} {'loops/s':>8} {'loop p50':>9} {'p99':>8} {'disp+wait p50':>14} {'p99':>8}")
    for kind in ("hsaemu", "bare"):
        r = results[kind]
        print(
            f"{kind:8} {r['loops_per_s']:8.1f} {r['loop_p50_ms']:7.1f}ms {r['loop_p99_ms']:6.1f}ms"
            f" {r['dispatch_wait_p50_ms']:12.1f}ms {r['dispatch_wait_p99_ms']:6.1f}ms"
            f"   RSS peak {r['rss_peak_mib']:.0f} MiB, errors {r['errors']}"
        )
    print(f"ratio hsaemu / bare: {results['ratio'] or float('nan'):.2f}")
    out = pathlib.Path(__file__).parent / "results" / "http_load.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
