"""What `import rocr` and `hsaemu --help` load, and the round trip's shortcuts keeping their
behaviour (refusals, faults, results): checked by what is imported and what a caller sees,
never by wall-clock time."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import rocr
from rocr.validate import dispatch_geometry, fence_scope

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("numpy", "pydantic", "hw_model.config", "hw_model.aql", "roct.thunk", "rocr.runtime")


def _loaded_after(code: str) -> set[str]:
    probe = f"import sys\n{code}\nprint(' '.join(sorted(sys.modules)))\n"
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return set(out.stdout.split())


def test_import_rocr_loads_the_runtime_on_first_use():
    loaded = _loaded_after("import rocr")
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))
    loaded = _loaded_after("import rocr\nrocr.Status")
    assert "rocr.status" in loaded and "rocr.runtime" not in loaded
    loaded = _loaded_after("import rocr\nrocr.init")
    assert {"rocr.runtime", "numpy", "hw_model.aql"} <= loaded


def test_names_of_rocr_still_resolve_and_unknown_ones_are_attribute_errors():
    assert rocr.init is rocr.runtime.init
    assert rocr.FenceScope.SYSTEM == 2
    assert set(rocr.__all__) <= set(dir(rocr))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        rocr.nope  # noqa: B018
    # submodules reached as attributes, as when `import rocr` loaded them all
    loaded = _loaded_after("import rocr\nassert rocr.queue.QueuePriority.HIGH == 2")
    assert "rocr.queue" in loaded


def test_hsaemu_help_loads_neither_numpy_nor_the_models():
    code = "from rocr.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass"
    loaded = _loaded_after(code)
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))
    out = subprocess.run(
        [sys.executable, "-m", "rocr.cli", "--help"], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0 and "demo" in out.stdout and "gfx900" in out.stdout
    out = subprocess.run(
        [sys.executable, "-m", "rocr.cli", "--version"], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stdout.startswith("hsaemu ")


def test_a_subcommand_still_checks_its_preset_choices(capsys):
    from rocr.cli import main

    assert main(["info", "--preset", "gfx1234"]) == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'gfx1234'" in err and "gfx900" in err


class _Agent:
    name = "gfx900"


def test_a_cached_geometry_still_refuses_look_alikes():
    """(64, 64) checked once is remembered; True, 64.0 or a bool inside a tuple hash like the
    ints they resemble but are still refused, naming the argument."""
    agent = _Agent()
    assert dispatch_geometry(64, 64, agent) == ((64, 1, 1), (64, 1, 1), 1)
    assert dispatch_geometry((64, 2), (64, 1), agent) == ((64, 2, 1), (64, 1, 1), 2)
    assert dispatch_geometry(64, 64, agent) == ((64, 1, 1), (64, 1, 1), 1)
    for grid, workgroup, what in (
        (64.0, 64, "grid"),
        (True, 1, "grid"),
        ((64, True), (64, 1), "grid\\[1\\]"),
    ):
        with pytest.raises(rocr.HsaError, match=f"{what} must be an integer"):
            dispatch_geometry(grid, workgroup, agent)


def test_fence_scopes_take_the_enum_and_small_ints_only():
    assert fence_scope(rocr.FenceScope.AGENT, "acquire") == 1
    assert fence_scope(2, "release") == 2
    assert fence_scope(np.int64(0), "release") == 0
    for bad, why in ((1.0, "must be an integer"), (True, "a bool"), (3, "not an hsa_fence")):
        with pytest.raises(rocr.HsaError, match=why):
            fence_scope(bad, "acquire")


def test_an_empty_kernel_runs_on_one_cu_untraced_and_traced():
    """Fewer workgroups than CUs are placed one by one (no closed-form pass over every CU):
    same completion and kernel record whether the machine is traced or not."""
    records = []
    for trace in (False, True):
        with rocr.init(preset="gfx900", trace=trace) as rt:
            k = rt.load_code_object("builtin:empty").kernel("empty")
            q = rt.gpus[0].create_queue(64)
            h = q.dispatch(k, grid=64, workgroup=64).wait()
            assert h.signal.load() == 0
            r = rt.system.gpus[0].kernel_records[-1]
            records.append((r["start_ps"], r["end_ps"], h.dispatch_time()))
    assert records[0] == records[1]


def test_a_load_through_a_mapping_of_freed_memory_still_faults():
    from hw_model.memory import MemoryFault

    with rocr.init(preset="teaching") as rt:
        pool = rt.cpu.pools(fine_grained=True, kernarg=False)[0]
        buf = pool.allocate(4096)
        mapping = rt.thunk.allocations[buf.address].mapping
        mapping.store_u64(8, 0x1234)
        assert mapping.load_u64(8) == 0x1234 and mapping.load_i64(8) == 0x1234
        with pytest.raises(IndexError):
            mapping.load_u64(4096 - 4)
        buf.free()
        with pytest.raises(MemoryFault):
            mapping.load_u64(8)


def test_only_kernels_of_a_workgroup_per_cu_or_more_take_the_closed_form_pass(monkeypatch):
    from hw_model.config import system_spec
    from hw_model.dispatcher import Dispatcher

    passes: list[int] = []
    real = Dispatcher._first_pass_round_robin
    monkeypatch.setattr(
        Dispatcher,
        "_first_pass_round_robin",
        lambda self, k, now: (passes.append(k.total_wgs), real(self, k, now))[1],
    )
    spec = system_spec("gfx900", functional=False)
    with rocr.init(spec=spec) as rt:
        k = rt.load_code_object("builtin:empty").kernel("empty")
        q = rt.gpus[0].create_queue(64)
        for grid in (64, 64 * 63, 64 * 64, 64 * 200):
            q.dispatch(k, grid=grid, workgroup=64).wait()
    assert passes == [64, 200]
