"""Shared fixtures: a runtime on the small `teaching` GPU and helpers for GPU-visible buffers."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

import rocr
from rocr import toolchain

_REPO = str(Path(__file__).resolve().parents[1]) + os.sep


class RoundTripWork:
    """What `n` warm empty-kernel round trips (`q.dispatch(k, grid=64, workgroup=64).wait()`)
    executed in this repository's code: bytecodes by file (relative path) and calls by file
    and qualified name. Counted with sys.settrace, so the same on every machine and load."""

    def __init__(self, n: int, ops: dict[str, int], calls: dict[tuple[str, str], int]) -> None:
        self.n = n
        self.ops = ops
        self.calls = calls

    def per_trip(self, *prefixes: str) -> float:
        """Bytecodes per round trip in the files whose path starts with one of `prefixes`
        (a package "rocr/" or a module "hw_model/engine.py")."""
        return sum(v for f, v in self.ops.items() if f.startswith(prefixes)) / self.n

    def calls_in(self, *prefixes: str) -> dict[str, int]:
        """Calls over all `n` round trips, by qualified name, of the functions in those files."""
        out: dict[str, int] = {}
        for (f, name), v in self.calls.items():
            if f.startswith(prefixes):
                out[name] = out.get(name, 0) + v
        return out


@pytest.fixture
def round_trip_work():
    """`round_trip_work(n=10, warm=70, rt=None)`: a RoundTripWork of `n` round trips on a
    gfx900 runtime of its own (or `rt`), after `warm` untimed ones (pooled signals, kept
    plans, cached ring addresses)."""

    def count(n: int = 10, warm: int = 70, rt=None) -> RoundTripWork:
        own = rt is None
        if own:
            rt = rocr.init(preset="gfx900")
        try:
            k = rt.load_code_object("builtin:empty").kernel("empty")
            q = rt.gpus[0].create_queue(64)
            for _ in range(warm):
                q.dispatch(k, grid=64, workgroup=64).wait()
            ops: dict[str, int] = {}
            calls: dict[tuple[str, str], int] = {}

            def trace(frame, event, arg):
                code = frame.f_code
                f = code.co_filename
                if not f.startswith(_REPO):
                    return None
                f = f[len(_REPO) :].replace(os.sep, "/")
                if event == "call":
                    key = (f, code.co_qualname)
                    calls[key] = calls.get(key, 0) + 1
                frame.f_trace_opcodes = True
                if event == "opcode":
                    ops[f] = ops.get(f, 0) + 1
                return trace

            sys.settrace(trace)
            try:
                for _ in range(n):
                    q.dispatch(k, grid=64, workgroup=64).wait()
            finally:
                sys.settrace(None)
            return RoundTripWork(n, ops, calls)
        finally:
            if own:
                rt.shutdown()

    return count


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
