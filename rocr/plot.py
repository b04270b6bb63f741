"""`hsaemu plot`: a trace.json drawn as a timeline and an occupancy map, with matplotlib.

The timeline has one row per track that did timed work: each queue's kernels (from packet
fetch to retire), each CU's workgroups and each SDMA engine's copies. The occupancy map shows
the waves resident on each CU over time, the workgroup's waves (the dispatcher's
`waves_per_wg`) counted from its start to its end. matplotlib is the optional `plot` extra;
`plot_data` needs only the JSON, so the numbers behind a picture can be checked without it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The one-line remedy the CLI prints when matplotlib is missing.
INSTALL_HINT = "pip install 'hsaemu[plot]' (or: pip install matplotlib)"

DPI = 110  # a 12-inch-wide picture 1320 pixels across

# Row order: queues, then CUs, then copy engines, each by number.
_ROW_KINDS = (("queue ", "kernel"), ("CU", "wg"), ("SDMA ", "copy"))
_CAT_KIND = {"kernel": "kernel", "wg": "wg", "sdma": "copy"}


@dataclass
class Bar:
    """One span of timed work on one row, in microseconds of system time."""

    row: str
    start: float
    dur: float
    label: str
    kind: str  # "kernel" (a queue's), "wg" (a CU's), "copy" (an SDMA engine's)
    dispatch: tuple[int, int] | None = None  # (queue, dispatch_id) of a kernel or workgroup


@dataclass
class PlotData:
    """What the pictures show: the bars of the timeline, and per CU the waves resident from
    each time in `times` (us) to the next."""

    rows: list[str] = field(default_factory=list)
    bars: list[Bar] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    waves: dict[str, list[int]] = field(default_factory=dict)

    def rows_of(self, kind: str) -> list[str]:
        return [r for r in self.rows if any(b.row == r and b.kind == kind for b in self.bars)]


class TraceFormatError(ValueError):
    """The file is not a trace this program wrote (Chrome trace JSON with traceEvents)."""


def load_trace(path: str | Path) -> dict[str, Any]:
    try:
        trace = json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise TraceFormatError(f"not JSON: {e}") from None
    if not isinstance(trace, dict) or not isinstance(trace.get("traceEvents"), list):
        raise TraceFormatError("no traceEvents list: not a Chrome/Perfetto trace JSON object")
    return trace


def _row_key(row: str) -> tuple[int, int]:
    for n, (prefix, _) in enumerate(_ROW_KINDS):
        if row.startswith(prefix):
            m = re.search(r"\d+", row[len(prefix) :])
            return n, int(m.group()) if m else 0
    return len(_ROW_KINDS), 0


def plot_data(trace: dict[str, Any]) -> PlotData:
    """The bars and the occupancy of a trace (Chrome trace JSON as `hsaemu` writes it)."""
    # Anything else a JSON trace may hold (other tools' events, odd fields) is left out.
    events = [e for e in trace["traceEvents"] if isinstance(e, dict)]
    names = {
        (e.get("pid"), e.get("tid")): str((e.get("args") or {}).get("name", "?"))
        for e in events
        if e.get("ph") == "M" and e.get("name") == "thread_name"
    }
    waves_per_wg: dict[tuple[int, int], int] = {}
    for e in events:
        if e.get("ph") == "i" and str(e.get("name", "")).startswith("launch "):
            a = e.get("args") if isinstance(e.get("args"), dict) else {}
            if "queue" in a and "dispatch_id" in a and _number(a.get("waves_per_wg")):
                waves_per_wg[(a["queue"], a["dispatch_id"])] = int(a["waves_per_wg"])
    data = PlotData()
    steps: dict[str, list[tuple[float, int]]] = {}
    for e in events:
        kind = _CAT_KIND.get(e.get("cat", ""))
        ts, dur = e.get("ts"), e.get("dur", 0)
        if e.get("ph") != "X" or kind is None or not _number(ts) or not _number(dur):
            continue
        row = names.get((e.get("pid"), e.get("tid")), "?")
        a = e.get("args") if isinstance(e.get("args"), dict) else {}
        start, dur = float(ts), float(dur)
        dispatch = None
        if kind == "kernel":
            dispatch = (_row_number(row), a.get("dispatch_id", -1))
        elif kind == "wg":
            dispatch = (a.get("queue", -1), a.get("dispatch_id", -1))
            w = waves_per_wg.get(dispatch, 1)
            steps.setdefault(row, []).extend(((start, w), (start + dur, -w)))
        data.bars.append(Bar(row, start, dur, str(e.get("name", "")), kind, dispatch))
    data.rows = sorted({b.row for b in data.bars}, key=_row_key)
    # Occupancy: one shared time axis, each CU's resident waves as a step function on it.
    times = sorted({t for s in steps.values() for t, _ in s})
    index = {t: i for i, t in enumerate(times)}
    for cu in sorted(steps, key=_row_key):
        delta = [0] * len(times)
        for t, w in steps[cu]:
            delta[index[t]] += w
        level, out = 0, []
        for d in delta:
            level += d
            out.append(level)
        data.waves[cu] = out
    data.times = times
    return data


def _number(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _row_number(row: str) -> int:
    m = re.search(r"\d+", row)
    return int(m.group()) if m else -1


def figure(data: PlotData, title: str = "") -> Any:
    """A matplotlib Figure: the timeline above, the occupancy map below, one time axis.
    Raises ImportError without matplotlib."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    rows = data.rows
    height = min(40.0, 2.5 + 0.16 * len(rows) + (0.12 * len(data.waves) + 1.5))
    fig = Figure(figsize=(12, max(5.0, height)), layout="constrained")
    n_occ = max(1, len(data.waves))
    ax, occ = fig.subplots(2, 1, sharex=True, height_ratios=[max(1, len(rows)), max(4, n_occ // 2)])
    palette = colormaps["tab20"]
    dispatches = sorted({b.dispatch for b in data.bars if b.dispatch is not None})
    color = {d: palette(i % 20) for i, d in enumerate(dispatches)}
    y = {r: i for i, r in enumerate(rows)}
    by_row: dict[tuple[str, Any], list[tuple[float, float]]] = {}
    for b in data.bars:
        by_row.setdefault((b.row, b.dispatch if b.kind != "copy" else None), []).append(
            (b.start, b.dur)
        )
    for (row, d), spans in by_row.items():
        c = color.get(d, "0.45") if d is not None else "0.45"
        # A thin white edge keeps back-to-back workgroups on a CU apart.
        ax.broken_barh(spans, (y[row] - 0.4, 0.8), facecolors=c, edgecolors="white", linewidth=0.3)
    for b in data.bars:
        if b.kind == "kernel":
            ax.text(b.start, y[b.row], f" {b.label}", va="center", fontsize=7, clip_on=True)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_title(title or "timeline: kernels per queue, workgroups per CU, copies per SDMA engine")
    ax.grid(axis="x", alpha=0.3)
    if data.waves and len(data.times) > 1:
        cus = list(data.waves)
        grid = [data.waves[c][:-1] for c in cus]
        mesh = occ.pcolormesh(data.times, range(len(cus) + 1), grid, cmap="viridis", shading="flat")
        fig.colorbar(mesh, ax=occ, label="resident waves")
        occ.set_yticks([i + 0.5 for i in range(len(cus))], cus, fontsize=6)
        occ.set_ylim(len(cus), 0)
    else:
        occ.text(0.5, 0.5, "no workgroups in this trace", ha="center", transform=occ.transAxes)
    occ.set_title("occupancy: waves resident per CU")
    occ.set_xlabel("time (us)")
    return fig


def plot(trace_path: str | Path, out_path: str | Path) -> PlotData:
    """Read `trace_path`, write the picture to `out_path` (format from its suffix: png, svg,
    pdf ...); returns the data drawn."""
    data = plot_data(load_trace(trace_path))
    fig = figure(data, f"{Path(trace_path).name}: kernels, workgroups, copies")
    fig.savefig(out_path, dpi=DPI)
    return data
