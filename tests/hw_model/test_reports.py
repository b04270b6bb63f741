"""Report files: kernel_trace.csv rows per kernel, stats.txt, Perfetto JSON."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from hw_model.reports import KERNEL_TRACE_COLUMNS, kernel_trace_csv, stats_txt, write_reports


@pytest.mark.trace
def test_reports_describe_the_run(rt, buffers, tmp_path):
    n = 1000
    src, dst = buffers(np.ones(n, np.float32)), buffers(n)
    k = rt.load_code_object("builtin:square").kernel("square")
    q = rt.gpus[0].create_queue(64)
    q.dispatch(k, grid=n, workgroup=128, args=(dst, src, n))
    q.dispatch(k, grid=(n, 1), workgroup=(64, 1), args=(dst, src, n)).wait()
    rows = list(csv.DictReader(io.StringIO(kernel_trace_csv(rt.system))))
    assert [r["Kernel_Name"] for r in rows] == ["square", "square"]
    assert list(rows[0]) == KERNEL_TRACE_COLUMNS
    assert rows[0]["Workgroup_Size_X"] == "128" and rows[1]["Workgroup_Size_X"] == "64"
    assert int(rows[0]["Start_Timestamp"]) < int(rows[0]["End_Timestamp"])
    assert int(rows[0]["End_Timestamp"]) <= int(rows[1]["End_Timestamp"])
    stats = stats_txt(rt.system)
    assert "system.gpu1.kernels" in stats and " 2\n" in stats.split("system.gpu1.kernels")[1]
    paths = write_reports(rt.system, tmp_path / "out")
    assert {p.name for p in paths} == {"trace.json", "kernel_trace.csv", "stats.txt"}
    doc = json.loads((tmp_path / "out" / "trace.json").read_text())
    assert any(e.get("cat") == "wg" for e in doc["traceEvents"])
