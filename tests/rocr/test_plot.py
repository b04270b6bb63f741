"""`hsaemu plot`: a trace drawn as a timeline and an occupancy map (matplotlib, the `plot`
extra); the numbers behind the picture are checked through `rocr.plot.plot_data`."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from rocr.cli import main
from rocr.plot import plot_data

try:
    import matplotlib
except ImportError:
    matplotlib = None

PLOT_MISSING = "matplotlib not installed"  # tests/conftest.py fails this skip in CI
needs_matplotlib = pytest.mark.skipif(
    matplotlib is None, reason=f"{PLOT_MISSING} (pip install -e '.[plot]')"
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def demo_trace(tmp_path_factory):
    path = tmp_path_factory.mktemp("plot") / "trace.json"
    assert main(["demo", "--preset", "teaching", "-n", "5000", "--trace", str(path)]) == 0
    return path


def _launches(trace: dict) -> list[dict]:
    return [
        e["args"]
        for e in trace["traceEvents"]
        if e["ph"] == "i" and e["name"].startswith("launch ")
    ]


@needs_matplotlib
def test_plot_writes_a_png_of_a_demo_trace(demo_trace, tmp_path, capsys):
    out = tmp_path / "timeline.png"
    assert main(["plot", str(demo_trace), "-o", str(out)]) == 0
    data = out.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 1000
    (launch,) = _launches(json.loads(demo_trace.read_text()))
    assert f"1 kernels, {launch['workgroups']} workgroups" in capsys.readouterr().out


def test_plot_data_of_a_demo_trace_has_a_bar_per_workgroup(demo_trace):
    trace = json.loads(demo_trace.read_text())
    data = plot_data(trace)
    (launch,) = _launches(trace)
    wgs = [b for b in data.bars if b.kind == "wg"]
    assert len(wgs) == launch["workgroups"]
    assert {b.row for b in wgs} <= {"CU0", "CU1"} and all(b.dur > 0 for b in wgs)
    kernels = [b for b in data.bars if b.kind == "kernel"]
    assert [(b.row, b.label) for b in kernels] == [("queue 0", "square")]
    # Every workgroup lies inside its kernel's span on the queue row.
    k = kernels[0]
    assert all(k.start <= b.start and b.start + b.dur <= k.start + k.dur + 1e-6 for b in wgs)


@pytest.mark.trace
def test_plot_data_counts_kernels_per_queue_copies_and_resident_waves(rt, buffers):
    n = 2048
    src, dst = buffers(np.ones(n, np.float32)), buffers(n)
    k = rt.load_code_object("builtin:square").kernel("square")
    q0, q1 = rt.gpus[0].create_queue(256), rt.gpus[0].create_queue(256)
    handles = [q.dispatch(k, grid=n, workgroup=256, args=(dst, src, n)) for q in (q0, q0, q1)]
    for h in handles:
        h.wait()
    rt.memory_async_copy(dst, rt.cpu, src, rt.cpu, 4 * n).wait()
    trace = json.loads(rt.system.tracer.dumps())
    data = plot_data(trace)
    per_queue = {}
    for b in data.bars:
        if b.kind == "kernel":
            per_queue[b.row] = per_queue.get(b.row, 0) + 1
    assert per_queue == {"queue 0": 2, "queue 1": 1}
    for d in {b.dispatch for b in data.bars if b.kind == "kernel"}:
        assert sum(b.kind == "wg" and b.dispatch == d for b in data.bars) == n // 256
    assert any(b.kind == "copy" and b.row.startswith("SDMA") for b in data.bars)
    assert data.rows_of("kernel") == ["queue 0", "queue 1"]
    # A workgroup of 256 work-items is 4 waves of 64: resident waves come in fours, never
    # above what a CU holds, and drop back to none.
    waves_per_cu = rt.gpus[0].max_waves_per_cu
    for cu, levels in data.waves.items():
        assert all(w % 4 == 0 and 0 <= w <= waves_per_cu for w in levels), cu
        assert max(levels) > 0 and levels[-1] == 0


def test_plot_refuses_a_missing_or_foreign_trace_in_one_line(tmp_path, capsys):
    assert main(["plot", str(tmp_path / "none.json")]) == 2
    assert "none.json: no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["plot", str(bad)]) == 2
    assert "bad.json: not JSON" in capsys.readouterr().err
    bad.write_text('{"events": []}')
    assert main(["plot", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "no traceEvents" in err and len(err.strip().splitlines()) == 1


def test_plot_without_matplotlib_says_how_to_install_it(demo_trace, tmp_path, monkeypatch, capsys):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib: ImportError
    assert main(["plot", str(demo_trace), "-o", str(tmp_path / "t.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "matplotlib" in err and "pip install 'hsaemu[plot]'" in err
    assert not (tmp_path / "t.png").exists()
