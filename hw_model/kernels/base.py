"""Built-in kernels: their declaration, code-object encoding and the workgroup context.

A built-in kernel stands where a compiled AMDGPU kernel would: it has the metadata a code
object's `amdhsa.kernels` note carries (`.name`, `.kernarg_segment_size`, `.args` with
`.offset/.size/.value_kind`, `.vgpr_count`, `.sgpr_count`, segment sizes), a cost profile for
the CU timing model, and a Python body that runs a batch of workgroups (a whole grid, or as
many as the GPU holds at once) vectorized with numpy over a `GridContext`.

Its "machine code" is a 64-byte entry token that the loader writes into device memory at the
kernel's code entry; the CU reads that token from memory, exactly where it would fetch the
first instruction, and runs the body it names. Anything else at the entry is an illegal
instruction.
"""

from __future__ import annotations

import functools
import json
import struct
from collections.abc import Callable
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

ENTRY_MAGIC = b"HSAEMU\x00\x01"  # first 8 bytes of a built-in entry token
ENTRY_TOKEN_SIZE = 64
CODE_OBJECT_MAGIC = b"\x7fHSAEMU-CO\x00"  # a built-in code object (not an ELF)

ArgKind = Literal["global_buffer", "by_value"]
ArgType = Literal["ptr", "u32", "i32", "u64", "i64", "f32", "f64"]

_ARG_FMT = {
    "ptr": "<Q",
    "u32": "<I",
    "i32": "<i",
    "u64": "<Q",
    "i64": "<q",
    "f32": "<f",
    "f64": "<d",
    # Narrow scalars compiled kernels may take by value (code object `.args` sizes 1 and 2).
    "u8": "<B",
    "i8": "<b",
    "u16": "<H",
    "i16": "<h",
    "f16": "<e",
}
_ARG_SIZE = {"ptr": 8, "u32": 4, "i32": 4, "u64": 8, "i64": 8, "f32": 4, "f64": 8}


class KernelArg(BaseModel):
    """One kernel argument, as in the code object metadata's `.args` list."""

    model_config = ConfigDict(frozen=True)
    name: str
    type: ArgType
    offset: int
    size: int

    @property
    def value_kind(self) -> ArgKind:
        return "global_buffer" if self.type == "ptr" else "by_value"


class CostProfile(BaseModel):
    """Work of one wavefront, for the CU timing model (docs/timing.md).

    Counts are wave instructions (one VALU op covers all 64 lanes, masked lanes included);
    bytes are per work-item, so a partial workgroup at the grid's edge moves fewer bytes.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    valu: int = Field(0, ge=0)  # vector ALU instructions per wave
    salu: int = Field(0, ge=0)  # scalar ALU instructions (and branches) per wave
    lds: int = Field(0, ge=0)  # LDS instructions per wave (dword per lane)
    vmem: int = Field(0, ge=0)  # global load/store instructions per wave
    mem_rounds: int = Field(0, ge=0)  # dependent global-memory round trips per wave
    load_bytes: int = Field(0, ge=0)  # global bytes read per work-item
    store_bytes: int = Field(0, ge=0)  # global bytes written per work-item
    # Of load_bytes + store_bytes, those in host (system) memory: they cross the host link.
    # Compiled kernels report it from the BOs their lanes touched; built-ins leave it 0 and
    # declare `KernelSpec.streams` instead.
    host_bytes: int = Field(0, ge=0)


class KernelSpec(BaseModel):
    """Declaration of a built-in kernel (what a compiler and its metadata would give)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)
    name: str
    args: tuple[KernelArg, ...]
    kernarg_size: int
    vgprs: int = Field(gt=0)
    sgprs: int = Field(gt=0)
    group_segment_size: int = 0
    private_segment_size: int = 0
    max_flat_workgroup_size: int = 1024
    cost: CostProfile
    # Its effect on memory, run over a batch of workgroups at once (`GridContext`). None for
    # a kernel that has none, whose waves only end (the empty kernel's `s_endpgm`): there is
    # nothing to run, on a functional GPU too (`hw_model.execution.NO_CODE`).
    body: Callable[[GridContext], None] | None = Field(exclude=True)
    # A real kernel's run time may depend on its arguments (a loop count); its resources never
    # do, they are fixed in the code object. `cost_fn(kernarg) -> CostProfile` says how.
    cost_fn: Callable[[bytes], CostProfile] | None = Field(default=None, exclude=True)
    # Where the cost profile's bytes go: (pointer argument, bytes per work-item) for each
    # stream. A kernel that declares its streams has each charged where that buffer lives
    # (host memory over the host link, VRAM at the memory bandwidth); without them all its
    # bytes are charged to the GPU's memory.
    streams: tuple[tuple[str, int], ...] = Field(default=(), exclude=True)

    def cost_for(self, kernarg: bytes) -> CostProfile:
        """The cost profile of one dispatch with these kernarg bytes."""
        if self.cost_fn is None or len(kernarg) < self.kernarg_size:
            return self.cost
        return self.cost_fn(kernarg)

    def metadata(self) -> dict:
        """The kernel's entry in an `amdhsa.kernels` metadata list."""
        return {
            ".name": self.name,
            ".symbol": f"{self.name}.kd",
            ".kernarg_segment_size": self.kernarg_size,
            ".kernarg_segment_align": 8,
            ".group_segment_fixed_size": self.group_segment_size,
            ".private_segment_fixed_size": self.private_segment_size,
            ".vgpr_count": self.vgprs,
            ".sgpr_count": self.sgprs,
            ".wavefront_size": 64,
            ".max_flat_workgroup_size": self.max_flat_workgroup_size,
            ".args": [
                {
                    ".name": a.name,
                    ".offset": a.offset,
                    ".size": a.size,
                    ".value_kind": a.value_kind,
                    ".type": a.type,
                    **({".address_space": "global"} if a.type == "ptr" else {}),
                }
                for a in self.args
            ],
            ".hsaemu_cost": self.cost.model_dump(),
        }

    def entry_token(self) -> bytes:
        name = self.name.encode()
        if len(name) > ENTRY_TOKEN_SIZE - len(ENTRY_MAGIC) - 1:
            raise ValueError(f"kernel name {self.name!r} too long for an entry token")
        return (ENTRY_MAGIC + name).ljust(ENTRY_TOKEN_SIZE, b"\x00")


def layout_args(*specs: tuple[str, ArgType]) -> tuple[tuple[KernelArg, ...], int]:
    """C-style kernarg layout: each argument at its natural alignment; size rounded to 8."""
    off = 0
    out = []
    for name, t in specs:
        size = _ARG_SIZE[t]
        off = -(-off // size) * size
        out.append(KernelArg(name=name, type=t, offset=off, size=size))
        off += size
    return tuple(out), max(-(-off // 8) * 8, 0)


def pack_args(args: tuple[KernelArg, ...], kernarg_size: int, values: tuple) -> bytes:
    if len(values) != len(args):
        names = ", ".join(f"{a.name}: {a.type}" for a in args)
        raise TypeError(f"kernel takes {len(args)} arguments ({names}), got {len(values)}")
    buf = bytearray(kernarg_size)
    for a, v in zip(args, values, strict=True):
        if isinstance(v, bytes):  # a by-value aggregate, already in its declared size
            buf[a.offset : a.offset + len(v)] = v
            continue
        if a.type == "ptr" and not isinstance(v, int):
            v = int(getattr(v, "address", v))
        struct.pack_into(_ARG_FMT[a.type], buf, a.offset, v)
    return bytes(buf)


def parse_entry_token(token: bytes) -> str | None:
    """The kernel name an entry token names, or None when it is not a built-in entry."""
    if token[: len(ENTRY_MAGIC)] != ENTRY_MAGIC:
        return None
    return token[len(ENTRY_MAGIC) :].split(b"\x00", 1)[0].decode(errors="replace")


def encode_code_object(kernels: list[KernelSpec], target: str = "gfx900") -> bytes:
    """A built-in code object: magic, then JSON metadata shaped like the msgpack note."""
    meta = {
        "amdhsa.version": [1, 1],
        "amdhsa.target": f"amdgcn-amd-amdhsa--{target}",
        "amdhsa.kernels": [k.metadata() for k in kernels],
    }
    return CODE_OBJECT_MAGIC + json.dumps(meta, sort_keys=True).encode()


def decode_code_object(blob: bytes) -> dict:
    if not blob.startswith(CODE_OBJECT_MAGIC):
        raise ValueError("not an hsaemu built-in code object (bad magic)")
    return json.loads(blob[len(CODE_OBJECT_MAGIC) :])


@functools.lru_cache(maxsize=64)
def _local_ids(nx: int, ny: int, nz: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Local x, y, z ids of an nx*ny*nz workgroup in linear order (x fastest), read-only:
    every workgroup of a dispatch shares them."""
    k = np.arange(nx * ny * nz, dtype=np.int64)
    ids = (k % nx, (k // nx) % ny, k // (nx * ny))
    for a in ids:
        a.flags.writeable = False
    return ids


class GridContext:
    """What the workgroups [first, first + count) of a dispatch see while they run: their
    work-items' ids, the kernargs and checked memory.

    A body runs once over the whole batch, vectorized with numpy; a batch of one workgroup is
    what one workgroup sees. Work-item ids are numpy arrays over the batch's work-items,
    workgroup by workgroup in linear order (x fastest), each workgroup's items in local linear
    order; a partial workgroup at the grid's edge has only the items inside the grid (HSA lets
    the grid end mid-workgroup). When those ids are one contiguous run of global linear ids
    (a 1-D grid, or rows the batch covers whole), `linear_range` gives it as (lo, hi) so a
    body can use slices instead of gathers; else it is None.

    Every load and store goes through `view`, which asks the memory model for exactly the
    bytes touched, so a bad pointer faults as on hardware. A body takes every view it needs
    before it stores through any (all built-ins do): then a fault leaves memory untouched,
    and the dispatcher can rerun the batch one workgroup at a time to find which one faults.
    """

    # Worked out on first use, class defaults until then (a body that never asks pays
    # nothing, not even their stores): the ids over the batch (`_build`), and `linear_range`
    # (False: not worked out yet).
    _ids: tuple | None = None
    _lr: tuple[int, int] | None | bool = False

    def __init__(
        self,
        kernarg: bytes,
        workgroup_size: tuple[int, int, int],
        grid_size: tuple[int, int, int],
        first: int,
        count: int,
        view: Callable[[int, int], np.ndarray],
    ) -> None:
        self.kernarg = kernarg
        self.workgroup_size = workgroup_size
        self.grid_size = grid_size
        self.first = first
        self.count = count
        self.view = view

    @property
    def linear_range(self) -> tuple[int, int] | None:
        """(lo, hi) of the batch's global linear ids when they are one contiguous run,
        else None; worked out on first use (a body that never asks pays nothing)."""
        lr = self._lr
        if lr is not False:
            return lr  # type: ignore[return-value]
        wx, wy, wz = self.workgroup_size
        gx, gy, gz = self.grid_size
        first = self.first
        end = first + self.count
        lr = None
        if gy == 1 and gz == 1:  # 1-D: consecutive workgroups hold consecutive items
            lr = (first * wx, min(end * wx, gx))
        elif wx >= gx and (wz == 1 or wy >= gy):
            # Each workgroup holds whole rows (and whole planes when it spans more than
            # one): consecutive workgroups hold consecutive items again.
            ny = -(-gy // wy)
            by, bz = first % ny, first // ny
            lo = bz * wz * gx * gy + by * wy * gx
            by, bz = (end - 1) % ny, (end - 1) // ny
            y_last, z_last = min((by + 1) * wy, gy) - 1, min((bz + 1) * wz, gz) - 1
            lr = (lo, z_last * gx * gy + y_last * gx + gx)
        self._lr = lr
        return lr

    def _build(self) -> tuple:
        """(global x, y, z ids, local x, y, z ids, group x, y, z ids) over the batch."""
        if self._ids is None:
            wx, wy, wz = self.workgroup_size
            gx, gy, gz = self.grid_size
            nx, ny = -(-gx // wx), -(-gy // wy)
            w = np.arange(self.first, self.first + self.count, dtype=np.int64)[:, None]
            bx, by, bz = w % nx, (w // nx) % ny, w // (nx * ny)
            lx, ly, lz = _local_ids(wx, wy, wz)
            x, y, z = bx * wx + lx, by * wy + ly, bz * wz + lz
            keep = (x < gx) & (y < gy) & (z < gz)
            shape = x.shape
            out = [x, y, z, *(np.broadcast_to(a, shape) for a in (lx, ly, lz))]
            out += [np.broadcast_to(a, shape) for a in (bx, by, bz)]
            self._ids = tuple(a[keep] for a in out)
        return self._ids

    @property
    def global_linear_id(self) -> np.ndarray:
        lr = self.linear_range
        if lr is not None:
            return np.arange(lr[0], lr[1], dtype=np.int64)
        x, y, z = self._build()[:3]
        gx, gy, _ = self.grid_size
        return z * (gx * gy) + y * gx + x

    @property
    def global_id(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self._build()[:3]

    @property
    def local_id(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self._build()[3:6]

    @property
    def group_id(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each work-item's workgroup id (x, y, z)."""
        return self._build()[6:9]

    def arg(self, a: KernelArg) -> int | float:
        return struct.unpack_from(_ARG_FMT[a.type], self.kernarg, a.offset)[0]

    def array(self, address: int, dtype: type, first: int, count: int) -> np.ndarray:
        """Elements [first, first+count) of the array at `address`, as a writable view."""
        item = np.dtype(dtype).itemsize
        if count <= 0:
            return np.empty(0, dtype=dtype)
        raw = self.view(address + first * item, count * item)
        return raw.view(dtype)


# What the bodies were first written against: one workgroup's context is a batch of one.
WorkgroupContext = GridContext


KernelSpec.model_rebuild()
