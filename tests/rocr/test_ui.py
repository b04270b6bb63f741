"""The live view (/ui): its routes over HTTP, and the page in a real headless Chromium.

The browser tests need playwright (the `ui` extra) and a Chromium (Debian's `chromium`, or
`python -m playwright install chromium`); without them they skip, and CI (HSAEMU_REQUIRE_UI=1)
refuses the skip. HSAEMU_UI_SCREENSHOT=path.png also saves the page as the browser drew it.
"""

from __future__ import annotations

import os
import shutil

import pytest

import rocr
from rocr.service.testing import ServerThread, in_process_client

UI_MISSING = "playwright or chromium not installed"  # tests/conftest.py fails this skip in CI
N = 4096  # work-items of the dispatch: 16 workgroups of 256, more than 2 CUs hold at once


def _square(rt, n: int = N):
    """A queue with one square dispatch written and its doorbell rung, not waited for."""
    gpu = rt.gpus[0]
    fine = rt.cpu.pools(fine_grained=True, kernarg=False)[0]
    src, dst = fine.allocate(4 * n), fine.allocate(4 * n)
    rt.allow_access([gpu], src)
    rt.allow_access([gpu], dst)
    k = rt.load_code_object("builtin:square").kernel("square")
    q = gpu.create_queue(64)
    h = q.dispatch(k, grid=n, workgroup=256, args=(dst, src, n))
    return q, h


# -- the routes, without a browser -----------------------------------------------------------


@pytest.fixture(scope="module")
def http():
    with in_process_client(default_preset="teaching") as c:
        yield c


def test_page_and_assets_are_served_without_credentials(http):
    page = http.get("/ui")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="/ui/ui.js">' in page.text and "http" not in page.text.split("<body>")[1]
    assert http.get("/ui/ui.js").headers["content-type"].startswith("text/javascript")
    missing = http.get("/ui/secrets.txt")
    assert missing.status_code == 404 and "secrets.txt" in missing.json()["message"]


def test_view_shows_the_ring_hqd_and_waves_step_by_step(http):
    rt = rocr.connect("http://testserver", preset="teaching", client=http)
    try:
        h = {"Authorization": f"Bearer {rt.conn.token}"}
        base = f"/v1/systems/{rt.id}"
        assert http.get(base + "/view").status_code == 401  # the view needs the token too
        q, d = _square(rt)
        v = http.get(base + "/view", headers=h).json()
        (ring,) = v["queues"]
        assert (ring["read_index"], ring["write_index"], ring["doorbell_value"]) == (0, 1, 0)
        assert len(ring["slots"]) == 64 and ring["slots"][0]["type"] == "KERNEL_DISPATCH"
        assert {s["type"] for s in ring["slots"][1:]} == {"INVALID"}
        hqd = next(x for x in v["gpus"][0]["hqds"] if x["queue_id"] == ring["queue_id"])
        assert hqd["own"] and ring["hqd"] == hqd["hqd"]
        # Step until the dispatcher has put waves on the CUs: what /gpus/{node}/cus says too.
        before = v["clock"]["device_ps"]
        for _ in range(20):
            r = http.post(base + "/step", json={"ticks": 1}, headers=h).json()
            assert r["fired"] >= 1
            v = http.get(base + "/view", headers=h).json()
            if any(sum(cu["waves"]) for cu in v["gpus"][0]["cus"]):
                break
        node = v["gpus"][0]["node"]
        cus = http.get(f"{base}/gpus/{node}/cus", headers=h).json()
        assert [c["waves"] for c in v["gpus"][0]["cus"]] == [c["waves"] for c in cus]
        assert sum(sum(c["waves"]) for c in cus) > 0
        assert v["clock"]["device_ps"] > before
        # Play to the end: the packet retires, the completion signal reaches 0, and stepping
        # on an idle machine fires nothing and says so.
        r = http.post(base + "/step", json={"ticks": 10_000}, headers=h).json()
        assert r["stalled"]
        v = http.get(base + "/view", headers=h).json()
        assert v["queues"][0]["read_index"] == 1
        assert {s["handle"]: s["value"] for s in v["signals"]}[d.signal.handle] == 0
        idle = http.post(base + "/step", headers=h).json()
        assert idle["fired"] == 0 and idle["stalled"] and idle["clock"] == r["clock"]
    finally:
        rt.shutdown()


def test_step_refuses_bad_ticks_naming_them(http):
    rt = rocr.connect("http://testserver", preset="teaching", client=http)
    try:
        h = {"Authorization": f"Bearer {rt.conn.token}"}
        for bad in (0, 10_001, "1"):
            r = http.post(f"/v1/systems/{rt.id}/step", json={"ticks": bad}, headers=h)
            assert r.status_code == 422, bad
            assert r.json()["status"] == "HSA_STATUS_ERROR_INVALID_ARGUMENT"
            assert "ticks" in r.json()["message"]
    finally:
        rt.shutdown()


# -- hsaemu view ------------------------------------------------------------------------------

VIEW_SCRIPT = """\
import rocr

with rocr.init(preset="teaching") as rt:
    gpu = rt.gpus[0]
    fine = rt.cpu.pools(fine_grained=True, kernarg=False)[0]
    src, dst = fine.allocate(4 * 4096), fine.allocate(4 * 4096)
    rt.allow_access([gpu], src)
    rt.allow_access([gpu], dst)
    k = rt.load_code_object("builtin:square").kernel("square")
    q = gpu.create_queue(64)
    q.dispatch(k, grid=4096, workgroup=256, args=(dst, src, 4096)).wait()
    h = q.dispatch(k, grid=4096, workgroup=256, args=(dst, src, 4096))  # left in flight
"""


def test_view_serves_the_scripts_machine_until_ctrl_c(tmp_path):
    import select
    import signal
    import subprocess
    import sys
    import time

    import httpx

    script = tmp_path / "lab.py"
    script.write_text(VIEW_SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, "-m", "rocr.cli", "view", str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        line = ""
        while not line.startswith("live view: ") and time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 1.0)
            if ready:
                line = proc.stdout.readline()
            if proc.poll() is not None:
                break
        assert line.startswith("live view: "), proc.stderr.read() if proc.poll() else line
        url = line.split(" ", 2)[2].strip()
        base, fragment = url.split("/ui#")
        params = dict(p.split("=", 1) for p in fragment.split("&"))
        assert base.startswith("http://127.0.0.1:")
        h = {"Authorization": f"Bearer {params['token']}"}
        view = f"{base}/v1/systems/{params['system']}/view"
        with httpx.Client(timeout=30) as http:
            # The script's `with` block ended, yet its queue is there: the second packet in
            # slot 1, not yet retired; the page itself is served too.
            v = http.get(view, headers=h).json()
            (q,) = v["queues"]
            assert (q["read_index"], q["write_index"]) == (1, 2)
            assert q["slots"][1]["type"] == "KERNEL_DISPATCH" and q["hqd"] is not None
            r = http.post(view.replace("/view", "/step"), json={"ticks": 10_000}, headers=h)
            assert (
                r.json()["stalled"]
                and http.get(view, headers=h).json()["queues"][0]["read_index"] == 2
            )
            assert http.get(f"{base}/ui").status_code == 200
            assert http.get(view).status_code == 401
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_view_without_a_script_or_runtime_says_so(tmp_path, capsys):
    from rocr.cli import main

    assert main(["view"]) == 2
    assert "no script to run" in capsys.readouterr().err
    empty = tmp_path / "none.py"
    empty.write_text("print('no machine')\n")
    assert main(["view", str(empty)]) == 1
    assert "created no rocr runtime" in capsys.readouterr().err


# -- the page in Chromium ----------------------------------------------------------------------


def _chromium_path() -> str | None:
    for p in (os.environ.get("HSAEMU_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if p and os.path.exists(p):
            return p
    return None  # playwright's own download, if `playwright install chromium` ran


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        pytest.skip(f"{UI_MISSING}: no playwright (pip install -e '.[ui]')")
    with sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=_chromium_path())
        except Error as e:
            pytest.skip(f"{UI_MISSING}: {str(e).splitlines()[0]} (apt-get install chromium)")
        yield b
        b.close()


@pytest.fixture(scope="module")
def server():
    with ServerThread(default_preset="teaching") as url:
        yield url


def test_the_page_draws_the_machine_and_steps_it(browser, server):
    rt = rocr.connect(server, preset="teaching")
    try:
        q, d = _square(rt)
        api = rt.conn.http
        h = {"Authorization": f"Bearer {rt.conn.token}"}
        base = f"{server}/v1/systems/{rt.id}"
        info = api.get(f"{base}/queues/{q.id}", headers=h).json()
        runlist = api.get(f"{base}/runlist", headers=h).json()
        (slot,) = [s for s in runlist["gpus"][0]["slots"] if s["queue_id"] == info["queue_id"]]

        page = browser.new_page(viewport={"width": 1280, "height": 900})
        sent = []
        page.on("request", lambda r: sent.append((r.url, r.headers.get("authorization"))))
        page.goto(f"{server}/ui#system={rt.id}&token={rt.conn.token}")
        queue = page.locator(f'.queue[data-queue="{q.id}"] .indices')
        queue.wait_for()
        assert queue.inner_text().startswith(
            f"read {info['read_index']} · write {info['write_index']} · "
            f"doorbell {info['doorbell_value']} · HQD {slot['hqd']} ({slot['state']})"
        )
        first = page.locator(f'.queue[data-queue="{q.id}"] .slot').first
        assert "KERNEL_DISPATCH" in first.get_attribute("class")
        hqd = page.locator(f'.gpu .hqd[data-hqd="{slot["hqd"]}"]').inner_text()
        assert (
            hqd
            == f"HQD {slot['hqd']}: queue {q.id} (KFD queue {info['queue_id']}), " + slot["state"]
        )

        # Step: the clock moves on; go on until the CUs hold waves, as the API reports them.
        clock = page.locator("#clock")

        def device_ns() -> float:
            return float(clock.get_attribute("data-device-ns"))

        t0 = device_ns()
        waves = 0
        for _ in range(20):
            before = page.evaluate("document.body.dataset.frames")
            page.click("#step")
            page.wait_for_function("b => document.body.dataset.frames !== b", arg=before)
            cus = api.get(f"{base}/gpus/{rt.gpus[0].node}/cus", headers=h).json()
            waves = sum(sum(c["waves"]) for c in cus)
            if waves:
                break
        assert device_ns() > t0
        assert waves > 0
        for c in cus:
            shown = page.locator(f'.cu[data-cu="{c["index"]}"] .cu-title').inner_text()
            assert shown == f"CU {c['index']}: {c['resident_wgs']} WG, {sum(c['waves'])} waves"
        if os.environ.get("HSAEMU_UI_SCREENSHOT"):
            page.screenshot(path=os.environ["HSAEMU_UI_SCREENSHOT"], full_page=True)

        # Play (1000 ticks a step) until the machine is idle: the packet retired, the
        # completion signal at 0; the play button is back.
        page.select_option("#ticks", "1000")
        page.click("#play")
        page.wait_for_function("document.getElementById('clock').textContent.endsWith('idle')")
        page.wait_for_function("!document.getElementById('play').disabled")
        assert queue.inner_text().startswith("read 1 · write 1 · ")
        sig = page.locator(f'tr[data-signal="{d.signal.handle}"] td').nth(1)
        assert sig.inner_text() == "0"

        # The token travelled only in the Authorization header, never in a URL.
        calls = [(u, a) for u, a in sent if "/v1/" in u]
        assert calls and all(a == f"Bearer {rt.conn.token}" for _, a in calls)
        assert not any(rt.conn.token in u for u, _ in sent)
        page.close()
    finally:
        rt.shutdown()
