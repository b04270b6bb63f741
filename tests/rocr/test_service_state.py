"""Checkpoints: a served system survives a server restart with --state DIR (same id, token,
bytes, signal values, and it dispatches again); the runtime checkpoint in the Python API."""

import base64
import os
import signal
import time

import httpx
import numpy as np
import pytest

import rocr
from rocr import checkpoint
from rocr.service.app import create_app
from rocr.service.testing import ServeProcess, in_process_client


def _dispatch(c, base, auth, q, exe_kernel, buf, n, signal):
    r = c.post(
        f"{base}/queues/{q}/dispatch",
        json={
            "kernel_object": exe_kernel,
            "grid": n,
            "workgroup": 64,
            "args": [buf, buf, n],
            "completion_signal": signal,
        },
        headers=auth,
    )
    assert r.status_code == 201, r.text
    r = c.post(
        f"{base}/signals/{signal}/wait",
        json={"condition": "LT", "compare_value": 1},
        headers=auth,
    )
    assert r.status_code == 200, r.text


def _read(c, base, auth, buf, n):
    r = c.get(f"{base}/buffers/{buf}/bytes", params={"size": 4 * n}, headers=auth)
    assert r.status_code == 200, r.text
    return np.frombuffer(base64.b64decode(r.json()["data"]), np.float32)


def test_a_checkpointed_system_survives_a_server_restart(tmp_path):
    n = 256
    app = create_app(default_preset="teaching", state_dir=str(tmp_path))
    with in_process_client(app) as c:
        d = c.post("/v1/systems", json={"preset": "teaching", "name": "lab"}).json()
        sid, token = d["id"], d["token"]
        base, auth = f"/v1/systems/{sid}", {"Authorization": f"Bearer {token}"}
        pool = next(
            p["id"] for p in c.get(f"{base}/pools", headers=auth).json() if p["fine_grained"]
        )
        buf = c.post(f"{base}/buffers", json={"pool": pool, "size": 4 * n}, headers=auth)
        buf = buf.json()["address"]
        assert c.post(f"{base}/buffers/{buf}/allow-access", json={"agents": [1]}, headers=auth)
        data = np.arange(n, dtype=np.float32)
        r = c.put(
            f"{base}/buffers/{buf}/bytes",
            json={"offset": 0, "data": base64.b64encode(data.tobytes()).decode()},
            headers=auth,
        )
        assert r.status_code < 300, r.text
        exe = c.post(f"{base}/executables", json={"source": "builtin:square"}, headers=auth)
        kobj = exe.json()["kernels"][0]["kernel_object"]
        q = c.post(f"{base}/queues", json={"agent": 1, "size": 64}, headers=auth).json()["id"]
        done = c.post(f"{base}/signals", json={"initial": 1}, headers=auth).json()["handle"]
        kept = c.post(f"{base}/signals", json={"initial": 1234}, headers=auth).json()["handle"]
        _dispatch(c, base, auth, q, kobj, buf, n, done)
        assert (_read(c, base, auth, buf, n) == data**2).all()
        before = c.get(base, headers=auth).json()
    # The app's shutdown checkpointed the system: one file, holding no token.
    files = os.listdir(tmp_path)
    assert files == [f"{sid}.ckpt"]
    assert token.encode() not in (tmp_path / files[0]).read_bytes()
    assert (tmp_path / files[0]).stat().st_mode & 0o077 == 0

    again = create_app(default_preset="teaching", state_dir=str(tmp_path))
    with in_process_client(again) as c:
        after = c.get(base, headers=auth).json()
        assert after["name"] == "lab"
        assert after["device_ns"] == before["device_ns"]
        assert after["memory_bytes"] == before["memory_bytes"]
        assert (_read(c, base, auth, buf, n) == data**2).all()
        assert c.get(f"{base}/signals/{kept}", headers=auth).json()["value"] == 1234
        assert c.get(f"{base}/signals/{done}", headers=auth).json()["value"] == 0
        # Another token still gets the 404 of an unknown system.
        other = {"Authorization": "Bearer " + "x" * 43}
        assert c.get(base, headers=other).status_code == 404
        # It goes on: the same queue, kernel and buffer dispatch again.
        assert c.put(f"{base}/signals/{done}/value", json={"value": 1}, headers=auth)
        _dispatch(c, base, auth, q, kobj, buf, n, done)
        assert (_read(c, base, auth, buf, n) == (data**2) ** 2).all()
        assert c.delete(base, headers=auth).status_code == 204
    # A deleted system is gone from the state directory too.
    assert os.listdir(tmp_path) == []


def test_without_state_nothing_is_written_and_nothing_restored(tmp_path):
    app = create_app(default_preset="teaching")
    with in_process_client(app) as c:
        d = c.post("/v1/systems", json={"preset": "teaching"}).json()
    again = create_app(default_preset="teaching", state_dir=str(tmp_path))
    with in_process_client(again) as c:
        r = c.get(f"/v1/systems/{d['id']}", headers={"Authorization": f"Bearer {d['token']}"})
        assert r.status_code == 404


def test_an_unreadable_checkpoint_is_set_aside(tmp_path):
    (tmp_path / "0123456789abcdef.ckpt").write_bytes(b"not a checkpoint")
    create_app(default_preset="teaching", state_dir=str(tmp_path))
    assert os.listdir(tmp_path) == ["0123456789abcdef.ckpt.unreadable"]


def test_runtime_checkpoint_and_restore(tmp_path):
    rt = rocr.init(preset="teaching")
    gpu = rt.gpus[0]
    pool = rt.cpu.pools(fine_grained=True, kernarg=False)[0]
    buf = pool.allocate(4096)
    rt.allow_access([gpu], buf)
    buf.view(np.float32)[:] = 3
    k = rt.load_code_object("builtin:square").kernel("square")
    q = gpu.create_queue(64)
    q.dispatch(k, grid=1024, workgroup=64, args=(buf, buf, 1024)).wait()
    path = tmp_path / "lab.ckpt"
    checkpoint.checkpoint(rt, path, buf=buf, q=q, k=k)
    address, now = buf.address, rt.now_ns
    rt.shutdown()

    rt2, got = checkpoint.restore(path)
    try:
        assert got["buf"].address == address and rt2.now_ns == now
        assert (got["buf"].view(np.float32) == 9).all()
        got["q"].dispatch(got["k"], grid=1024, workgroup=64, args=(got["buf"],) * 2 + (1024,))
        got["q"].dispatch(got["k"], grid=1, workgroup=1, args=(got["buf"],) * 2 + (0,)).wait()
        assert (got["buf"].view(np.float32) == 81).all()
    finally:
        rt2.shutdown()


def test_hsaemu_serve_state_survives_sigterm_and_restart(tmp_path):
    """The real command: SIGTERM checkpoints, the next `hsaemu serve --state` serves it."""
    state_dir = str(tmp_path / "state")
    with ServeProcess("--preset", "teaching", "--state", state_dir) as serve:
        c = httpx.Client(base_url=serve.url, timeout=60)
        d = c.post("/v1/systems", json={"preset": "teaching"}).json()
        base, auth = f"/v1/systems/{d['id']}", {"Authorization": f"Bearer {d['token']}"}
        sig = c.post(f"{base}/signals", json={"initial": 77}, headers=auth).json()["handle"]
        serve.proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down, then re-raises the signal: killed by SIGTERM, after cleanup.
        assert serve.proc.wait(timeout=30) in (0, -signal.SIGTERM)
    assert os.listdir(state_dir) == [f"{d['id']}.ckpt"]
    with ServeProcess("--preset", "teaching", "--state", state_dir) as serve:
        c = httpx.Client(base_url=serve.url, timeout=60)
        assert c.get(f"{base}/signals/{sig}", headers=auth).json()["value"] == 77


def test_systems_are_checkpointed_periodically(tmp_path):
    app = create_app(default_preset="teaching", state_dir=str(tmp_path), checkpoint_s=0.05)
    with in_process_client(app) as c:
        d = c.post("/v1/systems", json={"preset": "teaching"}).json()
        ckpt = tmp_path / f"{d['id']}.ckpt"
        deadline = time.monotonic() + 60
        while not ckpt.exists():  # the checkpointer's next round, without a shutdown
            assert time.monotonic() < deadline, "no periodic checkpoint"
            time.sleep(0.02)


def test_a_kill_loses_what_followed_the_last_checkpoint(tmp_path):
    """Without a clean shutdown (kill -9) the next server serves the last checkpoint."""
    app = create_app(default_preset="teaching", state_dir=str(tmp_path), checkpoint_s=3600)
    registry = app.state.registry
    with in_process_client(app) as c:
        d = c.post("/v1/systems", json={"preset": "teaching"}).json()
        base, auth = f"/v1/systems/{d['id']}", {"Authorization": f"Bearer {d['token']}"}
        sig = c.post(f"{base}/signals", json={"initial": 5}, headers=auth).json()["handle"]
        assert registry.checkpoint_all() == 1
        assert registry.checkpoint_all() == 0  # nothing changed since: nothing written
        c.put(f"{base}/signals/{sig}/value", json={"value": 6}, headers=auth)
        assert registry.checkpoint_all() == 1
        c.put(f"{base}/signals/{sig}/value", json={"value": 7}, headers=auth)
        # A copy of the directory now is what a killed server would leave.
        ckpt = tmp_path / f"{d['id']}.ckpt"
        killed = tmp_path / "killed"
        killed.mkdir()
        (killed / ckpt.name).write_bytes(ckpt.read_bytes())
    again = create_app(default_preset="teaching", state_dir=str(killed))
    with in_process_client(again) as c:
        assert c.get(f"{base}/signals/{sig}", headers=auth).json()["value"] == 6


def test_serve_refuses_a_state_dir_it_cannot_use(tmp_path, capsys):
    from rocr.cli import main

    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["serve", "--state", str(blocker / "state")]) == 2
    assert f"--state {blocker / 'state'}" in capsys.readouterr().err
    assert main(["serve", "--checkpoint-s", "5"]) == 2
    assert "--checkpoint-s needs --state" in capsys.readouterr().err


def _experiment_start(rt, n):
    gpu = rt.gpus[0]
    pool = rt.cpu.pools(fine_grained=True, kernarg=False)[0]
    a, b = pool.allocate(4 * n), pool.allocate(4 * n)
    rt.allow_access([gpu], a)
    rt.allow_access([gpu], b)
    a.view(np.float32)[:] = np.arange(n, dtype=np.float32) / 8
    exe = rt.load_code_object("builtin:square,vector_add")
    q = gpu.create_queue(64)
    q.dispatch(exe.kernel("square"), grid=n, workgroup=64, args=(b, a, n)).wait()  # retired
    flag = rt.create_signal(42)
    # In flight at the checkpoint: its completion is among the engine's pending events.
    done = rt.create_signal(1)
    q.dispatch(
        exe.kernel("vector_add"), grid=n, workgroup=64, args=(a, b, a, n), completion_signal=done
    )
    return {"a": a, "b": b, "q": q, "exe": exe, "flag": flag, "done": done}


def _experiment_rest(rt, o, n):
    o["done"].wait(rocr.Condition.LT, 1)
    o["flag"].subtract(2)
    h = o["q"].dispatch(o["exe"].kernel("square"), grid=n, workgroup=64, args=(o["b"], o["a"], n))
    h.wait()
    return (
        o["a"].view(np.float32).copy(),
        o["b"].view(np.float32).copy(),
        o["flag"].load(),
        o["done"].dispatch_time(),
        h.dispatch_time(),
        rt.now_ns,
        o["q"].load_read_index(),
    )


def test_python_api_checkpoint_mid_experiment_goes_on_the_same(tmp_path):
    """rt.checkpoint() with buffers holding data, a retired and an in-flight dispatch and
    signals; rocr.restore() gives a runtime that, continued, gives what the original gave:
    the same bytes, signal values, dispatch times and clock."""
    n = 1024
    path = tmp_path / "lab.ckpt"
    with rocr.init(preset="teaching") as rt:
        objs = _experiment_start(rt, n)
        assert rt.checkpoint(path, **objs) > 0
        want = _experiment_rest(rt, objs, n)
    rt2, got = rocr.restore(path)
    with rt2:
        assert isinstance(rt2, rocr.Runtime) and got["q"] in rt2.queues()
        result = _experiment_rest(rt2, got, n)
    x = np.arange(n, dtype=np.float32) / 8
    assert np.array_equal(want[0], x + x * x) and np.array_equal(want[1], want[0] ** 2)
    assert want[2] == 40
    for w, g in zip(want, result, strict=True):
        if isinstance(w, np.ndarray):
            assert np.array_equal(w, g)
        else:
            assert w == g


def test_python_api_checkpoint_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.ckpt"
    with pytest.raises(rocr.HsaError) as e:
        rocr.restore(missing)
    assert e.value.status == rocr.Status.ERROR_INVALID_FILE and str(missing) in e.value.message
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(rocr.HsaError) as e:
        rocr.restore(junk)
    assert "not an hsaemu checkpoint" in e.value.message and str(junk) in e.value.message
    rt = rocr.init(preset="teaching")
    with pytest.raises(rocr.HsaError) as e:
        rt.checkpoint(17)
    assert e.value.status == rocr.Status.ERROR_INVALID_ARGUMENT and "path 17" in e.value.message
    with pytest.raises(rocr.HsaError) as e:
        rt.checkpoint(tmp_path / "no-such-dir" / "x.ckpt")
    assert e.value.status == rocr.Status.ERROR_INVALID_FILE and "no-such-dir" in e.value.message
    rt.shutdown()
    with pytest.raises(rocr.HsaError) as e:
        rt.checkpoint(tmp_path / "late.ckpt")
    assert e.value.status == rocr.Status.ERROR_NOT_INITIALIZED
