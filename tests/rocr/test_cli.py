"""The `hsaemu` command line."""

from __future__ import annotations

import json

from rocr.cli import main


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


def test_info_lists_agents_like_rocminfo(capsys):
    assert main(["info", "--preset", "gfx942"]) == 0
    out = capsys.readouterr().out
    assert "HSA Agents" in out and "gfx942" in out
    assert "Compute Unit Count:         304" in out


def test_trace_runs_a_script_and_writes_reports(tmp_path, monkeypatch):
    script = tmp_path / "app.py"
    script.write_text(
        "import numpy as np, rocr\n"
        "with rocr.init(preset='teaching') as rt:\n"
        "    k = rt.load_code_object('builtin:empty').kernel('empty')\n"
        "    rt.gpus[0].create_queue(64).dispatch(k, grid=64, workgroup=64).wait()\n"
    )
    monkeypatch.delenv("HSAEMU_TRACE_DIR", raising=False)
    out = tmp_path / "reports"
    assert main(["trace", "-d", str(out), str(script)]) == 0
    monkeypatch.delenv("HSAEMU_TRACE_DIR", raising=False)
    assert "empty" in (out / "kernel_trace.csv").read_text()
    assert json.loads((out / "trace.json").read_text())["traceEvents"]
