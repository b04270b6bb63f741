"""Soak: many clients for a while against `hsaemu serve`, the full loop plus hostile requests.

Starts `hsaemu serve` on 127.0.0.1 (teaching preset, per-client limits raised as in
bench/http_load.py: every client here is the same address) and runs `--clients` threads for a
bounded time. Each loop: create a system, load `builtin:square`, allocate a buffer and let the
GPU reach it, create a queue, upload the input, dispatch, wait, read the result back (checked),
then one hostile request on the system (rotating through the kinds below), then delete it. A
hostile request must get the 4xx it deserves; anything else (a 5xx, a wrong status, a wrong
result, a transport error) counts as an error. Prints errors (must be 0), loops/s, p50/p99 of
the loop and of dispatch + wait, and the server's RSS at the start, every minute and at the
end; checks that no system is left once the clients stop and that SIGTERM ends the server;
writes bench/results/soak.json. Not a test: figures for docs/http-api.md.

    python bench/soak.py                   # 32 clients, 20 s
    python bench/soak.py --minutes 10      # the documented run
    python bench/soak.py --clients 8 --seconds 60
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import itertools
import json
import pathlib
import signal
import sys
import threading
import time
from collections import Counter
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import http_load  # noqa: E402  (the server starter and RSS reader are shared)

N = 4096  # float32 elements: a 16 KiB buffer, as bench/http_load.py
# A body past the soak server's max_body_bytes (set below, so the 413 costs little traffic).
BODY_LIMIT = 1 << 20
LIMITS = [*http_load.LIMITS, f"max_body_bytes={BODY_LIMIT}"]
# A client that hangs up waits this long first: the server must notice and drop the work
# (its watch polls every 0.1 s, rocr.service.systems.WATCH_S).
HANGUP_S = 0.3
HANGUP_EVERY = 16  # one hostile round in this many is a hang-up (each costs ~HANGUP_S)
HANGUP_GRID = 1 << 24  # work-items of `empty`: far more emulation than HANGUP_S


def _deep() -> bytes:
    return b"[" * 100_000 + b"]" * 100_000


def hostile(kind: str, c: httpx.Client, p: str, auth: dict[str, str], ctx: dict[str, Any]) -> int:
    """One hostile request of `kind` on system path `p`; returns the status it should get
    (the caller compares), or -1 when the request itself is the check (hang-up)."""
    js = {**auth, "Content-Type": "application/json"}
    octet = {**auth, "Content-Type": "application/octet-stream"}
    if kind == "no_token":
        ctx["r"] = c.get(p + "/clock")
        return 401
    if kind == "wrong_token":
        ctx["r"] = c.get(p + "/clock", headers={"Authorization": "Bearer " + "A" * 43})
        return 404
    if kind == "other_system":
        # This client's own (valid) token on another client's system.
        other = ctx.get("other") or "/v1/systems/0000000000000000"
        ctx["r"] = c.get(other + "/clock", headers=auth)
        return 404
    if kind == "deep_json":
        ctx["r"] = c.put(f"{p}/buffers/{ctx['addr']}/bytes", content=_deep(), headers=js)
        return 422
    if kind == "bad_code_object":
        blob = b"\x7fHSAEMU-CO\x00" + json.dumps({"amdhsa.kernels": 5}).encode()
        ctx["r"] = c.post(p + "/executables", content=blob, headers=octet)
        return 400
    if kind == "too_much_work":
        body = {"kernel": "square", "grid": [1 << 31, 1 << 12, 1], "workgroup": [256, 1, 1]}
        body["args"] = [ctx["addr"], ctx["addr"], N]
        ctx["r"] = c.post(f"{p}/queues/{ctx['queue']}/dispatch", json=body, headers=auth)
        return 422
    if kind == "endless_run":
        ctx["r"] = c.post(p + "/run", json={"duration_ns": 1e15}, headers=auth)
        return 422
    if kind == "big_body":
        ctx["r"] = c.put(
            f"{p}/buffers/{ctx['addr']}/bytes", content=b"\0" * (BODY_LIMIT + 1), headers=octet
        )
        return 413
    if kind == "stuck_wait":
        sig = c.post(p + "/signals", json={"initial": 1}, headers=auth).json()["handle"]
        body = {"condition": "EQ", "compare_value": 0}
        ctx["r"] = c.post(f"{p}/signals/{sig}/wait", json=body, headers=auth)
        return 409
    if kind == "hangup":
        # A big grid (seconds of emulation) waited on by a client that gives up: the server
        # must drop the wait, and the clock and DELETE that follow must not wait for the grid.
        r = c.post(p + "/executables", json={"source": "builtin:empty"}, headers=auth)
        body = {"kernel": "empty", "grid": HANGUP_GRID, "workgroup": 256, "args": []}
        r = c.post(f"{p}/queues/{ctx['queue']}/dispatch", json=body, headers=auth)
        with contextlib.suppress(httpx.TimeoutException):
            c.post(
                f"{p}/signals/{r.json()['signal']}/wait",
                json={"condition": "EQ", "compare_value": 0},
                headers=auth,
                timeout=HANGUP_S,
            )
        return -1
    raise ValueError(kind)


KINDS = [
    "no_token",
    "wrong_token",
    "other_system",
    "deep_json",
    "bad_code_object",
    "too_much_work",
    "endless_run",
    "big_body",
    "stuck_wait",
]


class Soak:
    def __init__(self, url: str, pid: int, clients: int, seconds: float) -> None:
        self.url, self.pid, self.clients, self.seconds = url, pid, clients, seconds
        x = np.arange(N, dtype=np.float32) / 7
        self.data, self.want = x.tobytes(), x * x
        self.loops: list[float] = []
        self.dispatch_wait: list[float] = []
        self.errors: list[str] = []
        self.hostile = Counter()
        self.lock = threading.Lock()
        self.live: list[str] = []  # system paths alive now (for other_system)
        self.rounds = itertools.count()

    def error(self, what: str) -> None:
        with self.lock:
            self.errors.append(what)

    def one_loop(self, c: httpx.Client) -> None:
        t0 = time.perf_counter()
        d = c.post("/v1/systems", json={"preset": "teaching"})
        if d.status_code != 201:
            return self.error(f"create: {d.status_code} {d.text[:200]}")
        d = d.json()
        p, auth = f"/v1/systems/{d['id']}", {"Authorization": f"Bearer {d['token']}"}
        with self.lock:
            self.live.append(p)
        try:
            self._work(c, p, auth, t0)
        finally:
            with self.lock:
                self.live.remove(p)
            r = c.delete(p, headers=auth)
            if r.status_code != 204:
                self.error(f"delete: {r.status_code} {r.text[:200]}")

    def _work(self, c: httpx.Client, p: str, auth: dict[str, str], t0: float) -> None:
        def ok(r: httpx.Response, code: int, what: str) -> bool:
            if r.status_code != code:
                self.error(f"{what}: {r.status_code} {r.text[:200]}")
                return False
            return True

        r = c.post(p + "/executables", json={"source": "builtin:square"}, headers=auth)
        if not ok(r, 201, "load"):
            return
        r = c.post(p + "/buffers", json={"pool": 1, "size": 4 * N}, headers=auth)
        if not ok(r, 201, "allocate"):
            return
        addr = r.json()["address"]
        r = c.post(f"{p}/buffers/{addr}/allow-access", json={"agents": [1]}, headers=auth)
        if not ok(r, 200, "allow-access"):
            return
        r = c.post(p + "/queues", json={"agent": 1, "size": 64}, headers=auth)
        if not ok(r, 201, "queue"):
            return
        qid = r.json()["id"]
        octet = {**auth, "Content-Type": "application/octet-stream"}
        r = c.put(f"{p}/buffers/{addr}/bytes", content=self.data, headers=octet)
        if not ok(r, 200, "upload"):
            return
        t1 = time.perf_counter()
        body = {"kernel": "square", "grid": N, "workgroup": 256, "args": [addr, addr, N]}
        r = c.post(f"{p}/queues/{qid}/dispatch", json=body, headers=auth)
        if not ok(r, 201, "dispatch"):
            return
        w = c.post(
            f"{p}/signals/{r.json()['signal']}/wait",
            json={"condition": "EQ", "compare_value": 0},
            headers=auth,
        )
        if not ok(w, 200, "wait"):
            return
        t2 = time.perf_counter()
        got = c.get(f"{p}/buffers/{addr}/bytes", headers=auth)
        if not ok(got, 200, "read"):
            return
        if not np.array_equal(
            np.frombuffer(base64.b64decode(got.json()["data"]), np.float32), self.want
        ):
            return self.error("read: wrong result")
        # One hostile request on this system, then the system must still answer.
        n = next(self.rounds)
        kind = "hangup" if n % HANGUP_EVERY == HANGUP_EVERY - 1 else KINDS[n % len(KINDS)]
        with self.lock:
            others = [x for x in self.live if x != p]
        ctx: dict[str, Any] = {"addr": addr, "queue": qid, "other": others[0] if others else None}
        want = hostile(kind, c, p, auth, ctx)
        if want >= 0 and ctx["r"].status_code != want:
            r = ctx["r"]
            return self.error(f"hostile {kind}: {r.status_code} (want {want}) {r.text[:200]}")
        if want >= 0 and ctx["r"].headers.get("content-type", "").startswith("application/json"):
            err = ctx["r"].json()
            if not {"status", "code", "message"} <= set(err):
                return self.error(f"hostile {kind}: error body without status/code/message")
        r = c.get(p + "/clock", headers=auth)
        if not ok(r, 200, f"clock after {kind}"):
            return
        with self.lock:
            self.hostile[kind] += 1
            self.loops.append(time.perf_counter() - t0)
            self.dispatch_wait.append(t2 - t1)

    def client(self, stop: float) -> None:
        c = httpx.Client(base_url=self.url, timeout=60)
        try:
            while time.monotonic() < stop:
                try:
                    self.one_loop(c)
                except Exception as e:  # counted, the run goes on
                    self.error(f"{type(e).__name__}: {e}")
                    c.close()
                    c = httpx.Client(base_url=self.url, timeout=60)  # a fresh connection
        finally:
            c.close()

    def run(self) -> dict[str, Any]:
        rss = [(0.0, http_load.rss_mib(self.pid))]
        print(f"RSS at start: {rss[0][1]:.0f} MiB", flush=True)
        t0 = time.monotonic()
        stop = t0 + self.seconds
        threads = [
            threading.Thread(target=self.client, args=(stop,), daemon=True)
            for _ in range(self.clients)
        ]
        for t in threads:
            t.start()
        next_sample, next_minute = t0 + 5, t0 + 60
        while any(t.is_alive() for t in threads):
            now = time.monotonic()
            if now > stop + 120:
                self.error("clients still running 120 s after the end")
                break
            if now >= next_sample:
                rss.append((now - t0, http_load.rss_mib(self.pid)))
                next_sample += 5
            if now >= next_minute:
                with self.lock:
                    loops, errors = len(self.loops), len(self.errors)
                print(
                    f"{(now - t0) / 60:4.0f} min: RSS {rss[-1][1]:.0f} MiB, {loops} loops, "
                    f"{errors} errors",
                    flush=True,
                )
                next_minute += 60
            time.sleep(0.25)
        elapsed = time.monotonic() - t0
        rss.append((elapsed, http_load.rss_mib(self.pid)))
        left = httpx.get(self.url + "/healthz", timeout=10).json()["systems"]
        if left:
            self.error(f"{left} systems left after every client deleted its own")

        def pct(xs: list[float], q: float) -> float:
            return round(float(np.percentile(xs, q) * 1000), 1) if xs else float("nan")

        return {
            "clients": self.clients,
            "seconds": round(elapsed, 1),
            "loops": len(self.loops),
            "loops_per_s": round(len(self.loops) / elapsed, 2),
            "loop_p50_ms": pct(self.loops, 50),
            "loop_p99_ms": pct(self.loops, 99),
            "dispatch_wait_p50_ms": pct(self.dispatch_wait, 50),
            "dispatch_wait_p99_ms": pct(self.dispatch_wait, 99),
            "hostile": dict(self.hostile),
            "errors": len(self.errors),
            "first_errors": self.errors[:5],
            "systems_left": left,
            "rss_mib": [(round(t, 1), round(m, 1)) for t, m in rss],
        }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--minutes", type=float, help="run this long instead (10 for the docs)")
    args = ap.parse_args()
    seconds = args.minutes * 60 if args.minutes is not None else args.seconds
    if not (args.clients >= 1 and 0 < seconds <= 24 * 3600):
        ap.error("--clients at least 1, and a duration of at most a day")
    http_load.LIMITS[:] = LIMITS
    proc, url = http_load.start("hsaemu")
    try:
        res = Soak(url, proc.pid, args.clients, seconds).run()
    finally:
        t = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
            sigterm_s = round(time.monotonic() - t, 2)
        except Exception:
            proc.kill()
            sigterm_s = None
    res["sigterm_exit_s"] = sigterm_s
    rss = res["rss_mib"]
    print(
        f"{res['clients']} clients, {res['seconds']:g} s: {res['loops']} loops, "
        f"{res['loops_per_s']:.1f} loops/s, errors {res['errors']}"
    )
    print(
        f"loop p50 {res['loop_p50_ms']} ms, p99 {res['loop_p99_ms']} ms; dispatch+wait p50 "
        f"{res['dispatch_wait_p50_ms']} ms, p99 {res['dispatch_wait_p99_ms']} ms"
    )
    print(f"hostile requests answered as they should: {res['hostile']}")
    print(
        f"RSS start {rss[0][1]:.0f} MiB, peak {max(m for _, m in rss):.0f} MiB, "
        f"end {rss[-1][1]:.0f} MiB; systems left {res['systems_left']}; "
        f"SIGTERM exit {sigterm_s} s"
    )
    for e in res["first_errors"]:
        print("error:", e)
    out = pathlib.Path(__file__).parent / "results" / "soak.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {out}")
    return 1 if res["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
