"""Architectural state of a batch of wave64 wavefronts, and how instructions name it.

What the SQ keeps per wave on gfx9 (AMD "Vega" ISA guide, chapter 3 "Kernel State"): the
program counter, SGPRs (s0-s101 plus VCC, M0, EXEC, FLAT_SCRATCH, TTMPs), the status bit SCC,
VGPRs (64 lanes x 32 bits each) and, on gfx90a and later, AccVGPRs. Here one `Waves` object
holds that state for many waves at once, as numpy arrays with the wave as an axis, so one
instruction executes for every wave that stands at the same PC in a few numpy operations.

Operand numbers are the ISA's (chapter 12, "Scalar / vector source operands"): 0-101 SGPRs,
102-103 FLAT_SCRATCH, 104-105 XNACK_MASK, 106-107 VCC, 108-123 TTMP0-15, 124 M0,
126-127 EXEC, 128 the integer 0, 129-192 the integers 1..64, 193-208 -1..-16, 235-238 the
shared/private aperture bases and limits, 240-248 the float constants, 251 VCCZ, 252 EXECZ,
253 SCC, 255 a 32-bit literal, 256-511 VGPRs v0-v255. The SGPR file is stored indexed by
operand number (128 entries), so VCC, M0 and EXEC are simply entries 106/107, 124, 126/127.

A selection `w` of waves is a numpy integer array of wave indices or `slice(None)` (all).
Values are numpy arrays: scalars `(k,)` uint32 / uint64, vectors `(k, 64)` uint32 / uint64
for the k selected waves. Vector writes honour EXEC: inactive lanes keep their value.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np

LANES = 64  # wave64 (gfx9 has no wave32)
SGPR_FILE = 128  # operand numbers 0..127
VCC_LO, VCC_HI = 106, 107
M0 = 124
EXEC_LO, EXEC_HI = 126, 127
FLAT_SCRATCH_LO, FLAT_SCRATCH_HI = 102, 103
LITERAL = 255
VGPR0 = 256

# Inline float constants by operand number, as 32-bit and 64-bit and 16-bit bit patterns.
# 248 is 1/(2*pi), exactly as the hardware holds it (0x3e22f983 / 0x3fc45f306dc9c882 / 0x3118).
_FLOATS = {240: 0.5, 241: -0.5, 242: 1.0, 243: -1.0, 244: 2.0, 245: -2.0, 246: 4.0, 247: -4.0}
INLINE_F32 = {k: struct.unpack("<I", struct.pack("<f", v))[0] for k, v in _FLOATS.items()}
INLINE_F64 = {k: struct.unpack("<Q", struct.pack("<d", v))[0] for k, v in _FLOATS.items()}
INLINE_F16 = {k: struct.unpack("<H", struct.pack("<e", v))[0] for k, v in _FLOATS.items()}
INLINE_F32[248] = 0x3E22F983
INLINE_F64[248] = 0x3FC45F306DC9C882
INLINE_F16[248] = 0x3118
assert abs(struct.unpack("<f", struct.pack("<I", 0x3E22F983))[0] - 1 / (2 * math.pi)) < 1e-7

_BIT = np.uint64(1) << np.arange(LANES, dtype=np.uint64)  # lane i -> bit i


class IllegalInstruction(Exception):
    """An instruction (or operand) the interpreter cannot execute: the queue stops with
    HSA_STATUS_ERROR_ILLEGAL_INSTRUCTION naming it, never a silent wrong result."""


@dataclass
class Apertures:
    """The flat-address apertures of the process (kfd_flat_memory.c, gfx9): what
    SRC_SHARED_BASE / SRC_PRIVATE_BASE return (their high 32 bits) and how a flat address
    is routed to LDS, scratch or global memory."""

    shared_base: int = 0x1 << 48  # MAKE_LDS_APP_BASE_V9
    private_base: int = 0x2 << 48  # MAKE_SCRATCH_APP_BASE_V9
    size: int = 1 << 32  # each aperture spans 4 GiB


def mask_to_lanes(mask: np.ndarray) -> np.ndarray:
    """(k,) uint64 lane masks -> (k, 64) bool."""
    return (mask.astype(np.uint64)[:, None] & _BIT) != 0


class Waves:
    """State of `n` waves: SGPRs, VGPRs, AccVGPRs, SCC, PC, and per-wave bookkeeping.

    `wg[i]` is the index (within this batch) of wave i's workgroup; `wave_in_wg[i]` its
    position there. `done[i]` after s_endpgm; `barrier[i]` while it waits at s_barrier.
    """

    def __init__(
        self, n: int, vgprs: int, agprs: int = 0, *, apertures: Apertures | None = None
    ) -> None:
        self.n = n
        self.sgpr = np.zeros((n, SGPR_FILE), dtype=np.uint32)
        self.vgpr = np.zeros((max(vgprs, 1), n, LANES), dtype=np.uint32)
        self.agpr = np.zeros((agprs, n, LANES), dtype=np.uint32)
        self.scc = np.zeros(n, dtype=bool)
        self.pc = np.zeros(n, dtype=np.int64)
        self.done = np.zeros(n, dtype=bool)
        self.barrier = np.zeros(n, dtype=bool)
        self.wg = np.zeros(n, dtype=np.int64)
        self.wave_in_wg = np.zeros(n, dtype=np.int64)
        self.apertures = apertures or Apertures()
        # HW_REG_MODE per wave (Vega ISA guide, "MODE"): FP_ROUND [3:0], FP_DENORM [7:4],
        # DX10_CLAMP [8], IEEE [9]; set from COMPUTE_PGM_RSRC1 at launch, by s_setreg after.
        self.mode = np.zeros(n, dtype=np.uint32)
        self._exec_lanes: np.ndarray | None = None  # cache of EXEC as (n, 64) bool

    # -- EXEC / VCC ------------------------------------------------------------------------
    def exec_mask(self, w) -> np.ndarray:
        """(k,) uint64: EXEC of the selected waves."""
        return self.read_sgpr64(w, EXEC_LO)

    def lanes(self, w) -> np.ndarray:
        """(k, 64) bool: the lanes EXEC enables in the selected waves."""
        if self._exec_lanes is None:
            self._exec_lanes = mask_to_lanes(self.exec_mask(slice(None)))
        return self._exec_lanes[w]

    def set_exec(self, w, mask: np.ndarray) -> None:
        self.write_sgpr64(w, EXEC_LO, mask)

    def vcc(self, w) -> np.ndarray:
        return self.read_sgpr64(w, VCC_LO)

    # -- raw register access ----------------------------------------------------------------
    def read_sgpr64(self, w, reg: int) -> np.ndarray:
        # Index the two columns only: a row selection would copy all 128 SGPRs per wave.
        lo = self.sgpr[w, reg].astype(np.uint64)
        return lo | (self.sgpr[w, reg + 1].astype(np.uint64) << np.uint64(32))

    def write_sgpr(self, w, reg: int, value) -> None:
        """Write a 32-bit scalar destination (operand number `reg` < 128)."""
        if reg >= SGPR_FILE or reg == 125:
            raise IllegalInstruction(f"scalar destination {reg} is not a writable register")
        self.sgpr[w, reg] = np.asarray(value).astype(np.uint32, copy=False)
        if reg in (EXEC_LO, EXEC_HI):
            self._exec_lanes = None

    def write_sgpr64(self, w, reg: int, value) -> None:
        v = np.asarray(value).astype(np.uint64, copy=False)
        self.write_sgpr(w, reg, (v & np.uint64(0xFFFFFFFF)).astype(np.uint32))
        self.write_sgpr(w, reg + 1, (v >> np.uint64(32)).astype(np.uint32))

    # -- scalar sources ---------------------------------------------------------------------
    def _k(self, w) -> int:
        return self.n if isinstance(w, slice) else len(w)

    def scalar(self, w, op: int, literal: int | None = None, kind: str = "b32") -> np.ndarray:
        """(k,) uint32 value of scalar source operand `op` (0..255). `kind` chooses the bit
        pattern of an inline float constant: "b32"/"f32" (f32 bits) or "f16" (f16 bits)."""
        if op < SGPR_FILE:
            if op == 125:
                raise IllegalInstruction("scalar source 125 is reserved")
            return self.sgpr[w, op]
        k = self._k(w)
        if op == LITERAL:
            if literal is None:
                raise IllegalInstruction("literal operand without a literal dword")
            return np.full(k, literal & 0xFFFFFFFF, dtype=np.uint32)
        c = self._constant32(w, op, kind)
        if isinstance(c, np.ndarray):
            return c
        return np.full(k, c, dtype=np.uint32)

    def _constant32(self, w, op: int, kind: str):
        if op == 128:
            return 0
        if 129 <= op <= 192:
            return op - 128
        if 193 <= op <= 208:
            return (192 - op) & 0xFFFFFFFF
        if 240 <= op <= 248:
            return (INLINE_F16 if kind == "f16" else INLINE_F32)[op]
        ap = self.apertures
        if op == 235:  # SRC_SHARED_BASE: high half of the LDS aperture
            return ap.shared_base >> 32
        if op == 236:  # SRC_SHARED_LIMIT
            return (ap.shared_base + ap.size - 1) >> 32
        if op == 237:  # SRC_PRIVATE_BASE
            return ap.private_base >> 32
        if op == 238:  # SRC_PRIVATE_LIMIT
            return (ap.private_base + ap.size - 1) >> 32
        if op == 251:  # VCCZ
            return (self.vcc(w) == 0).astype(np.uint32)
        if op == 252:  # EXECZ
            return (self.exec_mask(w) == 0).astype(np.uint32)
        if op == 253:  # SCC
            return self.scc[w].astype(np.uint32)
        raise IllegalInstruction(f"source operand {op} is not supported")

    def scalar64(self, w, op: int, literal: int | None = None, kind: str = "b64") -> np.ndarray:
        """(k,) uint64 value of a 64-bit scalar source: an SGPR pair, a sign-extended integer
        constant, a float constant as f64 bits, or a literal (the high half for "f64",
        zero-extended otherwise — as LLVM's AMDGPU assembler encodes 64-bit literals on
        gfx9)."""
        if op < SGPR_FILE:
            return self.read_sgpr64(w, op)
        k = self._k(w)
        if op == LITERAL:
            if literal is None:
                raise IllegalInstruction("literal operand without a literal dword")
            v = (literal << 32) if kind == "f64" else literal
            return np.full(k, v & 0xFFFFFFFFFFFFFFFF, dtype=np.uint64)
        # A 64-bit operand's inline float constant is the double (llvm-mc encodes
        # `s_mov_b64 s[4:5], 0x3ff0000000000000` as 242), integer or float operation alike.
        if 240 <= op <= 248:
            return np.full(k, INLINE_F64[op], dtype=np.uint64)
        c = self._constant32(w, op, kind)
        if isinstance(c, np.ndarray):
            return c.astype(np.uint64)
        if 193 <= op <= 208:
            return np.full(k, (192 - op) & 0xFFFFFFFFFFFFFFFF, dtype=np.uint64)
        return np.full(k, c, dtype=np.uint64)

    # -- vector sources and destinations ---------------------------------------------------
    def vector(self, w, op: int, literal: int | None = None, kind: str = "b32") -> np.ndarray:
        """(k, 64) uint32 value of a 9-bit source operand: a VGPR (256..511) or a scalar
        operand broadcast to every lane."""
        if op >= VGPR0:
            return self.vgpr[op - VGPR0][w]
        return np.broadcast_to(self.scalar(w, op, literal, kind)[:, None], (self._k(w), LANES))

    def vector64(self, w, op: int, literal: int | None = None, kind: str = "b64") -> np.ndarray:
        """(k, 64) uint64 value of a 64-bit source: a VGPR pair or a 64-bit scalar source."""
        if op >= VGPR0:
            r = op - VGPR0
            return self.vgpr[r][w].astype(np.uint64) | (
                self.vgpr[r + 1][w].astype(np.uint64) << np.uint64(32)
            )
        return np.broadcast_to(self.scalar64(w, op, literal, kind)[:, None], (self._k(w), LANES))

    def write_vgpr(self, w, reg: int, value, lanes: np.ndarray | None = None) -> None:
        """Write v[reg] of the selected waves in the lanes EXEC enables (or `lanes`)."""
        if lanes is None:
            lanes = self.lanes(w)
        value = np.asarray(value)
        if value.dtype != np.uint32:
            value = value.astype(np.uint32)
        if isinstance(w, slice):  # a view: write the enabled lanes in place, no temporary
            np.copyto(self.vgpr[reg][w], value, where=lanes)
            return
        cur = self.vgpr[reg][w]
        self.vgpr[reg][w] = np.where(lanes, value, cur)

    def write_vgpr64(self, w, reg: int, value, lanes: np.ndarray | None = None) -> None:
        v = np.asarray(value).astype(np.uint64, copy=False)
        if lanes is None:
            lanes = self.lanes(w)
        self.write_vgpr(w, reg, (v & np.uint64(0xFFFFFFFF)).astype(np.uint32), lanes)
        self.write_vgpr(w, reg + 1, (v >> np.uint64(32)).astype(np.uint32), lanes)

    # -- program counter --------------------------------------------------------------------
    def active(self) -> np.ndarray:
        """Waves that can issue: not ended, not waiting at a barrier."""
        return ~(self.done | self.barrier)


class WaveContext:
    """Everything an instruction's semantics may touch: the waves' registers, the GPU's
    memory through the process's page tables, each workgroup's LDS, each lane's private
    (scratch) memory, and the per-wave traffic counters the timing model reads.

    Semantics functions have the signature `fn(ctx, ins, w)`: `ins` the decoded
    `Instruction`, `w` the selection of waves that execute it. Before the call the executor
    has already advanced `waves.pc[w]` past the instruction (as the hardware's PC points at
    the next instruction); a branch overwrites it.
    """

    def __init__(
        self,
        waves: Waves,
        *,
        target: str = "gfx900",
        memory=None,  # hw_model.memory.Memory: page tables of `pasid` on GPU `node`
        pasid: int = 0,
        node: int = 0,
        workgroups: int = 1,
        lds_bytes: int = 0,
        private_bytes: int = 0,
    ) -> None:
        self.waves = waves
        self.target = target
        self.memory = memory
        self.pasid = pasid
        self.node = node
        # One LDS allocation per workgroup of the batch: waves index it by `waves.wg`.
        self.lds = np.zeros((workgroups, lds_bytes), dtype=np.uint8)
        # Private memory per lane (the swizzled scratch of AMDGPUUsage "Private Segment
        # Buffer", unswizzled here): a lane's private address p is private[wave, lane, p].
        self.private = np.zeros((waves.n, LANES, private_bytes), dtype=np.uint8)
        # Bytes each wave moved through vector/scalar memory (for the timing model).
        self.load_bytes = np.zeros(waves.n, dtype=np.int64)
        self.store_bytes = np.zeros(waves.n, dtype=np.int64)
        # Of those, the bytes of accesses to host (system) memory: they cross the host link.
        self.host_bytes = np.zeros(waves.n, dtype=np.int64)
        self.kernel = ""  # the kernel's name, for messages
