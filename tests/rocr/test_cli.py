"""The `hsaemu` command line."""

from __future__ import annotations

import csv
import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import rocr
import rocr.runtime
from hw_model import reports
from rocr import cli
from rocr.cli import main


def test_demo_vram_copies_in_squares_in_vram_and_copies_back(capsys):
    assert main(["demo", "--preset", "teaching", "-n", "5000", "--vram"]) == 0
    out = capsys.readouterr().out
    for needle in (
        "SDMA queue created  agent=gfx900 direction=host_to_device",
        "SDMA queue created  agent=gfx900 direction=device_to_host",
        "COPY_LINEAR",
        "20000 bytes by sdma in",
        "in and out are in VRAM",
        "CORRECT",
    ):
        assert needle in out, needle


def test_demo_over_host_memory_says_the_kernel_crossed_the_link(capsys):
    assert main(["demo", "--preset", "teaching", "-n", "5000"]) == 0
    out = capsys.readouterr().out
    assert "in and out are fine-grained host memory: the kernel's 40000 bytes crossed" in out


def test_demo_narrates_every_layer_and_checks_the_result(capsys, tmp_path):
    trace = tmp_path / "t.json"
    assert main(["demo", "--preset", "teaching", "-n", "5000", "--trace", str(trace)]) == 0
    out = capsys.readouterr().out
    for needle in (
        "AMDKFD_IOC_CREATE_QUEUE",
        "map queue 0 -> HQD 0",
        "ring doorbell",
        "doorbell  value=0",
        "launch square",
        "workgroups of square ran on 2 CUs",
        "completion signal",
        "CORRECT",
    ):
        assert needle in out, needle
    doc = json.loads(trace.read_text())
    names = {e["name"] for e in doc["traceEvents"]}
    assert {"AMDKFD_IOC_CREATE_QUEUE", "doorbell", "completion signal"} <= names
    tracks = {e["args"]["name"] for e in doc["traceEvents"] if e["name"] == "thread_name"}
    assert {"rocr", "kfd", "queue 0", "CU0", "CU1"} <= tracks


SAXPY_CL = """
__kernel void saxpy(__global float *y, __global const float *x, float a, uint n) {
  uint i = get_global_id(0);
  if (i < n) y[i] = a * x[i] + y[i];
}
"""


@pytest.mark.parametrize("preset", ["gfx900", "gfx90a"])
def test_demo_kernel_compiles_narrates_and_runs_your_kernel(preset, capsys, tmp_path, compile_cl):
    src = tmp_path / "saxpy.cl"
    src.write_text(SAXPY_CL)
    assert main(["demo", "--kernel", str(src), "--preset", preset, "-n", "1000"]) == 0
    out = capsys.readouterr().out
    assert f"-mcpu={preset}" in out  # the clang command line it ran
    assert "saxpy(y: ptr, x: ptr, a: f32, n: u32)" in out
    assert "kernarg_size                  280" in out  # 24 explicit + hidden (v5) bytes
    assert "s[4:5]    kernarg segment pointer" in out
    packed = "(packed, gfx90a and later)" in out
    assert packed == (preset == "gfx90a")
    assert "s_load_dword" in out  # the first instructions, as the decoder reads them
    # y[i] = 2.0 * x[i] + y[i] with x = y = 0, 1, 2, ...: 3i; i = 0 does not change.
    assert "y: 999 of 1000 elements changed; first 8: 0, 3, 6, 9, 12, 15, 18, 21" in out
    assert "x: 0 of 1000 elements changed" in out
    assert "16 waves" in out and "vmem_store 16" in out  # one store per wave executed


def test_demo_kernel_errors_are_one_line(capsys, tmp_path, compile_cl):
    bad = tmp_path / "bad.cl"
    bad.write_text("junk")
    assert main(["demo", "--kernel", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "error: expected identifier" in err  # clang's own message is shown
    assert err.strip().splitlines()[-1] == (
        f"hsaemu demo: error: --kernel {bad}: clang-15 failed (its messages above)"
    )
    assert main(["demo", "--kernel", str(tmp_path / "none.cl")]) == 2
    assert "no such file" in capsys.readouterr().err
    good = tmp_path / "k.cl"
    good.write_text(SAXPY_CL)
    assert main(["demo", "--kernel", str(good), "--name", "nope", "-n", "64"]) == 2
    assert "--name nope: the code object has kernels saxpy" in capsys.readouterr().err


def test_info_lists_agents_like_rocminfo(capsys):
    assert main(["info", "--preset", "gfx942"]) == 0
    out = capsys.readouterr().out
    assert "HSA Agents" in out and "gfx942" in out
    assert "Compute Unit Count:         304" in out


def test_trace_runs_a_script_and_writes_reports(tmp_path):
    script = tmp_path / "app.py"
    script.write_text(
        "import numpy as np, rocr\n"
        "with rocr.init(preset='teaching') as rt:\n"
        "    k = rt.load_code_object('builtin:empty').kernel('empty')\n"
        "    rt.gpus[0].create_queue(64).dispatch(k, grid=64, workgroup=64).wait()\n"
    )
    out = tmp_path / "reports"
    assert main(["trace", "-d", str(out), str(script)]) == 0
    assert "empty" in (out / "kernel_trace.csv").read_text()
    assert json.loads((out / "trace.json").read_text())["traceEvents"]


# -- bad arguments: one line on stderr, exit status 2 ----------------------------------------


def _one_error_line(capsys, prog: str) -> str:
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err and "Traceback" not in cap.out
    lines = cap.err.splitlines()
    assert len(lines) == 1 and cap.err.endswith("\n"), cap.err
    assert lines[0].startswith(f"{prog}: error: "), lines[0]
    return lines[0]


BAD_ARGUMENTS = [
    (["demo", "-n", "0"], "hsaemu demo", ["-n must be at least 1 (got 0)"]),
    (["demo", "-n", "-5"], "hsaemu demo", ["-n must be at least 1 (got -5)"]),
    (["demo", "-n", str(2**33)], "hsaemu demo", ["4294967295", "GRID_MAX_SIZE"]),
    (["demo", "-n", "x"], "hsaemu demo", ["-n", "'x'"]),
    (
        ["demo", "--workgroup", "2048"],
        "hsaemu demo",
        ["--workgroup", "2048", "at most 1024 work-items per workgroup", "gfx900"],
    ),
    (["demo", "--workgroup", "0"], "hsaemu demo", ["--workgroup must be at least 1"]),
    (
        ["demo", "--trace", "/nonexistent/dir/x.json"],
        "hsaemu demo",
        ["--trace /nonexistent/dir/x.json", "/nonexistent/dir does not exist"],
    ),
    (["demo", "--preset", "bogus"], "hsaemu demo", ["--preset", "'bogus'", "teaching"]),
    (["trace", "-d", "out", "missing.py"], "hsaemu trace", ["missing.py: no such file"]),
    (["trace"], "hsaemu trace", ["no script to run"]),
    (
        ["hws", "--queues", "200"],
        "hsaemu hws",
        ["--queues", "at most 128", "(got 200)", "HSA_AGENT_INFO_QUEUES_MAX"],
    ),
    (["hws", "--queues", "0"], "hsaemu hws", ["--queues must be at least 1 (got 0)"]),
    (["hws", "--processes", "-1"], "hsaemu hws", ["--processes must be at least 1"]),
    (["hws", "--processes", "600"], "hsaemu hws", ["at most 512", "KFD_MAX_NUM_OF_PROCESSES"]),
    (["hws", "--kernels", "0"], "hsaemu hws", ["--kernels must be at least 1"]),
    (["hws", "--kernels", "10000000"], "hsaemu hws", ["--kernels", "QUEUE_MAX_SIZE"]),
    (["hws", "-n", "0"], "hsaemu hws", ["-n must be at least 1 (got 0)"]),
    (["hws", "--priorities", "16"], "hsaemu hws", ["16 is outside 0..15"]),
    (["hws", "--priorities", "7,x"], "hsaemu hws", ["'x' is not an integer"]),
    (["hws", "--priorities", "1"], "hsaemu hws", ["KFD priority 1", "0, 3, 5, 7, 9, 11, 15"]),
    (
        ["hws", "--preset", "teaching", "--priorities", "15,7,0,0"],
        "hsaemu hws",
        ["4 priorities for 3 queue(s)"],
    ),
    (["hws", "--policy", "fifo"], "hsaemu hws", ["--policy", "round_robin"]),
    (["occupancy"], "hsaemu occupancy", ["--vgprs"]),
    (["occupancy", "--vgprs", "600"], "hsaemu occupancy", ["600 VGPRs", "0..256"]),
    (["occupancy", "--vgprs", "8", "--workgroup", "0"], "hsaemu occupancy", ["workgroup"]),
    (["occupancy", "--vgprs", "8", "--scratch", "-1"], "hsaemu occupancy", ["--scratch"]),
    (
        ["occupancy", "--vgprs", "8", "--scratch", "200000"],
        "hsaemu occupancy",
        ["at most 131056", "MAX_WAVE_SCRATCH"],
    ),
    (["serve", "--port", "0"], "hsaemu serve", ["--port must be at least 1"]),
    (["serve", "--port", "70000"], "hsaemu serve", ["--port must be at most 65535"]),
    (["serve", "--limit", "nonsense"], "hsaemu serve", ["--limit 'nonsense'"]),
    (["serve", "--limit", "max_systems=-1"], "hsaemu serve", ["--limit max_systems=-1"]),
    (["info", "--bogus"], "hsaemu info", ["unrecognized arguments: --bogus"]),
    (["nosuch"], "hsaemu", ["'nosuch'"]),
    ([], "hsaemu", ["required"]),
]


@pytest.mark.parametrize(
    ("argv", "prog", "needles"), BAD_ARGUMENTS, ids=[" ".join(a[0]) for a in BAD_ARGUMENTS]
)
def test_a_bad_argument_is_one_line_and_exit_status_2(argv, prog, needles, capsys, monkeypatch):
    monkeypatch.delenv("HSAEMU_PRESET", raising=False)
    assert main(argv) == 2
    line = _one_error_line(capsys, prog)
    for needle in needles:
        assert needle in line, (needle, line)


@pytest.mark.parametrize(
    "argv",
    [["demo"], ["info"], ["hws"], ["occupancy", "--vgprs", "8"], ["serve"], ["trace", "x.py"]],
)
def test_a_bad_hsaemu_preset_is_refused_by_every_command(argv, capsys, monkeypatch):
    monkeypatch.setenv("HSAEMU_PRESET", "bogus")
    assert main(argv) == 2
    line = _one_error_line(capsys, f"hsaemu {argv[0]}")
    assert "HSAEMU_PRESET='bogus'" in line and "gfx900" in line and "teaching" in line


def test_serve_refuses_a_busy_port_before_starting(capsys):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == 2
    line = _one_error_line(capsys, "hsaemu serve")
    assert f"--port {port}: cannot listen" in line


def test_the_installed_command_prints_one_line_without_traceback(tmp_path):
    env = {**os.environ, "HSAEMU_PRESET": "bogus"}
    for argv, env_ in (
        (["demo"], env),
        (["demo", "-n", "0"], None),
        (["trace", "-d", str(tmp_path / "out"), str(tmp_path / "missing.py")], None),
    ):
        r = subprocess.run(
            [sys.executable, "-m", "rocr.cli", *argv],
            capture_output=True,
            text=True,
            env=env_,
            timeout=120,
        )
        assert r.returncode == 2 and r.stdout == "", r
        assert len(r.stderr.splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.startswith(f"hsaemu {argv[0]}: error: ")


def test_an_hsa_error_while_running_is_one_line_with_its_status(capsys, monkeypatch):
    def failing_init(**kw):
        raise rocr.HsaError(rocr.Status.ERROR_OUT_OF_RESOURCES, "no room\nsecond line")

    monkeypatch.setattr(rocr, "init", failing_init)
    monkeypatch.delenv("HSAEMU_DEBUG", raising=False)
    assert main(["info", "--preset", "teaching"]) == 1
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err and len(cap.err.splitlines()) == 1, cap.err
    assert cap.err.startswith("hsaemu info: HSA_STATUS_ERROR_OUT_OF_RESOURCES: no room")
    assert "HSAEMU_DEBUG=1" in cap.err
    monkeypatch.setenv("HSAEMU_DEBUG", "1")
    with pytest.raises(rocr.HsaError):
        main(["info", "--preset", "teaching"])


# -- one default preset, HSAEMU_PRESET everywhere, --version ---------------------------------


def test_hsaemu_preset_is_honoured_and_an_explicit_preset_wins(capsys, monkeypatch):
    monkeypatch.setenv("HSAEMU_PRESET", "teaching")
    assert main(["demo", "-n", "128"]) == 0
    out = capsys.readouterr().out
    assert "(teaching preset, 2 CUs)" in out and "CORRECT" in out
    assert main(["info"]) == 0
    assert "Compute Unit Count:         2\n" in capsys.readouterr().out
    assert main(["info", "--preset", "gfx942"]) == 0
    assert "Compute Unit Count:         304\n" in capsys.readouterr().out
    assert main(["occupancy", "--vgprs", "8"]) == 0
    assert "teaching" in capsys.readouterr().out


def test_every_command_defaults_to_gfx900(capsys, monkeypatch):
    monkeypatch.delenv("HSAEMU_PRESET", raising=False)
    assert main(["demo", "-n", "64"]) == 0
    assert "(gfx900 preset, 64 CUs)" in capsys.readouterr().out
    # hws defaults to one queue more than the preset's HQDs, so it still oversubscribes.
    assert main(["hws", "-n", "64", "--kernels", "1"]) == 0
    out = capsys.readouterr().out
    assert "gfx900 preset, 24 HQDs" in out and "25 queue(s)" in out
    assert "map queue 24 -> HQD" in out and "CORRECT" in out


def test_version(capsys):
    import tomllib
    from importlib.metadata import version

    with open(Path(__file__).resolve().parents[2] / "pyproject.toml", "rb") as f:
        source = tomllib.load(f)["project"]["version"]
    assert main(["--version"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("hsaemu ") and out.split()[1] in {version("hsaemu"), source}


def test_version_falls_back_to_pyproject(monkeypatch):
    import importlib.metadata
    import tomllib

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    with open(Path(__file__).resolve().parents[2] / "pyproject.toml", "rb") as f:
        assert cli.version() == tomllib.load(f)["project"]["version"]


# -- hws --priorities ------------------------------------------------------------------------


def _timeline(out: str) -> list[str]:
    start = out.index("timeline (HWS events):")
    return out[start : out.index("runlist")].strip().splitlines()[1:]


def test_hws_priorities_make_the_priority_policy_differ_from_round_robin(capsys):
    argv = ["hws", "--preset", "teaching", "--queues", "4", "--priorities", "15,7,0"]
    timelines = {}
    for policy in ("round_robin", "priority"):
        assert main([*argv, "--policy", policy]) == 0
        out = capsys.readouterr().out
        assert "CORRECT" in out
        prios = [ln.split()[2] for ln in out[out.index("pasid queue") :].splitlines()[1:5]]
        assert prios == ["15", "7", "0", "15"]  # cycled over the four queues
        timelines[policy] = _timeline(out)
    assert timelines["round_robin"] != timelines["priority"]
    # Queues 0 and 1 hold the two HQDs; of the two waiting, round-robin takes queue 2 (runlist
    # order) first, the priority policy queue 3 (priority 15 over 0).
    maps = {p: [ln for ln in t if "] map queue" in ln] for p, t in timelines.items()}
    assert "map queue 2" in maps["round_robin"][2] and "map queue 3" in maps["priority"][2]


# -- trace -----------------------------------------------------------------------------------


def _run_trace(tmp_path, body: str, *script_args: str) -> tuple[int, Path]:
    script = tmp_path / "app.py"
    script.write_text(body)
    out = tmp_path / "reports"
    return main(["trace", "-d", str(out), str(script), *script_args]), out


APP = (
    "import sys, rocr\n"
    "rt = rocr.init(preset='teaching')\n"
    "k = rt.load_code_object('builtin:empty').kernel('empty')\n"
    "rt.gpus[0].create_queue(64).dispatch(k, grid=64, workgroup=64).wait()\n"
)


def test_trace_writes_reports_without_shutdown_and_exits_with_the_scripts_status(tmp_path, capsys):
    code, out = _run_trace(tmp_path, APP + "sys.exit(sys.argv[1])\n", "3")
    assert code == 1  # a non-integer exit code is printed and exits 1, as Python does
    assert capsys.readouterr().err.splitlines()[0] == "3"
    code, out = _run_trace(tmp_path, APP + "sys.exit(int(sys.argv[1]))\n", "3")
    assert code == 3
    assert "empty" in (out / "kernel_trace.csv").read_text()
    assert json.loads((out / "trace.json").read_text())["traceEvents"]
    err = capsys.readouterr().err
    assert f"reports in {out}/" in err and "stats.txt" in err
    code, out = _run_trace(tmp_path, APP)  # normal end, no shutdown()
    assert code == 0 and (out / "stats.txt").is_file()


def test_trace_prints_the_scripts_traceback_and_still_writes_reports(tmp_path, capsys):
    body = APP + "def f():\n    raise RuntimeError('boom')\nf()\n"
    code, out = _run_trace(tmp_path, body)
    assert code == 1
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert lines[1] == f'  File "{tmp_path / "app.py"}", line 7, in <module>'
    assert "RuntimeError: boom" in err and "runpy" not in err and "cli.py" not in err
    assert "empty" in (out / "kernel_trace.csv").read_text()


def test_trace_covers_every_machine_and_processes_share_theirs(tmp_path, capsys):
    body = (
        "import rocr\n"
        "rts = [rocr.init(preset='teaching') for _ in range(3)]\n"
        "rts.append(rocr.init(system=rts[0].system))  # a second process on machine 0\n"
        "for i, rt in enumerate(rts):\n"
        "    k = rt.load_code_object('builtin:empty').kernel('empty')\n"
        "    for _ in range(i + 1):\n"
        "        rt.gpus[0].create_queue(64).dispatch(k, grid=64, workgroup=64).wait()\n"
        "rts[1].shutdown()\n"
    )
    code, out = _run_trace(tmp_path, body)
    assert code == 0
    assert not (out / "trace.json").exists()
    rows = {}
    for m in range(3):
        with open(out / f"machine-{m}" / "kernel_trace.csv") as f:
            rows[m] = list(csv.DictReader(f))
    assert [len(rows[m]) for m in range(3)] == [1 + 4, 2, 3]
    assert len({r["Process_Id"] for r in rows[0]}) == 2
    assert not (out / "machine-3").exists()
    claimed = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("reports in")]
    assert [ln.split()[2] for ln in claimed] == [f"{out}/machine-{m}/" for m in range(3)]
    assert rocr.runtime.INIT_HOOKS == []


def test_trace_claims_only_files_it_wrote(tmp_path, capsys, monkeypatch):
    code, out = _run_trace(tmp_path, "print('no runtime here')\n")
    assert code == 0 and list(out.iterdir()) == []
    err = capsys.readouterr().err
    assert "no reports written" in err and "trace.json" not in err

    def broken(system):
        raise RuntimeError("stats unavailable")

    monkeypatch.setitem(reports.REPORTS, "stats.txt", broken)
    code, out = _run_trace(tmp_path, APP)
    assert code == 1  # the script succeeded but a report is missing
    assert not (out / "stats.txt").exists() and not list(out.glob(".*tmp"))
    err = capsys.readouterr().err
    assert f"could not write {out / 'stats.txt'}: stats unavailable" in err
    claim = next(ln for ln in err.splitlines() if ln.startswith("reports in"))
    assert "trace.json" in claim and "kernel_trace.csv" in claim and "stats.txt" not in claim


def test_trace_does_not_keep_the_scripts_machines_alive(tmp_path):
    body = (
        "import builtins, weakref, rocr\n"
        "rt = rocr.init(preset='teaching')\n"
        "builtins._hsaemu_test_machine = weakref.ref(rt.system)\n"
        "rt.shutdown()\n"
    )
    import builtins

    try:
        code, _ = _run_trace(tmp_path, body)
        assert code == 0
        gc.collect()
        assert builtins._hsaemu_test_machine() is None
    finally:
        del builtins._hsaemu_test_machine


def test_trace_refuses_an_output_directory_that_is_a_file(tmp_path, capsys):
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "f").write_text("")
    assert main(["trace", "-d", str(tmp_path / "f"), str(tmp_path / "app.py")]) == 2
    assert "is not a directory" in _one_error_line(capsys, "hsaemu trace")


KERNELS_CL = """
__kernel void vector_add(__global const float *a, __global const float *b,
                         __global float *c, uint n) {
  size_t i = get_global_id(0);
  if (i < n) c[i] = a[i] + b[i];
}
__kernel void tile(__global float *out) {
  __local float t[1024];
  t[get_local_id(0)] = get_local_id(0);
  barrier(CLK_LOCAL_MEM_FENCE);
  out[get_global_id(0)] = t[1023 - get_local_id(0)];
}
"""


def test_kernels_lists_arguments_registers_and_occupancy(compile_cl, capsys, monkeypatch):
    monkeypatch.delenv("HSAEMU_PRESET", raising=False)
    path = compile_cl(KERNELS_CL)
    assert main(["kernels", str(path)]) == 0
    out = capsys.readouterr().out
    assert "code object v5, target gfx900" in out
    assert "kernel vector_add" in out and "kernel tile" in out
    for needle in ("a ", "global_buffer (float*)", "by_value (uint)", "hidden_block_count_x"):
        assert needle in out, needle
    assert "LDS 4096 B" in out and "occupancy on gfx900" in out
    assert main(["kernels", str(path), "--preset", "teaching", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    va = next(k for k in doc["kernels"] if k["name"] == "vector_add")
    assert [(a["name"], a["offset"], a["size"], a["value_kind"]) for a in va["args"][:4]] == [
        ("a", 0, 8, "global_buffer"),
        ("b", 8, 8, "global_buffer"),
        ("c", 16, 8, "global_buffer"),
        ("n", 24, 4, "by_value"),
    ]
    assert va["wavefront_size"] == 64 and va["vgpr_count"] > 0
    assert va["occupancy"]["workgroups_per_cu"] >= 1
    tile = next(k for k in doc["kernels"] if k["name"] == "tile")
    assert tile["group_segment_fixed_size"] == 4096
    assert main(["kernels", str(path), "--disasm"]) == 0
    out = capsys.readouterr().out
    assert "s_load_dword" in out and "s_barrier" in out and "s_endpgm" in out
    assert "<unknown to the decoder>" not in out


def test_kernels_refuses_what_is_not_a_code_object(tmp_path, capsys):
    assert main(["kernels", str(tmp_path / "missing.hsaco")]) == 2
    assert "missing.hsaco" in _one_error_line(capsys, "hsaemu kernels")
    text = tmp_path / "k.cl"
    text.write_text("__kernel void k() {}")
    assert main(["kernels", str(text)]) == 2
    assert "not an AMDGPU code object" in _one_error_line(capsys, "hsaemu kernels")
    bad = tmp_path / "bad.hsaco"
    bad.write_bytes(b"\x7fELF\x02\x01\x01\x40\x03" + bytes(9) + (224).to_bytes(2, "little"))
    assert main(["kernels", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "HSA_STATUS_ERROR_INVALID_CODE_OBJECT" in err
