"""Report files of a run: rocprofv3-style `kernel_trace.csv`, gem5-style `stats.txt`, and the
Perfetto/Chrome trace.

Column names follow rocprofv3's kernel trace CSV (Kind, Agent_Id, Queue_Id, Kernel_Name,
Start_Timestamp, End_Timestamp in ns, grid and workgroup sizes, register counts); stats.txt
follows gem5's "name  value  # description" layout with ticks in picoseconds.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
from collections.abc import Callable
from pathlib import Path

from hw_model.system import System

KERNEL_TRACE_COLUMNS = [
    "Kind",
    "Agent_Id",
    "Queue_Id",
    "Process_Id",
    "Kernel_Id",
    "Kernel_Name",
    "Correlation_Id",
    "Start_Timestamp",
    "End_Timestamp",
    "Private_Segment_Size",
    "Group_Segment_Size",
    "Workgroup_Size_X",
    "Workgroup_Size_Y",
    "Workgroup_Size_Z",
    "Grid_Size_X",
    "Grid_Size_Y",
    "Grid_Size_Z",
    "Arch_VGPR_Count",
    "SGPR_Count",
]


def kernel_trace_csv(system: System) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(KERNEL_TRACE_COLUMNS)
    rows = []
    for g in system.gpus:
        for r in g.kernel_records:
            rows.append((r["start_ps"], g.node, r))
    for n, (_, node, r) in enumerate(sorted(rows, key=lambda x: (x[0], x[1])), 1):
        w.writerow(
            [
                "KERNEL_DISPATCH",
                node,
                r["queue_id"],
                r["pasid"],
                n,
                r["name"],
                r["dispatch_id"],
                r["start_ps"] // 1000,
                r["end_ps"] // 1000,
                0,
                r["lds"],
                *r["workgroup"],
                *r["grid"],
                r["vgprs"],
                r["sgprs"],
            ]
        )
    return out.getvalue()


def _flatten(prefix: str, value, out: list[tuple[str, object]]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(value, list | tuple) and all(isinstance(v, int | float) for v in value):
        for i, v in enumerate(value):
            out.append((f"{prefix}::{i}", v))
        if value:
            out.append((f"{prefix}::total", sum(value)))
    else:
        out.append((prefix, value))


def stats_txt(system: System) -> str:
    rows: list[tuple[str, object]] = []
    _flatten("system", system.stats(), rows)
    lines = ["---------- Begin Simulation Statistics ----------"]
    lines += [f"{name:<60} {value}" for name, value in rows]
    lines.append("---------- End Simulation Statistics   ----------")
    return "\n".join(lines) + "\n"


REPORTS: dict[str, Callable[[System], str]] = {
    "trace.json": lambda system: system.tracer.dumps(),
    "kernel_trace.csv": kernel_trace_csv,
    "stats.txt": stats_txt,
}


def write_reports(
    system: System,
    directory: str | Path,
    errors: list[tuple[Path, Exception]] | None = None,
) -> list[Path]:
    """Write trace.json, kernel_trace.csv and stats.txt into `directory`; return the paths
    written. Each file is written whole or not at all (a temporary file renamed into place),
    so a failure never leaves a truncated report behind. With `errors`, a report that cannot
    be made or written is recorded there and the others are still written; without, the first
    failure raises."""
    d = Path(directory)
    paths = []
    for name, make in REPORTS.items():
        p = d / name
        tmp = d / f".{name}.tmp"
        try:
            d.mkdir(parents=True, exist_ok=True)
            tmp.write_text(make(system))
            os.replace(tmp, p)
        except Exception as e:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            if errors is None:
                raise
            errors.append((p, e))
            continue
        paths.append(p)
    return paths
