"""Checkpoints of emulated machines: a whole runtime to a file and back (`rt.checkpoint`,
`rocr.restore`; `hsaemu serve --state DIR` keeps its systems with them).

A checkpoint is the complete object graph — the runtime, the thunk, the emulated KFD, the
hardware model with its engine's pending events, memory contents, queues, signals, loaded code
objects, the trace — pickled with a pickler that also takes what plain pickle refuses: the
closures and lambdas the layers register as callbacks (their code by `marshal`, their cells by
value) and locks (made afresh). Restoring gives the same machine: buffers at the same virtual
addresses, the same signal handles and values, queue rings and indices, the same simulated
time, and work the engine had queued carries on. Nothing is replayed, so nothing a layer does
at creation time can come out different.

What a checkpoint cannot hold: a request in progress (a wait or a run is a frame in a server
thread; it ends with the process, and the client gets an error or a dropped connection), and
whatever happened after it was taken. A `kill -9` of `hsaemu serve --state DIR` loses each
system's work since its last checkpoint (at most `checkpoint_s` plus one checkpoint's time).

A checkpoint file is a pickle: loading it runs the code it names. Load only checkpoints the
same server (or you) wrote; `hsaemu serve --state DIR` makes DIR and its files readable by its
own user only. Checkpoints belong to this version of hsaemu: loading one written by another
version fails with a message (`CheckpointError`), as its classes may differ.
"""

from __future__ import annotations

import importlib
import io
import logging
import marshal
import os
import pickle
import sys
import threading
import types
import weakref
from pathlib import Path
from typing import Any

import numpy as np

import rocr
from rocr.errors import HsaError
from rocr.status import Status

log = logging.getLogger("hsaemu.checkpoint")

MAGIC = b"hsaemu-checkpoint\n"
FORMAT = 4  # bumped when what a checkpoint holds changes
SUFFIX = ".ckpt"
# The object graph is deep (engine event heaps, linked trace rings): pickle recurses per level.
RECURSION_LIMIT = 100_000

_LOCK_TYPES = (type(threading.Lock()), type(threading.RLock()))


class CheckpointError(HsaError):
    """A checkpoint that cannot be written or read; the message names the file and why. An
    HsaError, HSA_STATUS_ERROR_INVALID_FILE by default (what ROCr's
    hsa_code_object_reader_create_from_file answers for a file it cannot use)."""

    def __init__(self, message: str, status: Status = Status.ERROR_INVALID_FILE) -> None:
        super().__init__(status, message)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hsaemu")
    except PackageNotFoundError:  # running from a source tree
        return "source"


def _make_function(
    code: bytes,
    module: str,
    name: str,
    qualname: str,
    defaults: tuple[Any, ...] | None,
    kwdefaults: dict[str, Any] | None,
    closure: tuple[types.CellType, ...] | None,
) -> types.FunctionType:
    mod = sys.modules.get(module) or importlib.import_module(module)
    fn = types.FunctionType(marshal.loads(code), mod.__dict__, name, defaults, closure)
    fn.__kwdefaults__ = kwdefaults
    fn.__qualname__ = qualname
    return fn


def _empty_cell() -> types.CellType:
    return types.CellType()


def _fill_cell(cell: types.CellType, state: tuple[Any]) -> None:
    cell.cell_contents = state[0]


def _nothing() -> None:
    return None


def _new_lock(kind: int) -> Any:
    return threading.RLock() if kind else threading.Lock()


def _view_of(
    base: np.ndarray, offset: int, dtype: np.dtype, shape: tuple[int, ...], strides: Any
) -> np.ndarray:
    return np.ndarray(shape, dtype, buffer=base, offset=offset, strides=strides)


class _Pickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        kind = type(obj)
        if kind is np.ndarray and isinstance(obj.base, np.ndarray):
            # A view (a signal's value word, a buffer in its BO) must stay a view of the same
            # memory, not become a copy: saved as its base (pickled once) and where it lies.
            base = obj.base
            if base.flags.c_contiguous and base.base is None:
                start = base.__array_interface__["data"][0]
                offset = obj.__array_interface__["data"][0] - start
                if 0 <= offset <= base.nbytes and all(st >= 0 for st in obj.strides):
                    return (_view_of, (base, offset, obj.dtype, obj.shape, obj.strides))
        if kind is types.FunctionType and (
            "<locals>" in obj.__qualname__ or obj.__name__ == "<lambda>"
        ):
            return (
                _make_function,
                (
                    marshal.dumps(obj.__code__),
                    obj.__module__,
                    obj.__name__,
                    obj.__qualname__,
                    obj.__defaults__,
                    obj.__kwdefaults__,
                    obj.__closure__,
                ),
            )
        if kind is types.CellType:
            # An empty cell first, filled afterwards: a closure may refer to itself.
            try:
                contents = obj.cell_contents
            except ValueError:
                return (_empty_cell, ())
            return (_empty_cell, (), (contents,), None, None, _fill_cell)
        if kind is weakref.finalize:
            # A dispatch handle's completion-signal recycler: a restored handle keeps its
            # signal (as after detach_signal()) rather than fail the checkpoint.
            return (_nothing, ())
        if kind in _LOCK_TYPES:
            return (_new_lock, (int(kind is _LOCK_TYPES[1]),))
        return NotImplemented


def dumps(obj: Any) -> bytes:
    """The checkpoint bytes of `obj` (a runtime, or a dict holding one)."""
    out = io.BytesIO()
    out.write(MAGIC)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, RECURSION_LIMIT))
    try:
        _Pickler(out, protocol=pickle.HIGHEST_PROTOCOL).dump(
            {"format": FORMAT, "version": _version(), "payload": obj}
        )
    except (pickle.PicklingError, TypeError, AttributeError) as e:
        raise CheckpointError(f"cannot checkpoint: {type(e).__name__}: {e}", Status.ERROR) from None
    finally:
        sys.setrecursionlimit(limit)
    return out.getvalue()


def loads(data: bytes, where: str = "checkpoint") -> Any:
    """What `dumps` wrote; CheckpointError naming `where` for anything else."""
    if not data.startswith(MAGIC):
        raise CheckpointError(f"{where} is not an hsaemu checkpoint")
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, RECURSION_LIMIT))
    try:
        record = pickle.loads(data[len(MAGIC) :])
    except Exception as e:
        raise CheckpointError(f"{where} cannot be read: {type(e).__name__}: {e}") from None
    finally:
        sys.setrecursionlimit(limit)
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise CheckpointError(
            f"{where} has checkpoint format "
            f"{record.get('format') if isinstance(record, dict) else None!r}; "
            f"this hsaemu reads format {FORMAT}"
        )
    if record.get("version") != _version():
        raise CheckpointError(
            f"{where} was written by hsaemu {record.get('version')}; this is {_version()}"
        )
    return record["payload"]


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` so a crash leaves the old file or the new one, never half."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# -- the Python API ------------------------------------------------------------------------------


def _path(path: Any) -> Path:
    if not isinstance(path, str | os.PathLike) or not str(path):
        raise HsaError(
            Status.ERROR_INVALID_ARGUMENT,
            f"path {path!r} is not a file name (give a str or a pathlib.Path)",
        )
    return Path(path)


def checkpoint(rt: rocr.Runtime, path: str | os.PathLike[str], **extra: Any) -> int:
    """Write runtime `rt` — its whole machine — to `path`; returns the bytes written. `extra`
    objects (buffers, queues, signals of `rt`, ...) are saved with it and come back from
    `restore` as the same objects of the restored runtime. Call it between operations (not
    from a callback of the runtime). `rt.checkpoint(path, **extra)` is the same."""
    if not isinstance(rt, rocr.Runtime):
        raise HsaError(
            Status.ERROR_INVALID_ARGUMENT,
            f"rt is a {type(rt).__name__}; only a local runtime (rocr.init) is checkpointed "
            "here (a served system is checkpointed by hsaemu serve --state DIR)",
        )
    p = _path(path)
    rt._check()
    data = dumps({"runtime": rt, "extra": extra})
    try:
        write_atomic(p, data)
    except OSError as e:
        raise CheckpointError(f"checkpoint {p}: {e.strerror or e}") from None
    return len(data)


def restore(path: str | os.PathLike[str]) -> tuple[rocr.Runtime, dict[str, Any]]:
    """The runtime a `checkpoint` wrote, running from where it was, and its `extra` objects
    (`rocr.restore(path)` is the same). The checkpoint's original runtime may still run: the
    restored one is a copy of its machine, with its own memory, queues and clock."""
    p = _path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise CheckpointError(f"{p}: {e.strerror or e}") from None
    record = loads(data, str(p))
    if not isinstance(record, dict) or not isinstance(record.get("runtime"), rocr.Runtime):
        raise CheckpointError(f"{p} holds no runtime")
    return record["runtime"], record["extra"]
