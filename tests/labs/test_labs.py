"""Every lab's check passes on its reference solution and fails on the untouched starter."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

LABS = Path(__file__).resolve().parents[2] / "labs"


def _check_module(lab: Path):
    spec = importlib.util.spec_from_file_location(f"check_{lab.name}", lab / "check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize(
    "lab", sorted(p for p in LABS.iterdir() if (p / "check.py").exists()), ids=lambda p: p.name
)
def test_lab_check(lab):
    if lab.name == "04-your-own-kernel":
        from rocr import toolchain

        absent = toolchain.missing()
        if absent:  # lab 4 compiles the student's kernel (CI installs the toolchain)
            pytest.skip(f"AMDGPU toolchain not installed: {', '.join(absent)}")
    check = _check_module(lab).check
    assert check(str(lab / "solution.py")) == []
    problems = check(str(lab / "starter.py"))
    assert problems, "the starter must not pass before the student's work"
    assert all(":" in p for p in problems), "each problem names where it is"


GAMED_LAB3 = """
import importlib.util
from pathlib import Path

import numpy as np

import rocr

_spec = importlib.util.spec_from_file_location("starter", Path(STARTER))
starter = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(starter)
N, X = starter.N, starter.X


def square_in_vram(rt, src, dst):
    # copies in and out by SDMA, but the host computes the result
    gpu = rt.gpus[0]
    dev = gpu.pools()[0].allocate(4 * N)
    rt.memory_async_copy(dev, gpu, src, rt.cpu, 4 * N).wait()
    rt.memory_async_copy(dst, rt.cpu, dev, gpu, 4 * N).wait()
    dst.view(np.float32)[:] = X * X


def copy_bandwidth(rt, nbytes):
    return rt.system.spec.gpu.link_bandwidth_gbps  # the answer, without measuring


def square_coarse(rt):
    # the agent-scope kernel stays, and the host patches over the stale values
    src, dst = starter.host_buffers(rt, fine_grained=False)
    k = rt.load_code_object("builtin:square").kernel("square")
    q = rt.gpus[0].create_queue(64)
    q.dispatch(k, grid=N, workgroup=256, args=(dst, src, N), release=rocr.FenceScope.AGENT).wait()
    dst.view(np.float32)[:] = X * X
    return dst
"""


def test_lab3_check_reads_the_machine_not_the_values(tmp_path):
    """A file whose host writes the right values itself fails every part: the check finds no
    kernel over the copied VRAM, no measured copy, and no L2 writeback after the kernel."""
    lab = LABS / "03-copies-and-fences"
    gamed = tmp_path / "gamed.py"
    gamed.write_text(f"STARTER = {str(lab / 'starter.py')!r}\n" + GAMED_LAB3)
    # right answers beside it: only the code is at fault
    (tmp_path / "answers.toml").write_text((lab / "solution.answers.toml").read_text())
    problems = _check_module(lab).check(str(gamed))
    parts = {p.split(":")[0] for p in problems}
    assert parts == {"square_in_vram", "copy_bandwidth", "square_coarse"}, problems
    assert any("no run of square read the copied VRAM buffer" in p for p in problems)
    assert any("AGENT scope" in p and "L2" in p for p in problems)
