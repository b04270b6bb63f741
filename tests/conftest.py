"""Shared fixtures: a runtime on the small `teaching` GPU and helpers for GPU-visible buffers."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import rocr
from rocr import toolchain


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "trace: the test reads the trace, so the `rt` fixture's machine records one"
    )


@pytest.fixture
def rt(request):
    # Untraced, as rocr.init() is by default, unless the test reads the trace and says so.
    traced = request.node.get_closest_marker("trace") is not None
    runtime = rocr.init(preset="teaching", trace=traced)
    yield runtime
    runtime.shutdown()


def gpu_buffer(rt, data: np.ndarray | int, dtype=np.float32):
    """A fine-grained system buffer the GPU may access, filled with `data` (or zeroed)."""
    pool = rt.cpu.pools(fine_grained=True, kernarg=False)[0]
    n = data if isinstance(data, int) else data.size
    buf = pool.allocate(max(n * np.dtype(dtype).itemsize, 4))
    rt.allow_access(rt.gpus, buf)
    if not isinstance(data, int):
        buf.view(dtype, n)[:] = data.ravel()
    return buf


def gated_dispatch(rt, gate=None):
    """An empty kernel behind a barrier-AND on `gate` (a new signal at 1 by default): it runs
    only once something stores 0 to the gate. Returns (queue, gate, dispatch handle)."""
    from hw_model import aql

    q = rt.gpus[0].create_queue(64)
    gate = rt.create_signal(1) if gate is None else gate
    q.submit(
        rocr.BarrierAndPacket(
            header=aql.make_header(aql.PacketType.BARRIER_AND),
            dep_signal=[gate.handle, 0, 0, 0, 0],
        )
    )
    k = rt.load_code_object("builtin:empty").kernel("empty")
    return q, gate, q.dispatch(k, grid=64, workgroup=64)


@pytest.fixture
def buffers(rt):
    return lambda data, dtype=np.float32: gpu_buffer(rt, data, dtype)


# The AMDGPU toolchain (Debian clang-15, lld-15, rocm-device-libs, llvm-15): tests that compile
# kernels skip with a reason starting with this when it is absent, and CI refuses that skip.
TOOLCHAIN_MISSING = "AMDGPU toolchain not installed"


def _toolchain_missing() -> str | None:
    absent = toolchain.missing()
    return f"{TOOLCHAIN_MISSING}: {', '.join(absent)}" if absent else None


@pytest.fixture
def compile_cl(tmp_path):
    """compile_cl(source, mcpu="gfx900", cov=5, opt="-O2") -> path of the linked .hsaco,
    built as the docs say (clang-15 -x cl ... && ld.lld-15 -shared; rocr.toolchain)."""
    why = _toolchain_missing()
    if why:
        pytest.skip(why)
    count = iter(range(1_000_000))

    def build(source: str, mcpu: str = "gfx900", cov: int = 5, opt: str = "-O2") -> Path:
        n = next(count)
        cl, out = tmp_path / f"k{n}.cl", tmp_path / f"k{n}.hsaco"
        cl.write_text(source)
        toolchain.compile_cl(cl, out, mcpu=mcpu, cov=cov, opt=opt)
        return out

    return build


# The API fuzz pass (tests/rocr/test_service_schemathesis.py) skips with a reason starting with
# this when schemathesis (the `fuzz` extra) is absent; CI (HSAEMU_REQUIRE_FUZZ=1) refuses that.
FUZZ_MISSING = "schemathesis not installed"

# `hsaemu plot`'s tests (tests/rocr/test_plot.py) skip with a reason starting with this when
# matplotlib (the `plot` extra) is absent; CI (HSAEMU_REQUIRE_PLOT=1) refuses that.
PLOT_MISSING = "matplotlib not installed"

# The live view's browser test (tests/rocr/test_ui.py) skips with a reason starting with this
# when playwright (the `ui` extra) or a Chromium is absent; CI (HSAEMU_REQUIRE_UI=1) refuses that.
UI_MISSING = "playwright or chromium not installed"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI (HSAEMU_REQUIRE_HEADERS=1) a layout check skipped for a missing compiler or header
    is a failure: those checks are the proof that our bytes match the C structs. Likewise
    (HSAEMU_REQUIRE_TOOLCHAIN=1) a test skipped because the AMDGPU toolchain is missing: those
    are the only tests of real compiled code objects. And (HSAEMU_REQUIRE_FUZZ=1) the API fuzz
    pass skipped because schemathesis is missing, and (HSAEMU_REQUIRE_PLOT=1) the plot tests
    skipped because matplotlib is missing, and (HSAEMU_REQUIRE_UI=1) the live view's browser
    test skipped because playwright or Chromium is missing."""
    outcome = yield
    report = outcome.get_result()
    if not report.skipped:
        return
    reason = str(report.longrepr)
    if os.environ.get("HSAEMU_REQUIRE_UI") == "1" and UI_MISSING in reason:
        report.outcome = "failed"
        report.longrepr = f"required live view test was skipped: {reason}"
    elif os.environ.get("HSAEMU_REQUIRE_PLOT") == "1" and PLOT_MISSING in reason:
        report.outcome = "failed"
        report.longrepr = f"required plot test was skipped: {reason}"
    elif os.environ.get("HSAEMU_REQUIRE_FUZZ") == "1" and FUZZ_MISSING in reason:
        report.outcome = "failed"
        report.longrepr = f"required API fuzz pass was skipped: {reason}"
    elif os.environ.get("HSAEMU_REQUIRE_TOOLCHAIN") == "1" and TOOLCHAIN_MISSING in reason:
        report.outcome = "failed"
        report.longrepr = f"required code object test was skipped: {reason}"
    elif os.environ.get("HSAEMU_REQUIRE_HEADERS") == "1" and any(
        w in reason for w in ("gcc", "header", "installed", "not found")
    ):
        report.outcome = "failed"
        report.longrepr = f"required layout check was skipped: {reason}"
