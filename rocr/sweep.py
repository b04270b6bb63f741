"""Design-space sweeps: a grid of cells, each a fresh emulated machine running one workload.

A sweep spec (TOML) names the workload, an importable `module:function(rt, **params)` that
returns a dict of figures, and the axes of the grid: any `SystemSpec` field (`trace`,
`scheduler_policy`, `placement_policy`, ...), any `GpuSpec` or `HostCosts` field by dotted name
(`gpu.num_cus`, `host.syscall_ps`), `preset`, `seed`, and workload parameters (every other name,
or `params.<name>` to be explicit). Every cell builds its machine with `rocr.init(spec=...)`,
seeds `random` and numpy with its seed, calls the workload and shuts the machine down.

Cells run in a process pool (`executor="local"`) or as Ray tasks (`executor="ray"`, the
`sweep` extra). Each finished cell is appended to a CSV table at once, so an interrupted sweep
resumes: a rerun skips every cell whose row says `ok` (a cell is identified by a hash of
everything that determines its result, so growing an axis reuses the cells already run). A
cell that raises records its error and the sweep goes on.

    from rocr.sweep import load_spec, run_sweep
    result = run_sweep(load_spec("bench/sweeps/nw_scheduler.toml"), executor="local", workers=2)
"""

from __future__ import annotations

import csv
import functools
import hashlib
import importlib
import inspect
import itertools
import json
import os
import random
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

import rocr
from hw_model.config import DEFAULT_PRESET, PRESETS, GpuSpec, HostCosts, SystemSpec
from rocr import progress
from rocr.status import Status

# Columns every row has besides the axes and the workload's figures.
META_COLUMNS = (
    "status",
    "error",
    "wall_s",
    "hsaemu_version",
    "git_commit",
    "spec_hash",
    "cell_id",
)
# Read back as text: a hash such as "12e45..." is not a number.
TEXT_COLUMNS = frozenset(META_COLUMNS) - {"wall_s"}
ERROR_CHARS = 500  # an error message is cut to this many characters to keep rows readable
INSTALL_HINT = "pip install -e '.[sweep]' (or pip install ray)"

Scalar = bool | int | float | str


class SweepError(rocr.HsaError):
    """A bad sweep spec or argument: HSA_STATUS_ERROR_INVALID_ARGUMENT, naming the key."""

    def __init__(self, message: str) -> None:
        super().__init__(Status.ERROR_INVALID_ARGUMENT, message)


class PlotSpec(BaseModel):
    """What `--plot` draws; every key is optional (the axes' names decide by default)."""

    model_config = ConfigDict(extra="forbid")
    figures: list[str] = []  # figure columns to plot (default: every numeric figure)
    x: str | None = None  # x axis of the line plots (default: an axis named *queue*)
    lines: str | None = None  # one line per value of this axis (default: an axis named *policy*)
    heatmap: list[str] = Field(default=[], max_length=2)  # two axes (default: the last two)


class SweepSpec(BaseModel):
    """The TOML file, validated."""

    model_config = ConfigDict(extra="forbid")
    name: str = ""
    workload: str  # "module:function"
    preset: str = DEFAULT_PRESET
    system: dict[str, Any] = {}  # fixed machine fields, same names as machine axes
    params: dict[str, Any] = {}  # fixed workload parameters
    axes: dict[str, list[Any]] = {}
    seeds: list[int] | None = None  # shorthand for a `seed` axis (default [0])
    path: list[str] = []  # import directories for the workload, relative to the spec file
    out: str | None = None  # the table, relative to the spec file (default <stem>.csv here)
    plot: PlotSpec = PlotSpec()


@dataclass(frozen=True)
class Cell:
    """One point of the grid: what its machine and its workload get."""

    index: int
    axes: dict[str, Any]
    preset: str
    system: dict[str, Any]
    params: dict[str, Any]
    seed: int
    cell_id: str


@dataclass
class Plan:
    """A validated spec expanded into cells, with everything a worker needs to run one."""

    spec: SweepSpec
    cells: list[Cell]
    axis_names: list[str]
    spec_hash: str
    import_paths: list[str]
    out: Path
    source: Path | None = None

    def shape(self) -> str:
        """e.g. "4 scheduler_policy x 7 queues x 1 seed"."""
        sizes = {n: len({_canonical(c.axes[n]) for c in self.cells}) for n in self.axis_names}
        return " x ".join(f"{k} {n}" for n, k in sizes.items())


@dataclass
class SweepResult:
    rows: list[dict[str, Any]]  # the table, one row per cell of the grid, in grid order
    ran: int = 0  # cells run now
    skipped: int = 0  # cells already in the table
    failed: int = 0  # cells run now that raised
    wall_s: float = 0.0
    csv_path: Path | None = None
    parquet_path: Path | None = None
    plots: list[Path] = field(default_factory=list)


# -- spec ------------------------------------------------------------------------------------


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def _digest(obj: Any, n: int) -> str:
    return hashlib.sha256(_canonical(obj).encode()).hexdigest()[:n]


def _flatten(table: dict[str, Any]) -> dict[str, Any]:
    """TOML reads `gpu.num_cus = 8` as {"gpu": {"num_cus": 8}}: make it "gpu.num_cus"."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            for sub, v in value.items():
                flat[f"{key}.{sub}"] = v
        else:
            flat[key] = value
    return flat


_SYSTEM_FIELDS = tuple(f for f in SystemSpec.model_fields if f not in ("gpu", "host"))


def machine_key(name: str) -> bool:
    """Whether an axis name is a machine field (else it is a workload parameter)."""
    if name in _SYSTEM_FIELDS:
        return True
    group, _, sub = name.partition(".")
    if group in ("gpu", "host") and sub:
        fields = GpuSpec.model_fields if group == "gpu" else HostCosts.model_fields
        if sub not in fields:
            cls = "GpuSpec" if group == "gpu" else "HostCosts"
            raise SweepError(
                f"{name!r} is not a {cls} field; {group}.<field> takes one of "
                f"{', '.join(sorted(fields))}"
            )
        return True
    if name in ("gpu", "host"):
        raise SweepError(f"{name!r} needs a field: {name}.<field>, e.g. gpu.num_cus")
    return False


def machine_spec(preset: str, fields: dict[str, Any]) -> SystemSpec:
    """The SystemSpec of a preset with machine fields (dotted gpu./host. names) replaced."""
    if preset not in PRESETS:
        raise SweepError(
            f"preset {preset!r} is unknown; choose one of {', '.join(sorted(PRESETS))}"
        )
    gpu_over = {k[4:]: v for k, v in fields.items() if k.startswith("gpu.")}
    host_over = {k[5:]: v for k, v in fields.items() if k.startswith("host.")}
    top = {k: v for k, v in fields.items() if "." not in k}
    try:
        gpu = PRESETS[preset]
        if gpu_over:
            gpu = GpuSpec(**{**gpu.model_dump(), **gpu_over})
        host = HostCosts(**host_over)
        return SystemSpec(gpu=gpu, host=host, **top)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise SweepError(
            f"machine fields {_canonical(fields)} on preset {preset!r}: {where}: {err['msg']}"
        ) from None


def _check_workload_name(workload: str) -> None:
    module, sep, func = workload.partition(":")
    if not (sep and module and func.isidentifier()):
        raise SweepError(f"workload = {workload!r}: must be 'module:function'")


def load_workload(workload: str) -> Callable[..., dict]:
    _check_workload_name(workload)
    module, _, func = workload.partition(":")
    try:
        fn = getattr(importlib.import_module(module), func)
    except ImportError as e:
        raise SweepError(f"workload = {workload!r}: cannot import {module!r}: {e}") from None
    except AttributeError:
        raise SweepError(f"workload = {workload!r}: {module!r} has no {func!r}") from None
    if not callable(fn):
        raise SweepError(f"workload = {workload!r} is not callable")
    return fn


def load_spec(path: str | os.PathLike) -> Plan:
    """Read and validate a sweep spec file and expand its grid."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise SweepError(f"sweep spec {str(p)!r}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise SweepError(f"sweep spec {str(p)!r} is not valid TOML: {e}") from None
    return make_plan(data, base=p.parent, default_out=Path(f"{p.stem}.csv"), source=p)


def make_plan(
    data: dict[str, Any] | SweepSpec,
    base: Path | None = None,
    default_out: Path | None = None,
    source: Path | None = None,
) -> Plan:
    """Validate a spec (a TOML-shaped dict or a SweepSpec) and expand it into cells."""
    base = base or Path.cwd()
    if isinstance(data, SweepSpec):
        spec = data
    else:
        try:
            spec = SweepSpec.model_validate(data)
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(x) for x in err["loc"]) or "spec"
            got = f" (got {err['input']!r})" if err["type"] != "missing" else ""
            raise SweepError(f"sweep spec: {where}: {err['msg']}{got}") from None
    _check_workload_name(spec.workload)
    axes = _flatten(spec.axes)
    system = _flatten(spec.system)
    for name, values in axes.items():
        if not isinstance(values, list) or not values:
            raise SweepError(f"axes.{name} = {values!r}: must be a non-empty list of values")
        if len({_canonical(v) for v in values}) != len(values):
            raise SweepError(f"axes.{name} = {values!r}: repeats a value")
    for name in system:
        if name in ("preset", "seed") or not machine_key(name):
            raise SweepError(
                f"system.{name}: not a machine field; the [system] table takes SystemSpec "
                f"fields ({', '.join(_SYSTEM_FIELDS)}), gpu.<GpuSpec field> and "
                "host.<HostCosts field>; workload parameters go in [params]"
            )
    if "seed" in axes and spec.seeds is not None:
        raise SweepError("give the seeds once: either seeds = [...] or axes.seed = [...]")
    if "seed" not in axes:
        axes["seed"] = spec.seeds if spec.seeds is not None else [0]
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in axes["seed"]):
        raise SweepError(f"seeds = {axes['seed']!r}: must be integers")
    for name in axes:
        if name in system:
            raise SweepError(f"{name!r} is both an axis and fixed in [system]")
        param = name.startswith("params.") or (
            name not in ("preset", "seed") and not machine_key(name)
        )
        if param and name.removeprefix("params.") in spec.params:
            raise SweepError(f"{name!r} is both an axis and fixed in [params]")
        if name in META_COLUMNS or name in ("cell", "preset_name"):
            raise SweepError(f"axis {name!r} would clash with the table column of that name")
    presets = axes.get("preset", [spec.preset])
    for pr in presets:
        if pr not in PRESETS:
            raise SweepError(
                f"preset {pr!r} is unknown; choose one of {', '.join(sorted(PRESETS))}"
            )
    names = list(axes)
    spec_hash = _digest(spec.model_dump(exclude={"out", "plot"}), 12)
    cells: list[Cell] = []
    for index, values in enumerate(itertools.product(*(axes[n] for n in names))):
        point = dict(zip(names, values, strict=True))
        preset = point.get("preset", spec.preset)
        seed = point["seed"]
        fields = dict(system)
        params = dict(spec.params)
        for n, v in point.items():
            if n in ("preset", "seed"):
                continue
            if n.startswith("params."):
                params[n.removeprefix("params.")] = v
            elif machine_key(n):
                fields[n] = v
            else:
                params[n] = v
        machine_spec(preset, fields)  # a bad field value fails here, before anything runs
        ident = {
            "workload": spec.workload,
            "preset": preset,
            "system": fields,
            "params": params,
            "seed": seed,
        }
        cells.append(Cell(index, point, preset, fields, params, seed, _digest(ident, 16)))
    paths = [str((base / d).resolve()) for d in spec.path] + [str(base.resolve())]
    if spec.out is not None:
        out = Path(os.path.normpath(base / spec.out))
    else:
        out = default_out or Path(f"{spec.name or 'sweep'}.csv")
    return Plan(spec, cells, names, spec_hash, paths, out, source)


# -- one cell --------------------------------------------------------------------------------


def _figure(value: Any) -> Scalar | None:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        try:
            v = item()
            if isinstance(v, bool | int | float | str):
                return v
        except (TypeError, ValueError):
            pass
    return _canonical(value)


def _accepts(fn: Callable, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def _one_line_error(e: BaseException) -> str:
    text = " ".join(f"{type(e).__name__}: {e}".split())
    return text[:ERROR_CHARS]


def run_cell(workload: str, import_paths: list[str], cell: Cell) -> dict[str, Any]:
    """Run one cell in this process: a fresh machine, the workload, its figures. Never
    raises for the workload's sake: an exception becomes status "error" and its message."""
    t0 = time.perf_counter()
    figures: dict[str, Any] = {}
    try:
        for p in reversed(import_paths):
            if p not in sys.path:
                sys.path.insert(0, p)
        fn = load_workload(workload)
        random.seed(cell.seed)
        import numpy as np

        np.random.seed(cell.seed % 2**32)
        params = dict(cell.params)
        if _accepts(fn, "seed"):
            params.setdefault("seed", cell.seed)
        with rocr.init(spec=machine_spec(cell.preset, cell.system)) as rt:
            out = fn(rt, **params)
        if not isinstance(out, dict):
            raise TypeError(f"workload returned {type(out).__name__}, not a dict of figures")
        figures = {str(k): _figure(v) for k, v in out.items()}
        status, error = "ok", ""
    except Exception as e:  # the cell's failure is data: the sweep goes on
        status, error = "error", _one_line_error(e)
    return {
        "figures": figures,
        "status": status,
        "error": error,
        "wall_s": round(time.perf_counter() - t0, 4),
    }


# -- executors -------------------------------------------------------------------------------

OnResult = Callable[[Cell, dict[str, Any]], None]


def _crashed(e: BaseException) -> dict[str, Any]:
    return {"figures": {}, "status": "error", "error": _one_line_error(e), "wall_s": 0.0}


def warm_up(workload: str, import_paths: list[str]) -> int:
    """Import the workload in this worker (what a worker's first cell would pay for)."""
    for p in reversed(import_paths):
        if p not in sys.path:
            sys.path.insert(0, p)
    load_workload(workload)
    time.sleep(0.2)  # hold this worker so the other warm-up tasks land on the others
    return os.getpid()


class LocalExecutor:
    """A process pool (spawn: every worker starts clean, as a Ray worker does)."""

    name = "local"

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.pools: dict[int, Any] = {}

    def _pool(self, n: int):
        if n not in self.pools:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            ctx = multiprocessing.get_context("spawn")
            self.pools[n] = ProcessPoolExecutor(max_workers=n, mp_context=ctx)
        return self.pools[n]

    def warm(self, plan: Plan, workers: int) -> None:
        """Start `workers` processes and import the workload in each, so that a timed run
        measures cells, not interpreter start-up."""
        pool = self._pool(workers)
        args = (plan.spec.workload, plan.import_paths)
        for f in [pool.submit(warm_up, *args) for _ in range(workers)]:
            f.result()

    def run(
        self, plan: Plan, cells: list[Cell], on_result: OnResult, workers: int | None = None
    ) -> None:
        from concurrent.futures import as_completed

        n = max(1, min(workers or self.workers, len(cells)))
        pool = self._pool(n)
        futures = {
            pool.submit(run_cell, plan.spec.workload, plan.import_paths, c): c for c in cells
        }
        try:
            for f in as_completed(futures):
                try:
                    res = f.result()
                except Exception as e:  # a worker died (BrokenProcessPool): record, go on
                    res = _crashed(e)
                    self.pools.pop(n, None)
                on_result(futures[f], res)
        except BaseException:
            for f in futures:
                f.cancel()
            raise

    def close(self) -> None:
        for pool in self.pools.values():
            pool.shutdown(wait=True, cancel_futures=True)
        self.pools.clear()


class RayExecutor:
    """Cells as Ray tasks; `address` joins a running cluster, else a local one starts."""

    name = "ray"

    def __init__(self, workers: int | None, address: str | None) -> None:
        import logging

        import ray

        self.ray = ray
        self.workers = workers
        self.started = False
        if not ray.is_initialized():
            # Joining a cluster takes only the address (Ray Client refuses the local-start
            # options). Without one, "local" starts a new cluster even if a `ray start` one
            # runs here (plain ray.init() would join it), with `workers` CPUs, no dashboard.
            kw: dict[str, Any] = {"address": address}
            if not address:
                kw = {"address": "local", "include_dashboard": False}
                if workers:
                    kw["num_cpus"] = workers
            try:
                ray.init(**kw, log_to_driver=False, logging_level=logging.WARNING)
            except (ConnectionError, RuntimeError) as e:
                lines = str(e).strip().splitlines() or [type(e).__name__]
                hint = (
                    " (a cluster with token authentication also needs RAY_AUTH_MODE=token "
                    "and its token here)"
                    if "auth" in str(e).lower()
                    else ""
                )
                raise SweepError(
                    f"--address {address}: cannot start or join a Ray cluster: "
                    f"{lines[-1].strip()}{hint}"
                ) from None
            self.started = True
        # One CPU per cell; no retries: a cell that crashed its worker is recorded as failed.
        self.task = ray.remote(num_cpus=1, max_retries=0)(run_cell)

    def run(
        self, plan: Plan, cells: list[Cell], on_result: OnResult, workers: int | None = None
    ) -> None:
        ray = self.ray
        limit = workers or self.workers or len(cells)
        todo = list(reversed(cells))
        inflight: dict[Any, Cell] = {}
        workload, paths = plan.spec.workload, plan.import_paths
        while todo or inflight:
            while todo and len(inflight) < limit:
                c = todo.pop()
                inflight[self.task.remote(workload, paths, c)] = c
            ready, _ = ray.wait(list(inflight), num_returns=1)
            for ref in ready:
                c = inflight.pop(ref)
                try:
                    res = ray.get(ref)
                except Exception as e:  # RayTaskError, WorkerCrashedError: record, go on
                    res = _crashed(e)
                on_result(c, res)

    def warm(self, plan: Plan, workers: int) -> None:
        warm = self.ray.remote(num_cpus=1)(warm_up)
        self.ray.get([warm.remote(plan.spec.workload, plan.import_paths) for _ in range(workers)])

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()


def ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def make_executor(executor: str, workers: int | None, address: str | None = None):
    if executor == "local":
        return LocalExecutor(workers or os.cpu_count() or 1)
    if executor == "ray":
        if not ray_available():
            raise SweepError(f"Ray is not installed: {INSTALL_HINT}; or run with --local")
        return RayExecutor(workers, address)
    raise SweepError(f"executor {executor!r}: choose 'local' or 'ray'")


# -- the table -------------------------------------------------------------------------------


def _parse(text: str) -> Any:
    """A CSV field back to a value (for resumed rows written to Parquet)."""
    if text == "":
        return None
    if text in ("True", "False"):
        return text == "True"
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text


class Table:
    """The CSV table, appended a row at a time; a row with a new column rewrites the file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: list[dict[str, Any]] = []
        self.header: list[str] = []
        if path.exists() and path.stat().st_size:
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                self.header = list(reader.fieldnames or [])
                self.rows = [
                    {k: v if k in TEXT_COLUMNS else _parse(v) for k, v in r.items()} for r in reader
                ]

    def completed(self) -> set[str]:
        return {str(r.get("cell_id")) for r in self.rows if r.get("status") == "ok"}

    def append(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if not self.header or not set(row) <= set(self.header):
            self.header += [k for k in row if k not in self.header]
            self.rewrite(self.rows)
            return
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, self.header, restval="").writerow(row)
            f.flush()

    def rewrite(self, rows: list[dict[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, self.header, restval="")
            w.writeheader()
            w.writerows(rows)
        os.replace(tmp, self.path)
        self.rows = list(rows)


def write_parquet(rows: list[dict[str, Any]], header: list[str], path: Path) -> bool:
    """Write the table as Parquet if pyarrow is installed; columns of mixed types (an
    error's None next to numbers is fine) become strings."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return False
    columns: dict[str, list[Any]] = {}
    for name in header:
        values = [r.get(name) for r in rows]
        kinds = {type(v) for v in values if v is not None}
        if kinds == {int, float}:
            values = [None if v is None else float(v) for v in values]
        elif len(kinds) > 1:
            values = [None if v is None else str(v) for v in values]
        columns[name] = values
    pq.write_table(pa.table(columns), path)
    return True


# -- provenance ------------------------------------------------------------------------------


@functools.cache
def provenance() -> tuple[str, str]:
    """(hsaemu version, git commit of the source tree or "" if not a checkout; "+dirty"
    when it has uncommitted changes)."""
    from rocr.cli import version

    root = Path(__file__).resolve().parents[1]
    commit = ""
    try:
        rev = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if rev.returncode == 0:
            commit = rev.stdout.strip()
            dirty = subprocess.run(
                ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
                timeout=10,
            )
            if dirty.returncode == 0 and dirty.stdout.strip():
                commit += "+dirty"
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return version(), commit


# -- progress --------------------------------------------------------------------------------


class Progress(progress.Progress):
    """Cells done / failed / estimated time left (rocr.progress), a line per finished cell
    off a terminal naming the cell and its outcome."""

    def __init__(self, total: int, skipped: int, stream=None, quiet: bool = False) -> None:
        super().__init__(total, "cells", stream, quiet)
        self.skipped = skipped

    def update(self, cell: Cell, res: dict[str, Any]) -> None:
        point = " ".join(f"{k}={v}" for k, v in cell.axes.items())
        ok = res["status"] == "ok"
        what = "ok" if ok else "FAILED: " + res["error"][:120]
        self.advance(1, f"cell {cell.index} ({point}) {res['wall_s']:.1f} s {what}", ok)


# -- the sweep -------------------------------------------------------------------------------


def _row(plan: Plan, cell: Cell, res: dict[str, Any], version: str, commit: str) -> dict:
    row: dict[str, Any] = {"cell": cell.index, "preset": cell.preset}
    row.update(cell.axes)
    taken = set(row) | set(META_COLUMNS)
    for k, v in res["figures"].items():
        row[f"out.{k}" if k in taken else k] = v
    row.update(
        status=res["status"],
        error=res["error"],
        wall_s=res["wall_s"],
        hsaemu_version=version,
        git_commit=commit,
        spec_hash=plan.spec_hash,
        cell_id=cell.cell_id,
    )
    return row


def table_paths(out: Path) -> tuple[Path, Path]:
    """(csv, parquet) for an --out path ending in either."""
    if out.suffix == ".parquet":
        return out.with_suffix(".csv"), out
    return out, out.with_suffix(".parquet")


def run_sweep(
    plan: Plan,
    executor: str = "local",
    workers: int | None = None,
    address: str | None = None,
    out: str | os.PathLike | None = None,
    plot: bool = False,
    progress: bool = True,
    cells: Iterable[int] | None = None,
) -> SweepResult:
    """Run every cell of the plan that the table does not hold yet; return the table."""
    csv_path, parquet_path = table_paths(Path(out) if out is not None else plan.out)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    table = Table(csv_path)
    done = table.completed()
    chosen = plan.cells if cells is None else [plan.cells[i] for i in cells]
    todo = [c for c in chosen if c.cell_id not in done]
    version, commit = provenance()
    result = SweepResult(rows=[], skipped=len(chosen) - len(todo), csv_path=csv_path)
    bar = Progress(len(todo), result.skipped, quiet=not progress)
    t0 = time.perf_counter()

    def on_result(cell: Cell, res: dict[str, Any]) -> None:
        table.append(_row(plan, cell, res, version, commit))
        bar.update(cell, res)

    ex = make_executor(executor, workers, address) if todo else None
    try:
        if ex is not None:
            ex.run(plan, todo, on_result)
    finally:
        bar.close()
        if ex is not None:
            ex.close()
        result.ran = bar.done + bar.failed
        result.failed = bar.failed
        result.wall_s = time.perf_counter() - t0
        # The finished table: the newest row of each cell of this grid in grid order, then
        # rows of cells this spec no longer names (kept: they are someone's results).
        latest: dict[str, dict] = {}
        for r in table.rows:
            latest[str(r.get("cell_id"))] = r
        ids = [c.cell_id for c in plan.cells]
        grid = [latest[i] for i in ids if i in latest]
        others = [r for k, r in latest.items() if k not in set(ids)]
        if table.header:
            table.rewrite(grid + others)
        chosen_ids = {c.cell_id for c in chosen}
        result.rows = [r for r in grid if r["cell_id"] in chosen_ids]
        if table.header and write_parquet(table.rows, table.header, parquet_path):
            result.parquet_path = parquet_path
    if plot:
        result.plots = plot_results(plan, result.rows, csv_path)
    return result


def measure_speedup(
    plan: Plan, k: int, executor: str, workers: int, address: str | None = None
) -> dict[str, Any]:
    """Run the first k cells with 1 worker, then with `workers`: wall times, speed-up, and
    whether the figures agree (they must: each cell is deterministic for its seed)."""
    cells = plan.cells[: max(1, k)]
    ex = make_executor(executor, workers, address)
    figures: list[dict[int, Any]] = []
    times = []
    try:
        for n in (1, workers):
            got: dict[int, Any] = {}
            ex.warm(plan, n)
            t0 = time.perf_counter()
            ex.run(plan, cells, lambda c, r, got=got: got.__setitem__(c.index, r), workers=n)
            times.append(time.perf_counter() - t0)
            figures.append({i: (r["status"], r["figures"]) for i, r in got.items()})
    finally:
        ex.close()
    return {
        "cells": len(cells),
        "workers": workers,
        "t1_s": times[0],
        "tn_s": times[1],
        "speedup": times[0] / times[1] if times[1] else float("inf"),
        "identical": figures[0] == figures[1],
    }


# -- plots -----------------------------------------------------------------------------------

MAX_PANELS = 12  # subplots per figure file; more combinations of the other axes are cut


def _numeric(values: list[Any]) -> bool:
    return bool(values) and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in values
    )


def _choose_axes(plan: Plan) -> tuple[list[str], str | None, str | None, list[str]]:
    """(axes with more than one value, the x axis, the lines axis, the heatmap pair)."""
    varied = [
        n
        for n in plan.axis_names
        if n != "seed" and len({_canonical(c.axes[n]) for c in plan.cells}) > 1
    ]
    values = {n: [c.axes[n] for c in plan.cells] for n in varied}
    ps = plan.spec.plot
    x = ps.x
    if x is None:
        x = next((n for n in varied if "queue" in n and _numeric(values[n])), None)
        x = x or next((n for n in varied if _numeric(values[n])), None)
    lines = ps.lines
    if lines is None:
        lines = next((n for n in varied if "policy" in n and n != x), None)
        lines = lines or next((n for n in varied if n != x and not _numeric(values[n])), None)
    pair = list(ps.heatmap) if len(ps.heatmap) == 2 else varied[-2:]
    for n in [x, lines, *pair]:
        if n is not None and n not in plan.axis_names:
            raise SweepError(f"plot: {n!r} is not an axis; axes: {', '.join(plan.axis_names)}")
    return varied, x, lines, pair if len(pair) == 2 else []


def _mean(rows: list[dict], fig: str) -> float | None:
    vals = [r[fig] for r in rows if _numeric([r.get(fig)])]
    return sum(vals) / len(vals) if vals else None


def _groups(rows: list[dict], names: list[str]) -> dict[tuple, list[dict]]:
    out: dict[tuple, list[dict]] = {}
    for r in rows:
        out.setdefault(tuple(r.get(n) for n in names), []).append(r)
    return out


def _order(values: Iterable[Any]) -> list[Any]:
    vals = list(dict.fromkeys(values))
    return sorted(vals) if _numeric(vals) else vals


def plot_results(plan: Plan, rows: list[dict], csv_path: Path) -> list[Path]:
    """The standard figures for the sweep's axes, as PNG files next to the table: a line per
    policy against queue count (or the first numeric axis), and heatmaps over two axes; one
    panel per combination of the other axes, seeds averaged."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("--plot needs matplotlib: pip install -e '.[plot]'", file=sys.stderr)
        return []
    ok = [r for r in rows if r.get("status") == "ok"]
    if not ok:
        return []
    varied, x, lines, pair = _choose_axes(plan)
    skip = {"cell", "preset", "seed", *plan.axis_names, *META_COLUMNS}
    figs = plan.spec.plot.figures or [
        k for k in ok[0] if k not in skip and _numeric([r.get(k) for r in ok])
    ]
    outdir = csv_path.with_name(csv_path.stem + "_plots")
    outdir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def panels(rest: list[str]) -> list[tuple[tuple, list[dict]]]:
        return list(_groups(ok, rest).items())[:MAX_PANELS]

    def save(fig, name: str) -> None:
        path = outdir / f"{name}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)

    def title(rest: list[str], key: tuple) -> str:
        return ", ".join(f"{n}={v}" for n, v in zip(rest, key, strict=True)) or plan.spec.name

    for figname in figs:
        if x is not None:
            rest = [n for n in varied if n not in (x, lines)]
            groups = panels(rest)
            fig, axs = plt.subplots(1, len(groups), figsize=(5 * len(groups), 4), squeeze=False)
            for ax, (key, rs) in zip(axs[0], groups, strict=False):
                by_line = _groups(rs, [lines]) if lines else {(None,): rs}
                for (lv,), lrs in by_line.items():
                    xs = _order(r[x] for r in lrs)
                    ys = [_mean([r for r in lrs if r[x] == xv], figname) for xv in xs]
                    ax.plot(xs, ys, marker="o", label=str(lv) if lines else figname)
                if _numeric(xs) and min(xs) > 0 and max(xs) / min(xs) >= 8:
                    ax.set_xscale("log", base=2)
                ax.set_xlabel(x)
                ax.set_ylabel(figname)
                ax.set_title(title(rest, key), fontsize=9)
                ax.legend(fontsize=8, title=lines)
            save(fig, f"{figname}_vs_{x}")
        if pair:
            a, b = pair
            rest = [n for n in varied if n not in pair]
            groups = panels(rest)
            fig, axs = plt.subplots(1, len(groups), figsize=(5 * len(groups), 4), squeeze=False)
            for ax, (key, rs) in zip(axs[0], groups, strict=False):
                av, bv = _order(r[a] for r in rs), _order(r[b] for r in rs)
                grid = [
                    [_mean([r for r in rs if r[a] == i and r[b] == j], figname) for j in bv]
                    for i in av
                ]
                z = [[float("nan") if v is None else v for v in row] for row in grid]
                im = ax.imshow(z, aspect="auto", origin="lower", cmap="viridis")
                ax.set_xticks(range(len(bv)), [str(v) for v in bv], fontsize=8)
                ax.set_yticks(range(len(av)), [str(v) for v in av], fontsize=8)
                ax.set_xlabel(b)
                ax.set_ylabel(a)
                ax.set_title(title(rest, key), fontsize=9)
                fig.colorbar(im, ax=ax, label=figname)
            save(fig, f"{figname}_{a}_x_{b}")
    return written
