"""`hsaemu sweep`: a grid of cells, each a fresh machine, in a process pool or on Ray."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

import rocr
from rocr import sweep
from rocr.cli import main

# The workload: a vector_add over `n` floats on the cell's machine, then an fma_loop; it
# reports what the machine looks like (CUs), the device time of the fma_loop, a draw from the
# seeded `random`, and leaves one file per call in `calls` so the tests can count the runs.
WORKLOAD = """
import os
import random
import time
from pathlib import Path

import numpy as np


def cell(rt, n, calls, fail=-1):
    Path(calls, f"{n}-{time.time_ns()}-{os.getpid()}").touch()
    if n == fail:
        raise RuntimeError(f"cell with n={n} fails on purpose")
    gpu = rt.gpus[0]
    k = rt.load_code_object("builtin:vector_add").kernel("vector_add")
    pool = rt.cpu.pools(fine_grained=True, kernarg=False)[0]
    a, b, c = (pool.allocate(4 * n) for _ in range(3))
    for buf in (a, b, c):
        rt.allow_access([gpu], buf)
    a.view(np.float32)[:] = 1
    b.view(np.float32)[:] = 2
    q = gpu.create_queue(64)
    q.dispatch(k, grid=n, workgroup=64, args=(a, b, c, n)).wait()
    # compute-bound, so its time shows the number of CUs
    fma = rt.load_code_object("builtin:fma_loop").kernel("fma_loop")
    h = q.dispatch(fma, grid=n, workgroup=64, args=(a, n, 100))
    h.wait()
    start, end = h.dispatch_time()
    return {
        "cus": gpu.compute_unit_count,
        "kernel_ns": end - start,
        "sum": float(c.view(np.float32).sum()),
        "draw": random.random(),
    }
"""

SPEC = """
name = "tiny"
workload = "tiny_workload:cell"
preset = "teaching"
seeds = [7]

[system]
trace = false

[params]
calls = "{calls}"
{extra}

[axes]
"gpu.num_cus" = [1, 2]
n = [64, 4096]
"""

AXES = ["gpu.num_cus", "n"]


def make_spec(tmp_path: Path, name: str = "tiny.toml", extra: str = "") -> tuple[Path, Path]:
    calls = tmp_path / f"calls-{Path(name).stem}"
    calls.mkdir()
    (tmp_path / "tiny_workload.py").write_text(WORKLOAD)
    spec = tmp_path / name
    spec.write_text(SPEC.format(calls=calls.as_posix(), extra=extra))
    return spec, calls


def read(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def figures(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """The 2 x 2 sweep run once through the command, two workers."""
    tmp = tmp_path_factory.mktemp("sweep")
    spec, calls = make_spec(tmp)
    out = tmp / "tiny.csv"
    rc = main(["sweep", str(spec), "--local", "--workers", "2", "--out", str(out)])
    return spec, calls, out, rc


def test_local_sweep_writes_a_row_per_cell_with_axes_figures_and_provenance(local_run):
    spec, calls, out, rc = local_run
    assert rc == 0
    rows = read(out)
    assert list(rows[0])[:5] == ["cell", "preset", "gpu.num_cus", "n", "seed"]
    for col in ("cus", "kernel_ns", "sum", "draw", *sweep.META_COLUMNS):
        assert col in rows[0]
    # One row per cell in grid order; every figure comes from the cell's own machine.
    assert [(r["gpu.num_cus"], r["n"]) for r in rows] == [
        ("1", "64"),
        ("1", "4096"),
        ("2", "64"),
        ("2", "4096"),
    ]
    for r in rows:
        assert r["status"] == "ok" and r["error"] == ""
        assert r["cus"] == r["gpu.num_cus"]
        assert float(r["sum"]) == 3 * int(r["n"])
        assert r["seed"] == "7" and r["preset"] == "teaching"
        assert r["hsaemu_version"] and float(r["wall_s"]) > 0
    # 64 workgroups of FMAs take longer on one CU than on two.
    ns = {(r["gpu.num_cus"], r["n"]): float(r["kernel_ns"]) for r in rows}
    assert ns[("1", "4096")] > ns[("2", "4096")]
    assert len({r["spec_hash"] for r in rows}) == 1
    assert len({r["cell_id"] for r in rows}) == 4
    assert len(list(calls.iterdir())) == 4


def test_same_seeds_give_identical_figures(local_run, tmp_path):
    spec, _, out, _ = local_run
    again = tmp_path / "again.csv"
    plan = sweep.load_spec(spec)
    sweep.run_sweep(plan, "local", workers=1, out=again, progress=False)
    assert figures(read(again)) == figures(read(out))
    # ... and the seed reaches the workload: every cell drew the same first number.
    assert len({r["draw"] for r in read(out)}) == 1


def test_rerun_skips_completed_cells(local_run, tmp_path):
    spec, calls, out, _ = local_run
    # An interrupted sweep: only cells 0 and 3 made it into the table.
    lines = out.read_text().splitlines(keepends=True)
    t = tmp_path / "t.csv"
    t.write_text(lines[0] + lines[1] + lines[4])
    before = {r["cell"]: r for r in read(t)}
    assert sorted(before) == ["0", "3"]
    ran = len(list(calls.iterdir()))
    plan = sweep.load_spec(spec)
    res = sweep.run_sweep(plan, "local", workers=1, out=t, progress=False)
    assert (res.ran, res.skipped, res.failed) == (2, 2, 0)
    assert len(list(calls.iterdir())) == ran + 2  # the workload ran for the missing cells only
    rows = read(t)
    assert [r["cell"] for r in rows] == ["0", "1", "2", "3"]
    assert {r["cell"]: r for r in rows if r["cell"] in ("0", "3")} == before
    assert figures(rows) == figures(read(out))
    # Everything done: a rerun runs nothing.
    assert sweep.run_sweep(plan, "local", out=t, progress=False).ran == 0
    assert len(list(calls.iterdir())) == ran + 2


def test_a_failing_cell_is_recorded_and_the_others_complete(tmp_path, capsys):
    spec, calls = make_spec(tmp_path, extra="fail = 4096")
    out = tmp_path / "f.csv"
    assert main(["sweep", str(spec), "--local", "--workers", "1", "--out", str(out)]) == 1
    rows = read(out)
    assert len(rows) == 4
    bad = [r for r in rows if r["status"] == "error"]
    assert [r["n"] for r in bad] == ["4096", "4096"]
    assert all(r["error"] == "RuntimeError: cell with n=4096 fails on purpose" for r in bad)
    assert all(r["cus"] == "" for r in bad)
    assert all(r["status"] == "ok" and float(r["sum"]) == 192 for r in rows if r["n"] == "64")
    assert "failed: RuntimeError: cell with n=4096 fails on purpose" in capsys.readouterr().out
    # A rerun retries the failed cells only (they fail again) and keeps one row per cell.
    res = sweep.run_sweep(sweep.load_spec(spec), "local", workers=1, out=out, progress=False)
    assert (res.ran, res.skipped, res.failed) == (2, 2, 2)
    assert len(list(calls.iterdir())) == 6
    assert len(read(out)) == 4


def test_bad_spec_is_one_error_line_naming_the_key(tmp_path, capsys):
    spec, _ = make_spec(tmp_path)
    spec.write_text(spec.read_text().replace('"gpu.num_cus"', '"gpu.num_cu"'))
    assert main(["sweep", str(spec), "--local"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hsaemu sweep: error: 'gpu.num_cu' is not a GpuSpec field")
    assert "num_cus" in err
    spec.write_text(spec.read_text().replace('"gpu.num_cu" = [1, 2]', '"gpu.num_cus" = [0]'))
    assert main(["sweep", str(spec), "--local"]) == 2
    assert "num_cus: Input should be greater than 0" in capsys.readouterr().err
    with pytest.raises(rocr.HsaError) as e:
        sweep.make_plan({"workload": "no_colon", "axes": {}})
    assert e.value.status == rocr.Status.ERROR_INVALID_ARGUMENT
    assert "workload = 'no_colon': must be 'module:function'" in str(e.value)


def test_without_ray_the_command_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    spec, _ = make_spec(tmp_path)
    monkeypatch.setattr(sweep, "ray_available", lambda: False)
    assert main(["sweep", str(spec)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "hsaemu sweep: error: Ray is not installed: pip install -e '.[sweep]' "
        "(or pip install ray); or run with --local"
    ]


def test_ray_gives_the_same_table_as_the_process_pool(local_run, tmp_path):
    # CI installs the `sweep` extra and sets HSAEMU_REQUIRE_RAY=1: there the test must run.
    if os.environ.get("HSAEMU_REQUIRE_RAY", "") in ("", "0"):
        ray = pytest.importorskip("ray", reason="Ray is the `sweep` extra")
    else:
        import ray
    spec, _, out, _ = local_run
    ray_out = tmp_path / "ray.csv"
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        res = sweep.run_sweep(sweep.load_spec(spec), "ray", workers=2, out=ray_out, progress=False)
    finally:
        ray.shutdown()
    assert (res.ran, res.failed) == (4, 0)
    assert figures(read(ray_out)) == figures(read(out))
