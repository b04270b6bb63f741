"""Lab 4 (your own kernel): the check passes the reference solution, fails the starter on each
task, and fails solutions that game it — the host computing the sums, a built-in kernel in
the packet, the runtime writing the packet, the hidden arguments left out — from what the
machine recorded. Needs the AMDGPU toolchain (skipped without it, and CI refuses the skip)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

from tests.conftest import _toolchain_missing

LAB = Path(__file__).resolve().parents[2] / "labs" / "04-your-own-kernel"

needs_toolchain = pytest.mark.skipif(
    _toolchain_missing() is not None, reason=_toolchain_missing() or ""
)


def _check():
    spec = importlib.util.spec_from_file_location("check_lab4", LAB / "check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _patched_solution(tmp_path: Path, *edits: tuple[str, str]) -> list[str]:
    """The check on a copy of the solution with each (old, new) of `edits` applied (reference
    answers beside it, so only the code is at fault)."""
    for name in ("starter.py", "kernel.cl", "solution.cl", "solution.answers.toml"):
        shutil.copy(LAB / name, tmp_path / name)
    src = (LAB / "solution.py").read_text()
    for old, new in edits:
        assert old in src, old
        src = src.replace(old, new)
    (tmp_path / "solution.py").write_text(src)
    return _check().check(str(tmp_path / "solution.py"))


LAUNCH_HEAD = "def launch(rt, queue, kernel, src, dst, n: int, signal) -> int:\n"


@needs_toolchain
def test_lab4_solution_passes_and_the_starter_fails_every_task():
    check = _check().check
    assert check(str(LAB / "solution.py")) == []
    problems = check(str(LAB / "starter.py"))
    parts = {p.split(":")[0] for p in problems}
    assert parts == {"build", "kernel", "registers", "launch", "predict_us", "answers"}, problems
    code = [
        p for p in problems if p.split(":")[0] in ("build", "registers", "launch", "predict_us")
    ]
    assert all("not done yet" in p for p in code), problems
    # the starter's TODO kernel compiles and runs, and its sums are wrong
    assert any(p.startswith("kernel: run by the check") for p in problems), problems


HOST_SUMS = (
    "    queue.ring_doorbell(i)\n    return i\n",
    "    queue.ring_doorbell(i)\n"
    "    signal.wait(rocr.Condition.LT, 1)\n"
    "    host = rt.cpu.pools(fine_grained=True, kernarg=False)[0]\n"
    "    staging, out = host.allocate(4 * n), host.allocate(4 * (n // TILE))\n"
    "    rt.memory_copy(staging, src, 4 * n)\n"
    "    x = staging.view(np.float32)[:n].reshape(-1, TILE)\n"
    "    out.view(np.float32)[: len(x)] = x.sum(axis=1)\n"
    "    rt.memory_copy(dst, out, 4 * len(x))  # the host's sums over the kernel's\n"
    "    return i\n",
)


@needs_toolchain
def test_lab4_host_computed_sums_over_the_todo_kernel_fail(tmp_path):
    """The starter's TODO kernel launched by hand, the host writing numpy's sums into VRAM
    afterwards: dst ends right, but the check's own run of the kernel writes wrong sums."""
    imports = ("from rocr import toolchain\n", "import numpy as np\n\nimport rocr\n"
               "from rocr import toolchain\n")  # fmt: skip
    todo = (
        'SOURCE = Path(__file__).with_name("solution.cl")',
        'SOURCE = Path(__file__).with_name("kernel.cl")',
    )
    problems = _patched_solution(tmp_path, imports, todo, HOST_SUMS)
    assert any(p.startswith("kernel: run by the check over 3 workgroups") for p in problems), (
        problems
    )
    assert not any(p.startswith("launch:") for p in problems), problems


@needs_toolchain
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # square's numpy body
def test_lab4_a_builtin_kernel_in_the_packet_fails(tmp_path):
    problems = _patched_solution(
        tmp_path,
        (
            "        kernel.kernel_object,\n",
            "        rt.load_code_object('builtin:square').kernel('square').kernel_object,\n",
        ),
    )
    assert any("is not the one the compiler wrote for your kernel" in p for p in problems), problems
    assert any(p.startswith("launch: the CP ran square") for p in problems), problems


@needs_toolchain
@pytest.mark.parametrize(
    "body",
    [
        "    return queue.dispatch(kernel, grid, WG, (src, dst, n), signal).index\n",
        "    return queue.submit(rt.dispatch_packet(kernel, grid, WG, (src, dst, n), signal))\n",
    ],
    ids=["queue.dispatch", "rt.dispatch_packet"],
)
def test_lab4_a_packet_the_runtime_built_is_not_a_hand_launch(tmp_path, body):
    problems = _patched_solution(
        tmp_path, (LAUNCH_HEAD, LAUNCH_HEAD + "    grid = -(-n // TILE) * WG\n" + body)
    )
    assert problems == [
        "launch: the runtime built the packet (queue.dispatch or rt.dispatch_packet); write "
        "the kernarg and the 64-byte packet yourself"
    ]


@needs_toolchain
def test_lab4_hidden_arguments_left_out_are_named(tmp_path):
    """pack_args without the geometry leaves hidden_block_count_x and hidden_group_size_x at
    0: the kernel's get_local_size(0) reads 0 and the tree never runs."""
    problems = _patched_solution(
        tmp_path,
        ("kernel.pack_args(src, dst, n, grid=grid, workgroup=WG)", "kernel.pack_args(src, dst, n)"),
    )
    assert any(
        p.startswith("launch: kernarg hidden_block_count_x at offset 24") for p in problems
    ), problems
    assert "launch: the sums in dst are wrong" in problems


def test_lab4_check_says_in_one_line_when_the_toolchain_is_missing(monkeypatch):
    check = _check()
    monkeypatch.setattr(check.toolchain, "missing", lambda: ["clang-15", "lld-15"])
    problems = check.check(str(LAB / "solution.py"))
    assert problems == [
        "toolchain: the AMDGPU toolchain is not installed (missing: clang-15, lld-15); "
        "apt-get install -y clang-15 lld-15"
    ]
