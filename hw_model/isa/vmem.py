"""Vector memory instructions of gfx9: FLAT, GLOBAL, SCRATCH and MUBUF loads, stores, atomics.

Each lane that EXEC enables computes an address and moves bytes; loads write their VGPRs only
in those lanes. Where the bytes live (AMD "Vega" ISA guide ch. 9 "Vector Memory Operations"
and ch. 10 "Flat Memory Instructions"; the MI200/MI300 guides keep them):

- GLOBAL: a 64-bit virtual address, either a VGPR pair, or an SGPR pair (`saddr`) plus a
  32-bit VGPR offset; plus the instruction's 13-bit signed offset. Through the process's GPU
  page tables and the GPU's L2 (`Memory.lane_gather` / `lane_scatter` / `lane_atomic`, which
  check every lane as `Memory.shader_view` checks one access: an unmapped lane is a VM fault).
- FLAT: a VGPR-pair address plus a 12-bit unsigned offset, routed per lane by aperture
  (kfd_flat_memory.c): inside the shared (LDS) aperture to the workgroup's LDS, inside the
  private aperture to the lane's private memory, anything else to global memory.
- SCRATCH: a per-lane offset into the lane's private memory: on gfx900/gfx90a the SGPR
  `saddr` if given, else the VGPR `addr`; on gfx942 either or both (the SVE bit says whether
  the VGPR takes part); plus the 13-bit signed offset.
- MUBUF: a 128-bit buffer resource (V#) in four SGPRs. A V# with ADD_TID_ENABLE is the
  private segment buffer (the only such V# the runtime builds: ROCr
  AqlQueue::FillBufRsrcWord1/3 — SWIZZLE_ENABLE, ELEMENT_SIZE 4, INDEX_STRIDE 64,
  ADD_TID_ENABLE); its accesses go to per-lane private memory (see "private-segment V#"
  below).
  Any other V# addresses global memory, range-checked as the Vega guide's "Range checking"
  says (out-of-range loads read 0, stores and atomics are dropped).

Private memory is `ctx.private[wave, lane, p]`: byte p of a lane's private segment, the
unswizzled form of the swizzled scratch the hardware keeps (AMDGPUUsage "Private Segment
Buffer"). A private access beyond the segment the kernel declared is reported as a
MemoryFault at the flat private-aperture address of that byte (on hardware it would read or
clobber another wave's scratch or run off the scratch allocation).

Memory faults carry `.wave` (index of the faulting wave in the batch) and `.lane`; nothing is
written by an instruction that faults. Every instruction adds the bytes its active lanes move
to `ctx.load_bytes` / `ctx.store_bytes` of each wave (an atomic: its data as stored, and as
loaded when it returns the pre-op value), and the part of them whose lanes reached host
(system) memory to `ctx.host_bytes`: those cross the host link (docs/isa.md, "Timing").
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from hw_model.isa.opcodes import ROWS
from hw_model.isa.wave import LANES, IllegalInstruction, WaveContext
from hw_model.memory import MemKind, MemoryFault, put_bytes, take_bytes

SADDR_OFF = 0x7F  # FLAT-family `saddr` field: no SGPR base ("off")

# ---------------------------------------------------------------------------------------
# Atomic operations, in the value domain (shared with lds.py)


@dataclass(frozen=True)
class AtomicOp:
    """`kind`: how the bytes are read ("u" unsigned, "i" signed, "f" float, "h" packed f16).
    `assoc`: an associative combine (new = assoc(old, src)) — lanes on one address are then
    folded with a prefix scan; otherwise `fn(old, src, cmp)` is applied one lane at a time."""

    kind: str
    assoc: Callable | None = None
    fn: Callable | None = None
    pre: Callable | None = None  # transform of src before combining (sub: negate)

    def apply(self, old, src, cmp):
        return self.assoc(old, src) if self.assoc is not None else self.fn(old, src, cmp)


def _pk_add_f16(a, b):
    return (a.view(np.float16) + b.view(np.float16)).view(a.dtype)


def _last(_a, b):
    return b


# Vega ISA guide ch. 12 opcode descriptions (FLAT_ATOMIC_*, BUFFER_ATOMIC_*, DS_*); for the
# two-operand ones `src` is DATA (DS: DATA1) and `cmp` is the compare value / mask (DS: DATA0).
ATOMIC_OPS: dict[str, AtomicOp] = {
    "add": AtomicOp("u", assoc=np.add),
    "sub": AtomicOp("u", assoc=np.add, pre=np.negative),
    "rsub": AtomicOp("u", fn=lambda o, s, c: s - o),
    "swap": AtomicOp("u", assoc=_last),
    "cmpswap": AtomicOp("u", fn=lambda o, s, c: np.where(o == c, s, o)),
    "smin": AtomicOp("i", assoc=np.minimum),
    "smax": AtomicOp("i", assoc=np.maximum),
    "umin": AtomicOp("u", assoc=np.minimum),
    "umax": AtomicOp("u", assoc=np.maximum),
    "and": AtomicOp("u", assoc=np.bitwise_and),
    "or": AtomicOp("u", assoc=np.bitwise_or),
    "xor": AtomicOp("u", assoc=np.bitwise_xor),
    # INC: tmp >= DATA ? 0 : tmp + 1; DEC: (tmp == 0 || tmp > DATA) ? DATA : tmp - 1.
    "inc": AtomicOp("u", fn=lambda o, s, c: np.where(o >= s, 0, o + 1).astype(o.dtype)),
    "dec": AtomicOp("u", fn=lambda o, s, c: np.where((o == 0) | (o > s), s, o - 1)),
    "mskor": AtomicOp("u", fn=lambda o, s, c: (o & ~c) | s),  # DS_MSKOR: (tmp & ~DATA) | DATA2
    "wrap": AtomicOp("u", fn=lambda o, s, c: np.where(o >= c, o - c, o + s)),  # DS_WRAP_RTN
    "fadd": AtomicOp("f", assoc=np.add),
    "fmin": AtomicOp("f", assoc=np.fmin),
    "fmax": AtomicOp("f", assoc=np.fmax),
    "fcmpswap": AtomicOp("f", fn=lambda o, s, c: np.where(o == c, s, o)),
    "pk_fadd_f16": AtomicOp("h", assoc=_pk_add_f16),
}

_DTYPES = {
    ("u", 4): np.uint32,
    ("u", 8): np.uint64,
    ("i", 4): np.int32,
    ("i", 8): np.int64,
    ("f", 4): np.float32,
    ("f", 8): np.float64,
    ("h", 4): np.uint32,
}


def atomic_dtype(op: AtomicOp, size: int) -> np.dtype:
    return np.dtype(_DTYPES[(op.kind, size)]).newbyteorder("<")


def _typed(b: np.ndarray, dtype) -> np.ndarray:
    """(n, size) uint8 -> (n,) of dtype."""
    return np.ascontiguousarray(b).view(dtype).reshape(-1)


def combine(
    op: AtomicOp,
    size: int,
    initial: np.ndarray,
    inverse: np.ndarray,
    src: np.ndarray,
    cmp: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Apply lanes' atomics to u distinct addresses, in lane order per address.

    `initial` (u, size) bytes at the addresses; `inverse` (n,) each lane's address index;
    `src`/`cmp` (n, size) bytes per lane. Returns (pre-op bytes per lane, final bytes).
    Associative ops fold all lanes of an address with a segmented prefix scan (log2 of the
    most lanes on one address numpy steps); the others go round by round (round r applies
    every address's r-th lane)."""
    dt = atomic_dtype(op, size)
    init = _typed(initial, dt)
    s = _typed(src, dt)
    c = _typed(cmp, dt) if cmp is not None else None
    n, u = inverse.size, init.size
    with np.errstate(all="ignore"):
        if op.pre is not None:
            s = op.pre(s)
        if n == u:  # distinct addresses: one step
            old = init[inverse]
            final = init.copy()
            final[inverse] = op.apply(old, s, c)
            return old.view(np.uint8).reshape(n, size), final.view(np.uint8).reshape(u, size)
        counts = np.bincount(inverse, minlength=u)
        order = np.argsort(inverse, kind="stable")
        g = inverse[order]
        starts = np.cumsum(counts) - counts
        pos = np.arange(n) - starts[g]  # rank of each (sorted) lane on its address
        most = int(counts.max())
        if op.assoc is not None:
            x = s[order]
            d = 1
            while d < most:  # Hillis-Steele inclusive scan within each address, in lane order
                m = np.flatnonzero(pos >= d)
                y = x.copy()
                y[m] = op.assoc(x[m - d], x[m])
                x = y
                d *= 2
            old_sorted = init[g]
            m = np.flatnonzero(pos > 0)
            old_sorted[m] = op.assoc(init[g[m]], x[m - 1])
            final = op.assoc(init, x[starts + counts - 1])
        else:
            ss = s[order]
            cs = c[order] if c is not None else None
            final = init.copy()
            old_sorted = np.empty(n, dtype=dt)
            by_round = np.argsort(pos, kind="stable")
            bounds = np.concatenate(([0], np.cumsum(np.bincount(pos))))
            for r in range(most):
                m = by_round[bounds[r] : bounds[r + 1]]
                gi = g[m]
                o = final[gi]
                old_sorted[m] = o
                final[gi] = op.fn(o, ss[m], cs[m] if cs is not None else None)
        old = np.empty(n, dtype=dt)
        old[order] = old_sorted
    final = np.asarray(final, dtype=dt)
    return old.view(np.uint8).reshape(n, size), final.view(np.uint8).reshape(u, size)


# ---------------------------------------------------------------------------------------
# The instruction table: one row per operation, shared by the FLAT/GLOBAL/SCRATCH/MUBUF
# prefixes (each prefix takes the rows the decoder names for its encoding).


@dataclass(frozen=True)
class Access:
    kind: str  # "load" | "store" | "atomic"
    size: int  # bytes per lane (an atomic: the operand size, 4 or 8)
    form: str = ""  # load: "u"/"s" extend, "d16"/"d16_hi" (+"u"/"s" for bytes); store: "hi"
    op: str | None = None  # ATOMIC_OPS key

    @property
    def dwords(self) -> int:
        return max(1, self.size // 4)


_GLOBAL_ATOMICS = ("swap", "cmpswap", "add", "sub", "smin", "umin", "smax", "umax", "and", "or")
_GLOBAL_ATOMICS += ("xor", "inc", "dec")
_ROWS: tuple[tuple[str, Access], ...] = (
    ("load_ubyte", Access("load", 1, "u")),
    ("load_sbyte", Access("load", 1, "s")),
    ("load_ushort", Access("load", 2, "u")),
    ("load_sshort", Access("load", 2, "s")),
    ("load_dword", Access("load", 4)),
    ("load_dwordx2", Access("load", 8)),
    ("load_dwordx3", Access("load", 12)),
    ("load_dwordx4", Access("load", 16)),
    ("load_ubyte_d16", Access("load", 1, "d16u")),
    ("load_ubyte_d16_hi", Access("load", 1, "d16_hiu")),
    ("load_sbyte_d16", Access("load", 1, "d16s")),
    ("load_sbyte_d16_hi", Access("load", 1, "d16_his")),
    ("load_short_d16", Access("load", 2, "d16")),
    ("load_short_d16_hi", Access("load", 2, "d16_hi")),
    ("store_byte", Access("store", 1)),
    ("store_byte_d16_hi", Access("store", 1, "hi")),
    ("store_short", Access("store", 2)),
    ("store_short_d16_hi", Access("store", 2, "hi")),
    ("store_dword", Access("store", 4)),
    ("store_dwordx2", Access("store", 8)),
    ("store_dwordx3", Access("store", 12)),
    ("store_dwordx4", Access("store", 16)),
    ("atomic_add_f32", Access("atomic", 4, op="fadd")),
    ("atomic_pk_add_f16", Access("atomic", 4, op="pk_fadd_f16")),
    ("atomic_add_f64", Access("atomic", 8, op="fadd")),
    ("atomic_min_f64", Access("atomic", 8, op="fmin")),
    ("atomic_max_f64", Access("atomic", 8, op="fmax")),
    *(
        (f"atomic_{name}{x2}", Access("atomic", 8 if x2 else 4, op=name))
        for name in ATOMIC_OPS
        if name in _GLOBAL_ATOMICS
        for x2 in ("", "_x2")
    ),
)
ACCESSES: dict[str, Access] = dict(_ROWS)


# ---------------------------------------------------------------------------------------
# Registers


def _bit(ins, bit: int) -> int:
    return (ins.words[bit // 32] >> (bit % 32)) & 1


def _regfile(ctx: WaveContext, ins, acc_bit: int = 55) -> np.ndarray:
    """VGPRs, or AccVGPRs when the instruction's ACC bit says so (gfx90a and later)."""
    if ctx.target != "gfx900" and _bit(ins, acc_bit):
        return ctx.waves.agpr
    return ctx.waves.vgpr


def read_regs(file: np.ndarray, w, reg: int, n: int, what: str) -> np.ndarray:
    """(k, 64, n) uint32: registers reg..reg+n-1 of the selected waves."""
    if reg + n > file.shape[0]:
        raise IllegalInstruction(
            f"{what} v[{reg}:{reg + n - 1}] is beyond the {file.shape[0]} allocated"
        )
    return np.stack([file[reg + i][w] for i in range(n)], axis=-1)


def write_regs(file: np.ndarray, w, reg: int, vals: np.ndarray, lanes: np.ndarray, what: str):
    """Write (k, 64, n) uint32 into reg.. in the `lanes` (k, 64) only."""
    n = vals.shape[-1]
    if reg + n > file.shape[0]:
        raise IllegalInstruction(
            f"{what} v[{reg}:{reg + n - 1}] is beyond the {file.shape[0]} allocated"
        )
    full = bool(lanes.all())
    for i in range(n):
        if full:
            file[reg + i][w] = vals[..., i]
        else:
            file[reg + i][w] = np.where(lanes, vals[..., i], file[reg + i][w])


def load_result(acc: Access, raw: np.ndarray, cur: np.ndarray | None) -> np.ndarray:
    """Bytes a load read (k, 64, size) -> the (k, 64, dwords) it writes (d16: merged into
    `cur`, the destination's present value, as the half it does not load is kept)."""
    raw = np.ascontiguousarray(raw)
    f = acc.form
    if f == "":
        return raw.view("<u4")
    if acc.size == 1:
        v = raw[..., 0].view(np.int8).astype(np.int32) if "s" in f[-1:] else raw[..., 0]
    else:
        v = raw.view("<u2")[..., 0]
        if f == "s":
            v = v.view(np.int16).astype(np.int32)
    v = np.asarray(v).astype(np.int64).astype(np.uint32)
    if f in ("u", "s"):
        return v[..., None]
    half = v & np.uint32(0xFFFF)
    c = cur[..., 0]
    if f.startswith("d16_hi"):
        out = (c & np.uint32(0xFFFF)) | (half << np.uint32(16))
    else:
        out = (c & np.uint32(0xFFFF0000)) | half
    return out[..., None]


def store_bytes(acc: Access, data: np.ndarray) -> np.ndarray:
    """VGPR data (k, 64, dwords) -> the (k, 64, size) bytes a store writes."""
    if acc.form == "hi":
        data = data >> np.uint32(16)
    return np.ascontiguousarray(data.astype("<u4")).view(np.uint8)[..., : acc.size]


# ---------------------------------------------------------------------------------------
# Where lanes' bytes live


def _wave_ids(ctx: WaveContext, w) -> np.ndarray:
    return np.arange(ctx.waves.n) if isinstance(w, slice) else np.asarray(w)


def _fault_at(fault: MemoryFault, wid: np.ndarray, wi: np.ndarray, li: np.ndarray, sel=None):
    """Name the wave and lane of a lane fault (`fault.index` into the lanes given)."""
    i = getattr(fault, "index", 0)
    if sel is not None:
        i = int(sel[i])
    fault.wave = int(wid[wi[i]])
    fault.waves = [fault.wave]  # what the executor looks for to find the faulting workgroup
    fault.lane = int(li[i])
    return fault


class _Lanes:
    """The active lanes of an instruction, flattened wave-major (lane order): lane j of the
    flattening is lane `li[j]` of the `wi[j]`-th selected wave."""

    def __init__(self, ctx: WaveContext, w, lanes: np.ndarray) -> None:
        self.ctx = ctx
        self.w = w
        self.wid = _wave_ids(ctx, w)
        self.mask = lanes
        self.k = lanes.shape[0]
        self.full = bool(lanes.all())  # the common case: no index arrays needed
        self.m = lanes.size if self.full else int(np.count_nonzero(lanes))
        self.host: np.ndarray | None = None  # (k,) bytes per wave moved to/from host memory

    @functools.cached_property
    def _where(self) -> tuple[np.ndarray, np.ndarray]:
        if self.full:
            return np.repeat(np.arange(self.k), LANES), np.tile(np.arange(LANES), self.k)
        return np.nonzero(self.mask)

    @property
    def wi(self) -> np.ndarray:
        return self._where[0]

    @property
    def li(self) -> np.ndarray:
        return self._where[1]

    def take(self, a: np.ndarray) -> np.ndarray:
        """(k, 64, ...) -> (m, ...): the active lanes' values."""
        if self.full:
            return a.reshape((self.m,) + a.shape[2:])
        return a[self.mask]

    def per_lane(self, a: np.ndarray) -> np.ndarray:
        """(k, ...) per wave -> (m, ...) per active lane."""
        if self.full:
            return np.repeat(a, LANES, axis=0)
        return a[self.wi]

    def spread(self, vals: np.ndarray) -> np.ndarray:
        """(m, ...) -> (k, 64, ...), zero in inactive lanes."""
        if self.full:
            return vals.reshape((self.k, LANES) + vals.shape[1:])
        out = np.zeros((self.k, LANES) + vals.shape[1:], dtype=vals.dtype)
        out[self.mask] = vals
        return out


def _private_index(ctx: WaveContext, L: _Lanes, sel, wave_lane, p: np.ndarray, size: int):
    """Flat byte index into ctx.private of each lane's private address p (int64), after
    checking the whole access lies in the segment (else a MemoryFault at the private
    aperture address of the first bad lane)."""
    nb = ctx.private.shape[2]
    bad = (p < 0) | (p + size > nb)
    if bad.any():
        i = int(np.argmax(bad))
        va = ctx.waves.apertures.private_base + int(p[i]) % (1 << 32)
        fault = MemoryFault(
            va, size, f"private (scratch) access beyond the {nb}-byte private segment of a lane"
        )
        fault.index = i
        raise _fault_at(fault, L.wid, L.wi, L.li, sel)
    wave, lane = wave_lane
    return (L.wid[wave].astype(np.int64) * LANES + lane) * nb + p


def _local_load(flat: np.ndarray, idx: np.ndarray, size: int, valid=None) -> np.ndarray:
    if flat.size == 0:
        return np.zeros((idx.size, size), dtype=np.uint8)
    if valid is None:
        return take_bytes(flat, idx, size)
    out = take_bytes(flat, np.minimum(idx, flat.size - size), size)
    out[~valid] = 0
    return out


def _local_store(flat: np.ndarray, idx: np.ndarray, data: np.ndarray, valid=None) -> None:
    if valid is not None:
        idx, data = idx[valid], data[valid]
    put_bytes(flat, idx, data)


def _local_atomic(flat, idx, acc: Access, src, cmp, valid=None) -> np.ndarray:
    """Atomics on a byte array (LDS, private memory) at byte indices `idx`."""
    old = np.zeros((idx.size, acc.size), dtype=np.uint8)
    if valid is not None:
        keep = np.flatnonzero(valid)
        idx, src = idx[keep], src[keep]
        cmp = cmp[keep] if cmp is not None else None
    else:
        keep = slice(None)
    if idx.size == 0:
        return old
    uniq, inverse = np.unique(idx, return_inverse=True)
    span = np.arange(acc.size)
    got, final = combine(
        ATOMIC_OPS[acc.op], acc.size, flat[uniq[:, None] + span], inverse.reshape(-1), src, cmp
    )
    flat[uniq[:, None] + span] = final
    old[keep] = got
    return old


def lds_window(ctx: WaveContext, L: _Lanes, sel, addr: np.ndarray, size: int):
    """(flat LDS bytes, byte index, in-range per lane) for LDS addresses `addr` (int64) of
    the lanes `sel`: out of the workgroup's allocation a lane reads 0 and writes nothing."""
    nb = ctx.lds.shape[1]
    start = ctx.waves.wg[L.wid].astype(np.int64) * nb  # (k,) each wave's workgroup's LDS
    start = L.per_lane(start) if sel is None else start[L.wi[sel]]
    valid = (addr >= 0) & (addr + size <= nb)
    if valid.all():
        return ctx.lds.reshape(-1), start + addr, valid
    return ctx.lds.reshape(-1), start + np.where(valid, addr, 0), valid


def _do(ctx: WaveContext, L: _Lanes, acc: Access, route: dict, data=None, cmp=None):
    """Perform `acc` for the lanes of each route — "global": (sel, VAs), "lds": (sel, LDS
    addresses), "private": (sel, (wave, lane), p) — where sel picks lanes of `L` (None: all).
    `data`/`cmp`: (m, size) bytes per lane. Returns (m, size) bytes read / pre-op values.
    Every check (private bounds, the page tables for all lanes) comes before any change."""
    out = np.zeros((L.m, acc.size), dtype=np.uint8) if acc.kind != "store" else None
    local = []
    if "private" in route:
        sel, wave_lane, p = route["private"]
        idx = _private_index(ctx, L, sel, wave_lane, p, acc.size)
        local.append((sel, ctx.private.reshape(-1), idx, None))
    if "lds" in route:
        sel, addr = route["lds"]
        flat, idx, valid = lds_window(ctx, L, sel, addr, acc.size)
        local.append((sel, flat, idx, None if valid.all() else valid))
    if "global" in route:
        sel, va = route["global"]
        mem = ctx.memory
        try:
            if acc.kind == "load":
                _put(out, sel, mem.lane_gather(ctx.pasid, ctx.node, va, acc.size))
            elif acc.kind == "store":
                mem.lane_scatter(ctx.pasid, ctx.node, va, _pick(data, sel))
            else:
                op = ATOMIC_OPS[acc.op]
                s, c = _pick(data, sel), _pick(cmp, sel)
                got = mem.lane_atomic(
                    ctx.pasid,
                    ctx.node,
                    va,
                    acc.size,
                    lambda init, inv: combine(op, acc.size, init, inv, s, c),
                )
                _put(out, sel, got)
        except MemoryFault as fault:
            raise _fault_at(fault, L.wid, L.wi, L.li, sel) from None
        _count_host(ctx, L, sel, va, acc.size)
    for sel, flat, idx, valid in local:
        if acc.kind == "load":
            _put(out, sel, _local_load(flat, idx, acc.size, valid))
        elif acc.kind == "store":
            _local_store(flat, idx, _pick(data, sel), valid)
        else:
            s, c = _pick(data, sel), _pick(cmp, sel)
            _put(out, sel, _local_atomic(flat, idx, acc, s, c, valid))
    return out


def _count_host(ctx: WaveContext, L: _Lanes, sel, va: np.ndarray, size: int) -> None:
    """Add to `L.host`, per wave, the bytes of the lanes `sel` whose accesses at `va`
    (already checked by the page tables) are in host (system) memory. One BO holding every
    lane is the common case: a min, a max and one lookup. Another GPU's VRAM counts as this
    GPU's memory (peer traffic over XGMI or PCIe is not modelled for kernels)."""
    mem = ctx.memory
    lo, hi = int(va.min()), int(va.max())
    bo = mem.find(ctx.pasid, lo)
    host = None  # every lane of `sel`
    if bo is None or hi + size > bo.end:
        host = np.zeros(va.size, dtype=bool)
        for lanes, b, _offs in mem.lane_resolve(ctx.pasid, ctx.node, va, size):
            if b.kind == MemKind.SYSTEM:
                host[slice(None) if lanes is None else lanes] = True
        if not host.any():
            return
    elif bo.kind != MemKind.SYSTEM:
        return
    if sel is None and host is None:
        lanes_per_wave = L.mask.sum(axis=1)
    else:
        idx = np.arange(L.m) if sel is None else np.asarray(sel)
        lanes_per_wave = np.bincount(L.wi[idx if host is None else idx[host]], minlength=L.k)
    add = lanes_per_wave.astype(np.int64) * size
    L.host = add if L.host is None else L.host + add


def _pick(a, sel):
    if a is None or sel is None:
        return a
    return a[sel]


def _put(out, sel, val):
    if sel is None:
        out[:] = val
    else:
        out[sel] = val


# ---------------------------------------------------------------------------------------
# Instruction semantics


def _sext(v: int, bits: int) -> int:
    return v - (1 << bits) if v & (1 << (bits - 1)) else v


def _data_bytes(ctx, ins, w, L: _Lanes, acc: Access, file, reg: int):
    """(data, cmp) bytes (m, size) per active lane from the data VGPRs (cmpswap: the source
    then the compare value, FLAT_ATOMIC_CMPSWAP's DATA[0] / DATA[1])."""
    if acc.kind == "load":
        return None, None
    two = acc.op == "cmpswap"
    regs = L.take(read_regs(file, w, reg, acc.dwords * (2 if two else 1), ins.mnemonic))
    if acc.kind == "store":
        return store_bytes(acc, regs), None
    b = np.ascontiguousarray(regs.astype("<u4")).view(np.uint8)
    return (b[:, : acc.size], b[:, acc.size :]) if two else (b, None)


def _finish(ctx, ins, w, L: _Lanes, acc: Access, file, vdst: int, out, returns: bool) -> None:
    """Write what a load read (or an atomic returned) into vdst in the active lanes, and
    count the bytes each wave moved."""
    counts = L.mask.sum(axis=1)
    if acc.kind in ("store", "atomic"):
        ctx.store_bytes[L.w] += counts * acc.size
    loads = acc.kind == "load" or returns
    if L.host is not None:  # counted as the bytes are: an atomic's both ways if it returns
        ctx.host_bytes[L.w] += L.host * ((acc.kind != "load") + loads)
    if loads:
        ctx.load_bytes[L.w] += counts * acc.size
        raw = L.spread(out)
        cur = read_regs(file, w, vdst, 1, ins.mnemonic) if "d16" in acc.form else None
        write_regs(file, w, vdst, load_result(acc, raw, cur), L.mask, ins.mnemonic)


def _flat_route(ctx: WaveContext, ins, w, L: _Lanes, seg: str) -> dict:
    waves = ctx.waves
    f = ins.fields
    vg = waves.vgpr
    if seg == "scratch":
        off = _sext(f["offset"], 13)
        saddr = f["saddr"]
        use_s = saddr != SADDR_OFF
        use_v = _bit(ins, 13) if ctx.target == "gfx942" else not use_s  # gfx942: SVE
        p = np.full(L.m, off, dtype=np.int64)
        if use_v:
            p += L.take(vg[f["addr"]][w])
        if use_s:
            p += L.per_lane(waves.scalar(w, saddr)).astype(np.int64)
        p &= 0xFFFFFFFF
        return {"private": (None, (L.wi, L.li), p)}
    if seg == "global":
        off = _sext(f["offset"], 13)
        saddr = f["saddr"]
        if saddr != SADDR_OFF:
            base = L.per_lane(waves.read_sgpr64(w, saddr)) + L.take(vg[f["addr"]][w])
        else:
            base = L.take(waves.vector64(w, 256 + f["addr"]))
        va = base + np.uint64(off & 0xFFFFFFFFFFFFFFFF)
        return {"global": (None, va)}
    # FLAT: 12-bit unsigned offset; each lane goes where its aperture says.
    va = L.take(waves.vector64(w, 256 + f["addr"])) + np.uint64(f["offset"] & 0xFFF)
    ap = waves.apertures
    size = np.uint64(ap.size)
    shared = (va >= np.uint64(ap.shared_base)) & (va - np.uint64(ap.shared_base) < size)
    private = (va >= np.uint64(ap.private_base)) & (va - np.uint64(ap.private_base) < size)
    if not (shared.any() or private.any()):
        return {"global": (None, va)}
    route = {}
    glob = np.flatnonzero(~(shared | private))
    if glob.size:
        route["global"] = (glob, va[glob])
    sh = np.flatnonzero(shared)
    if sh.size:
        route["lds"] = (sh, (va[sh] - np.uint64(ap.shared_base)).astype(np.int64))
    pr = np.flatnonzero(private)
    if pr.size:
        p = (va[pr] - np.uint64(ap.private_base)).astype(np.int64)
        route["private"] = (pr, (L.wi[pr], L.li[pr]), p)
    return route


def _flat_op(seg: str, acc: Access):
    def run(ctx: WaveContext, ins, w) -> None:
        L = _Lanes(ctx, w, ctx.waves.lanes(w))
        if L.m == 0:
            return
        # Bit 13 is LDS (data to LDS instead of VGPRs), but SVE in gfx942's SCRATCH.
        if _bit(ins, 13) and not (seg == "scratch" and ctx.target == "gfx942"):
            raise IllegalInstruction(f"{ins.mnemonic} with lds (load to LDS) is not supported")
        file = _regfile(ctx, ins)
        data, cmp = _data_bytes(ctx, ins, w, L, acc, file, ins.fields["data"])
        out = _do(ctx, L, acc, _flat_route(ctx, ins, w, L, seg), data, cmp)
        _finish(ctx, ins, w, L, acc, file, ins.fields["vdst"], out, bool(_bit(ins, 16)))

    run.__name__ = f"{seg}_{acc.kind}_{acc.size}"
    return run


# -- MUBUF --------------------------------------------------------------------------------

# SQ_BUF_RSRC_WORD3 (gfx9): ELEMENT_SIZE [20:19] (2 << n bytes), INDEX_STRIDE [22:21]
# (8 << n), ADD_TID_ENABLE [23]; WORD1: BASE_ADDRESS_HI [15:0], STRIDE [29:16],
# SWIZZLE_ENABLE [31]. Element size 4 and index stride 64 are what ROCr gives the private
# segment buffer (AqlQueue::FillBufRsrcWord3: ELEMENT_SIZE = 1, INDEX_STRIDE = 3).
PRIVATE_ELEMENT_SIZE = 4
PRIVATE_INDEX_STRIDE = 64


# How a private-segment V# maps to ctx.private. The dispatcher's V# (program.SCRATCH_RSRC)
# has base 0 and the private segment wave byte offset is 0, so base + soffset is a byte
# offset into the wave's own swizzled scratch (the kernel adds the wave offset into the base,
# `s_add_u32 s0, s0, sN`). A swizzled wave-scratch byte W = base + soffset + (offset // 4) *
# 256 + 4 * lane + offset % 4 belongs to lane (W % 256) // 4 at private byte
# (W // 256) * 4 + W % 4: lane t's private byte p is wave byte (p // 4) * 256 + 4 t + p % 4,
# as the hardware swizzles it with element size 4 and index stride 64 — the same per-lane
# bytes that SCRATCH instructions and the FLAT private aperture address.


def _mubuf_op(acc: Access):
    def run(ctx: WaveContext, ins, w) -> None:
        L = _Lanes(ctx, w, ctx.waves.lanes(w))
        if L.m == 0:
            return
        waves = ctx.waves
        f = ins.fields
        offen, idxen, glc = _bit(ins, 12), _bit(ins, 13), _bit(ins, 14)
        if _bit(ins, 16):
            raise IllegalInstruction(f"{ins.mnemonic} with lds (load to LDS) is not supported")
        if ctx.target == "gfx900" and _bit(ins, 55):
            raise IllegalInstruction(f"{ins.mnemonic} with tfe is not supported")
        srsrc = f["srsrc"] * 4
        rs = L.per_lane(waves.sgpr[w][:, srsrc : srsrc + 4].astype(np.int64))  # (m, 4) per lane
        soff = L.per_lane(waves.scalar(w, f["soffset"]).astype(np.int64))
        vaddr = f["vaddr"]
        vg = waves.vgpr
        index = L.take(vg[vaddr][w]).astype(np.int64) if idxen else np.zeros(L.m, np.int64)
        offset = np.full(L.m, f["offset"], dtype=np.int64)
        if offen:
            offset += L.take(vg[vaddr + idxen][w])
        base = rs[:, 0] | (rs[:, 1] & 0xFFFF) << 32
        stride = (rs[:, 1] >> 16) & 0x3FFF
        swizzle = (rs[:, 1] >> 31) & 1
        nrec = rs[:, 2]
        esize = 2 << ((rs[:, 3] >> 19) & 3)
        istride = 8 << ((rs[:, 3] >> 21) & 3)
        private = ((rs[:, 3] >> 23) & 1).astype(bool)  # ADD_TID_ENABLE: the scratch V#
        file = _regfile(ctx, ins)
        data, cmp = _data_bytes(ctx, ins, w, L, acc, file, f["vdata"])
        out = np.zeros((L.m, acc.size), dtype=np.uint8) if acc.kind != "store" else None
        pr = np.flatnonzero(private)
        gl = np.flatnonzero(~private)
        if pr.size:
            what = ins.mnemonic
            if idxen:
                raise IllegalInstruction(f"{what} with idxen on the private segment buffer")
            if not (
                (swizzle[pr] == 1).all()
                and (esize[pr] == PRIVATE_ELEMENT_SIZE).all()
                and (istride[pr] == PRIVATE_INDEX_STRIDE).all()
            ):
                raise IllegalInstruction(
                    f"{what}: a V# with ADD_TID_ENABLE must be the private segment buffer "
                    "(swizzled, element size 4, index stride 64)"
                )
            o = offset[pr]
            W = base[pr] + soff[pr] + (o // 4) * 256 + L.li[pr] * 4 + o % 4
            if ((W % 4) + min(acc.size, 4) > 4).any():
                raise IllegalInstruction(f"{what}: unaligned access to the private segment")
            lane = (W % 256) // 4
            p = (W // 256) * 4 + W % 4
            sel = None if not gl.size else pr
            got = _do(
                ctx,
                L,
                acc,
                {"private": (sel, (L.wi[pr], lane), p)},
                _pick(data, sel),
                _pick(cmp, sel),
            )
            if out is not None:
                _put(out, sel, got)
        if gl.size:
            if swizzle[gl].any():
                raise IllegalInstruction(
                    f"{ins.mnemonic}: swizzled buffer resources other than the private "
                    "segment buffer are not supported"
                )
            structured = bool(idxen) & (stride[gl] != 0)
            va0 = base[gl] + soff[gl] + index[gl] * stride[gl] + offset[gl]
            # Range checking (Vega ISA guide 9.1.9): structured buffers check the index,
            # raw ones the offset (without soffset), per dword of a multi-dword load or
            # store, all or nothing for an atomic. Out of range: read 0, write nothing.
            pieces = (
                [(4 * j, 4) for j in range(acc.size // 4)]
                if acc.size > 4 and acc.kind != "atomic"
                else [(0, acc.size)]
            )
            for start, n in pieces:
                ok = np.where(structured, index[gl] < nrec[gl], offset[gl] + start + n <= nrec[gl])
                sel = gl[ok]
                if not sel.size:
                    continue
                part = Access(acc.kind, n, op=acc.op)
                va = (va0[ok] + start).astype(np.uint64)
                d = data[:, start : start + n] if data is not None else None
                got = _do(ctx, L, part, {"global": (sel, va)}, d, cmp)
                if out is not None:
                    out[sel, start : start + n] = got[sel]
        _finish(ctx, ins, w, L, acc, file, f["vdata"], out, bool(glc))

    run.__name__ = f"buffer_{acc.kind}_{acc.size}"
    return run


def _cache_op(kind: str):
    """Cache maintenance: the L1 has no model (its invalidates are no-ops); buffer_wbl2 /
    buffer_invl2 (gfx90a) and system-scope buffer_wbl2 / buffer_inv (gfx942: sc0 sc1) write
    back / invalidate the L2's coarse-grained lines, as the packet fences do."""

    def run(ctx: WaveContext, ins, w) -> None:
        if kind == "l1" or ctx.memory is None:
            return
        if ctx.target == "gfx942" and not (_bit(ins, 14) and _bit(ins, 15)):
            return  # narrower than system scope: our L2 is the agent's coherence point
        if kind == "wb":
            ctx.memory.l2_release_system(ctx.node)
        else:
            ctx.memory.l2_acquire_system(ctx.node)

    return run


def _build() -> dict[str, Callable]:
    names = {(row[0], row[1]) for row in ROWS}
    ops: dict[str, Callable] = {}
    for enc, prefix in (("GLOBAL", "global"), ("FLAT", "flat"), ("SCRATCH", "scratch")):
        for suffix, acc in ACCESSES.items():
            name = f"{prefix}_{suffix}"
            if (enc, name) in names and not (enc == "SCRATCH" and acc.kind == "atomic"):
                ops[name] = _flat_op(prefix, acc)
    for suffix, acc in ACCESSES.items():
        name = f"buffer_{suffix}"
        if ("MUBUF", name) in names:
            ops[name] = _mubuf_op(acc)
    ops["buffer_wbinvl1"] = ops["buffer_wbinvl1_vol"] = _cache_op("l1")
    ops["buffer_wbl2"] = _cache_op("wb")
    ops["buffer_invl2"] = ops["buffer_inv"] = _cache_op("inv")
    return ops


OPS: dict[str, Callable] = _build()
