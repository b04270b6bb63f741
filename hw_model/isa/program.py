"""Compiled kernels as kernel code the dispatcher runs: `IsaKernel`.

`IsaKernel.execute` builds the waves of a range of workgroups, gives each the state the
CP/SPI give a wave at launch (LLVM AMDGPUUsage, "Initial Kernel Execution State"), runs
them with the interpreter (`executor.run`) and turns what executed into the cost profile
the CU timing model reads (docs/isa.md, "Timing").

Initial state, from the kernel descriptor:
- user SGPRs from s0, in this order, each only when its `kernel_code_properties` bit is
  set: private segment buffer (4, a V#), dispatch ptr (2, the AQL packet), queue ptr (2,
  the amd_queue_t), kernarg segment ptr (2), dispatch id (2), flat scratch init (2),
  private segment size (1);
- system SGPRs from s[USER_SGPR_COUNT] (COMPUTE_PGM_RSRC2), each when enabled there:
  workgroup id X, Y, Z, workgroup info, private segment wave byte offset;
- VGPRs: work-item ids X, Y, Z in v0, v1, v2 as ENABLE_VGPR_WORKITEM_ID asks, or packed
  10:10:10 into v0 on gfx90a and gfx942 (LLVM `hasPackedTID`);
- EXEC: the lanes that hold work-items (a partial wave at the end of a workgroup, and the
  partial workgroups at the grid's edge, have fewer); VCC, M0 and SCC 0;
- MODE from COMPUTE_PGM_RSRC1's float round/denorm modes, DX10_CLAMP and IEEE bits.

Private (scratch) memory is modelled per lane from address 0 (`WaveContext.private`):
the private segment buffer V# has base 0 with ADD_TID_ENABLE set (the swizzled scratch
of AMDGPUUsage "Private Segment Buffer"), the wave offset and flat scratch init are 0.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from hw_model.execution import Execution
from hw_model.isa.executor import CLASSES, Program, RunResult, run
from hw_model.isa.wave import (
    FLAT_SCRATCH_HI,
    FLAT_SCRATCH_LO,
    LANES,
    Apertures,
    WaveContext,
    Waves,
)
from hw_model.kernels.base import CostProfile
from hw_model.structs import (
    COMPUTE_PGM_RSRC1_FLOAT_DENORM_MODE_16_64,
    COMPUTE_PGM_RSRC1_FLOAT_DENORM_MODE_32,
    COMPUTE_PGM_RSRC1_FLOAT_ROUND_MODE_16_64,
    COMPUTE_PGM_RSRC1_FLOAT_ROUND_MODE_32,
    COMPUTE_PGM_RSRC1_GFX6_GFX11_ENABLE_DX10_CLAMP,
    COMPUTE_PGM_RSRC1_GFX6_GFX11_ENABLE_IEEE_MODE,
    COMPUTE_PGM_RSRC2_ENABLE_PRIVATE_SEGMENT,
    COMPUTE_PGM_RSRC2_ENABLE_SGPR_WORKGROUP_ID_X,
    COMPUTE_PGM_RSRC2_ENABLE_SGPR_WORKGROUP_ID_Y,
    COMPUTE_PGM_RSRC2_ENABLE_SGPR_WORKGROUP_ID_Z,
    COMPUTE_PGM_RSRC2_ENABLE_SGPR_WORKGROUP_INFO,
    COMPUTE_PGM_RSRC2_ENABLE_VGPR_WORKITEM_ID,
    COMPUTE_PGM_RSRC2_USER_SGPR_COUNT,
    KERNEL_CODE_PROPERTY_ENABLE_SGPR_DISPATCH_ID,
    KERNEL_CODE_PROPERTY_ENABLE_SGPR_DISPATCH_PTR,
    KERNEL_CODE_PROPERTY_ENABLE_SGPR_FLAT_SCRATCH_INIT,
    KERNEL_CODE_PROPERTY_ENABLE_SGPR_KERNARG_SEGMENT_PTR,
    KERNEL_CODE_PROPERTY_ENABLE_SGPR_PRIVATE_SEGMENT_BUFFER,
    KERNEL_CODE_PROPERTY_ENABLE_SGPR_PRIVATE_SEGMENT_SIZE,
    KERNEL_CODE_PROPERTY_ENABLE_SGPR_QUEUE_PTR,
    KernelDescriptor,
)

if TYPE_CHECKING:
    from hw_model.memory import Memory

PACKED_TID_TARGETS = ("gfx90a", "gfx942")  # LLVM FeaturePackedTID
# Waves per batch: bounds the arrays of one interpreter run (registers are 256 bytes per
# VGPR per wave) while keeping the batch big enough that numpy's per-call overhead spreads.
MAX_BATCH_WAVES = 4096
MAX_BATCH_BYTES = 256 << 20

# The private segment buffer V# (AMDGPUUsage "Private Segment Buffer"; field layout of the
# gfx9 buffer resource, LLVM SIISelLowering getScratchRsrcWords23): NUM_RECORDS all ones,
# SWIZZLE_ENABLE (dword1 bit 31), and in dword3 DST_SEL XYZW, NUM_FORMAT UINT, DATA_FORMAT
# 32, ELEMENT_SIZE 4 bytes, INDEX_STRIDE 64, ADD_TID_ENABLE — the bit that marks scratch.
SCRATCH_RSRC = (0, 1 << 31, 0xFFFFFFFF, 0xEA4FAC)

# Issue-cost weights of the VALU classes, in full-rate VALU instructions (docs/isa.md,
# "Timing"): transcendentals are quarter rate on GCN/CDNA (AMD GCN architecture
# whitepaper; Vega ISA guide "VALU" notes); FP64 is 1/16 rate on Vega 10 (gfx900, Vega
# whitepaper) and full rate on CDNA2/CDNA3 (MI200/MI300 whitepapers: vector FP64 = FP32).
TRANS_WEIGHT = 4
FP64_WEIGHT = {"gfx900": 16, "gfx90a": 1, "gfx942": 1}


@dataclass
class IsaKernel:
    """A compiled kernel's code and descriptor for one dispatch (`KernelCode`)."""

    # Its cost is known only by running it, so it runs on a timing-only GPU too.
    always_execute: ClassVar[bool] = True

    name: str
    target: str
    descriptor: KernelDescriptor
    program: Program
    vgprs: int  # architected VGPRs per work-item
    agprs: int = 0  # AccVGPRs (gfx90a+)
    lds_bytes: int = 0  # group segment: static + dynamic
    private_bytes: int = 0  # private segment per work-item
    kernarg_address: int = 0
    packet_address: int = 0  # the AQL dispatch packet (dispatch ptr)
    queue_address: int = 0  # the amd_queue_t (queue ptr)
    dispatch_id: int = 0
    entry: int | None = None  # the first instruction's address (default: the code's start)
    apertures: Apertures | None = None
    max_batch_waves: int = MAX_BATCH_WAVES

    # -- KernelCode --------------------------------------------------------------------------
    def execute(self, launch, memory: Memory, node: int, first: int, count: int) -> Execution:
        grid, wgsize = tuple(launch.grid), tuple(launch.workgroup)
        counts = tuple(-(-g // w) for g, w in zip(grid, wgsize, strict=True))
        limit = min(self.max_batch_waves, batch_limit(self.vgprs + self.agprs, self.private_bytes))
        costs: list[CostProfile] = []
        totals = np.zeros(len(CLASSES), dtype=np.int64)
        # mem_rounds: s_waitcnt that waited on outstanding memory, summed over waves.
        stats = {"waves": 0, "issues": 0, "lane_instructions": 0, "mem_rounds": 0}
        ex = Execution(costs=costs, stats=stats)
        wg = first
        end = first + count
        while wg < end:
            geo = _geometry(np.arange(wg, end), grid, wgsize, counts)
            waves_per = geo["waves"]
            cum = np.cumsum(waves_per)
            take = max(1, int(np.searchsorted(cum, limit, side="right")))
            batch = {k: v[:take] for k, v in geo.items()}
            res, ctx = self._run_batch(batch, grid, wgsize, memory, launch.pasid, node)
            costs.extend(self._costs(res, ctx, batch))
            totals += res.counts.sum(axis=0)
            stats["waves"] += ctx.waves.n
            stats["issues"] += res.steps
            stats["lane_instructions"] += res.lanes
            stats["mem_rounds"] += int(res.rounds.sum())
            stop = res.stop_wg
            if stop is not None:
                if res.fault is not None:
                    ex.fault, ex.fault_wg = res.fault, wg + res.fault_wg
                else:
                    ex.illegal, ex.illegal_wg = res.illegal, wg + res.illegal_wg
                # The range ends at the workgroup that stopped (none after it is placed).
                del costs[wg - first + stop + 1 :]
                break
            wg += take
        stats["instructions"] = {c: int(totals[i]) for i, c in enumerate(CLASSES)}
        if costs and all(c == costs[0] for c in costs):
            ex.costs = costs[0]
        return ex

    # -- one batch ---------------------------------------------------------------------------
    def _run_batch(self, geo, grid, wgsize, memory, pasid, node) -> tuple[RunResult, WaveContext]:
        kd = self.descriptor
        nwg = len(geo["index"])
        waves_per = geo["waves"]
        n = int(waves_per.sum())
        wv = Waves(n, self.vgprs, self.agprs, apertures=self.apertures)
        wave_wg = np.repeat(np.arange(nwg), waves_per)
        starts = np.cumsum(waves_per) - waves_per
        wave_in_wg = np.arange(n) - np.repeat(starts, waves_per)
        wv.wg[:] = wave_wg
        wv.wave_in_wg[:] = wave_in_wg
        ctx = WaveContext(
            wv,
            target=self.target,
            memory=memory,
            pasid=pasid,
            node=node,
            workgroups=nwg,
            lds_bytes=self.lds_bytes,
            private_bytes=self.private_bytes,
        )
        ctx.kernel = self.name
        rsrc1, rsrc2, props = kd.compute_pgm_rsrc1, kd.compute_pgm_rsrc2, kd.kernel_code_properties

        # Work-items of each wave's lanes: linear id within the (possibly partial) workgroup;
        # EXEC holds the lanes below the workgroup's work-item count.
        items = (geo["nx"] * geo["ny"] * geo["nz"])[wave_wg]
        count = np.clip(items - wave_in_wg * LANES, 0, LANES).astype(np.uint64)
        full = np.uint64(0xFFFFFFFFFFFFFFFF)
        low = (np.uint64(1) << np.minimum(count, np.uint64(63))) - np.uint64(1)
        wv.set_exec(slice(None), np.where(count >= LANES, full, low))
        lin = (wave_in_wg[:, None] * LANES + np.arange(LANES)[None, :]).astype(np.uint32)
        ids = COMPUTE_PGM_RSRC2_ENABLE_VGPR_WORKITEM_ID.get(rsrc2)
        if ids == 3:  # "undefined": the SPI still gives X (and the compiler reads nothing)
            ids = 0
        if (geo["ny"] == 1).all() and (geo["nz"] == 1).all():
            lx, ly, lz = lin, None, None  # 1-D groups: the linear id is X (lanes past the
            # end hold ids past the group's size, as unused lanes' VGPRs are undefined)
        else:
            nx, ny = (geo[k][wave_wg][:, None].astype(np.uint32) for k in ("nx", "ny"))
            lx, ly, lz = lin % nx, (lin // nx) % ny, lin // (nx * ny)
        zero = np.zeros_like(lin)
        ly = zero if ly is None else ly
        lz = zero if lz is None else lz
        if self.target in PACKED_TID_TARGETS:
            v0 = lx | (ly << 10 if ids >= 1 else 0) | (lz << 20 if ids >= 2 else 0)
            wv.vgpr[0][:] = v0 & 0x3FFFFFFF
        else:
            wv.vgpr[0][:] = lx
            if ids >= 1:
                wv.vgpr[1][:] = ly
            if ids >= 2:
                wv.vgpr[2][:] = lz

        # User SGPRs, in AMDGPUUsage order.
        s = 0

        def put(*dwords) -> None:
            nonlocal s
            for d in dwords:
                wv.sgpr[:, s] = np.asarray(d, dtype=np.int64).astype(np.uint32)
                s += 1

        def put64(v: int) -> None:
            put(v & 0xFFFFFFFF, (v >> 32) & 0xFFFFFFFF)

        if KERNEL_CODE_PROPERTY_ENABLE_SGPR_PRIVATE_SEGMENT_BUFFER.get(props):
            put(*SCRATCH_RSRC)
        if KERNEL_CODE_PROPERTY_ENABLE_SGPR_DISPATCH_PTR.get(props):
            put64(self.packet_address)
        if KERNEL_CODE_PROPERTY_ENABLE_SGPR_QUEUE_PTR.get(props):
            put64(self.queue_address)
        if KERNEL_CODE_PROPERTY_ENABLE_SGPR_KERNARG_SEGMENT_PTR.get(props):
            put64(self.kernarg_address)
        if KERNEL_CODE_PROPERTY_ENABLE_SGPR_DISPATCH_ID.get(props):
            put64(self.dispatch_id)
        if KERNEL_CODE_PROPERTY_ENABLE_SGPR_FLAT_SCRATCH_INIT.get(props):
            put64(0)  # scratch is per lane from address 0 (module docstring)
        if KERNEL_CODE_PROPERTY_ENABLE_SGPR_PRIVATE_SEGMENT_SIZE.get(props):
            put(self.private_bytes)
        # System SGPRs start right after the USER_SGPR_COUNT user SGPRs.
        s = max(s, COMPUTE_PGM_RSRC2_USER_SGPR_COUNT.get(rsrc2))
        for bit, key in (
            (COMPUTE_PGM_RSRC2_ENABLE_SGPR_WORKGROUP_ID_X, "cx"),
            (COMPUTE_PGM_RSRC2_ENABLE_SGPR_WORKGROUP_ID_Y, "cy"),
            (COMPUTE_PGM_RSRC2_ENABLE_SGPR_WORKGROUP_ID_Z, "cz"),
        ):
            if bit.get(rsrc2):
                put(geo[key][wave_wg])
        if COMPUTE_PGM_RSRC2_ENABLE_SGPR_WORKGROUP_INFO.get(rsrc2):
            # {first_wave [31], ordered_append_term [15:6] = 0, waves in the group [5:0]}
            put(waves_per[wave_wg] & 0x3F | np.where(wave_in_wg == 0, 1 << 31, 0))
        if COMPUTE_PGM_RSRC2_ENABLE_PRIVATE_SEGMENT.get(rsrc2):
            put(0)  # private segment wave byte offset
        wv.sgpr[:, FLAT_SCRATCH_LO] = 0
        wv.sgpr[:, FLAT_SCRATCH_HI] = 0

        mode = (
            COMPUTE_PGM_RSRC1_FLOAT_ROUND_MODE_32.get(rsrc1)
            | COMPUTE_PGM_RSRC1_FLOAT_ROUND_MODE_16_64.get(rsrc1) << 2
            | COMPUTE_PGM_RSRC1_FLOAT_DENORM_MODE_32.get(rsrc1) << 4
            | COMPUTE_PGM_RSRC1_FLOAT_DENORM_MODE_16_64.get(rsrc1) << 6
            | COMPUTE_PGM_RSRC1_GFX6_GFX11_ENABLE_DX10_CLAMP.get(rsrc1) << 8
            | COMPUTE_PGM_RSRC1_GFX6_GFX11_ENABLE_IEEE_MODE.get(rsrc1) << 9
        )
        ctx.waves.mode[:] = mode
        wv.pc[:] = self.program.base if self.entry is None else self.entry
        res = run(ctx, self.program)
        return res, ctx

    # -- timing ------------------------------------------------------------------------------
    def _costs(self, res: RunResult, ctx: WaveContext, geo) -> list[CostProfile]:
        """One CostProfile per workgroup of the batch (waves' mean counts, rounded up; the
        slowest wave's round trips; bytes per work-item, and how many of them were in host
        memory: the dispatcher sends those over the host link)."""
        wv = ctx.waves
        nwg = len(geo["index"])
        cnt = res.counts
        col = {c: cnt[:, i] for i, c in enumerate(CLASSES)}
        fp64 = FP64_WEIGHT.get(self.target, 1)
        valu = col["valu"] + TRANS_WEIGHT * col["trans"] + fp64 * col["valu64"]
        salu = col["salu"] + col["smem"] + col["branch"] + col["waitcnt"]
        vmem = col["vmem_load"] + col["vmem_store"]
        per_wave = np.stack([valu, salu, col["lds"], vmem], axis=1)
        sums = np.zeros((nwg, 4), dtype=np.int64)
        np.add.at(sums, wv.wg, per_wave)
        rounds = np.zeros(nwg, dtype=np.int64)
        np.maximum.at(rounds, wv.wg, res.rounds)
        loads = np.bincount(wv.wg, weights=ctx.load_bytes, minlength=nwg)
        stores = np.bincount(wv.wg, weights=ctx.store_bytes, minlength=nwg)
        hosts = np.bincount(wv.wg, weights=ctx.host_bytes, minlength=nwg)
        waves = geo["waves"]
        items = geo["nx"] * geo["ny"] * geo["nz"]
        mean = -(-sums // waves[:, None])
        lb = np.ceil(loads / items).astype(np.int64)
        sb = np.ceil(stores / items).astype(np.int64)
        hb = np.ceil(hosts / items).astype(np.int64)  # <= lb + sb: a part of those bytes
        out: list[CostProfile] = []
        seen: dict[tuple, CostProfile] = {}
        for i in range(nwg):
            key = (*mean[i].tolist(), int(rounds[i]), int(lb[i]), int(sb[i]), int(hb[i]))
            c = seen.get(key)
            if c is None:
                c = seen[key] = CostProfile(
                    valu=key[0],
                    salu=key[1],
                    lds=key[2],
                    vmem=key[3],
                    mem_rounds=key[4],
                    load_bytes=key[5],
                    store_bytes=key[6],
                    host_bytes=key[7],
                )
            out.append(c)
        return out


def _geometry(index: np.ndarray, grid, wgsize, counts) -> dict[str, np.ndarray]:
    """Per workgroup (linear `index`): its coordinates, its work-items per dimension (a
    partial workgroup at the grid's edge has fewer) and its waves."""
    ncx, ncy, _ = counts
    cx = index % ncx
    cy = (index // ncx) % ncy
    cz = index // (ncx * ncy)
    dims = []
    for c, w, g in zip((cx, cy, cz), wgsize, grid, strict=True):
        dims.append(np.minimum(w, g - c * w))
    nx, ny, nz = dims
    waves = -(-(nx * ny * nz) // LANES)
    return {"index": index, "cx": cx, "cy": cy, "cz": cz, "nx": nx, "ny": ny, "nz": nz,
            "waves": waves}  # fmt: skip


def batch_limit(vgprs: int, private_bytes: int) -> int:
    """Waves per batch for a kernel of this many VGPRs and private bytes per lane."""
    per_wave = 256 * vgprs + LANES * private_bytes + 1024
    return max(1, min(MAX_BATCH_WAVES, MAX_BATCH_BYTES // per_wave))


_PROGRAMS: dict[tuple[str, int, int], Program] = {}


def program_for(code: bytes, base: int, target: str, name: str = "") -> Program:
    """The decoded program of these code bytes at `base` (kept across dispatches, so each
    instruction is decoded once per loaded code object)."""
    key = (target, base, hash(code))
    prog = _PROGRAMS.get(key)
    if prog is None or prog.code != code:
        if len(_PROGRAMS) > 64:
            _PROGRAMS.clear()
        prog = _PROGRAMS[key] = Program(code, base, target, name)
    return prog


def elf_kernel_name(image: bytes, kd_vaddr: int) -> str | None:
    """The kernel whose descriptor symbol (`name.kd`) is at `kd_vaddr` in a loaded AMDGPU
    code object `image` (its bytes from load address 0), read as a debugger reads a loaded
    code object: program headers -> PT_DYNAMIC -> DT_SYMTAB/DT_STRTAB/DT_HASH. None when
    the image holds no such symbol."""
    try:
        if image[:4] != b"\x7fELF" or image[4] != 2:
            return None
        (phoff,) = struct.unpack_from("<Q", image, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", image, 0x36)
        dyn = {}
        for i in range(phnum):
            ptype, _f, off, vaddr, _p, filesz = struct.unpack_from(
                "<IIQQQQ", image, phoff + i * phentsize
            )
            if ptype == 2:  # PT_DYNAMIC
                for j in range(0, filesz, 16):
                    tag, val = struct.unpack_from("<qQ", image, vaddr + j)
                    if tag == 0:
                        break
                    dyn[tag] = val
        symtab, strtab, hashtab = dyn.get(6), dyn.get(5), dyn.get(4)
        if symtab is None or strtab is None or hashtab is None:
            return None
        (nsyms,) = struct.unpack_from("<I", image, hashtab + 4)  # nchain
        for i in range(nsyms):
            st_name, _info, _other, _shndx, value, _size = struct.unpack_from(
                "<IBBHQQ", image, symtab + 24 * i
            )
            if value != kd_vaddr or not st_name:
                continue
            end = image.index(b"\0", strtab + st_name)
            sym = image[strtab + st_name : end].decode(errors="replace")
            if sym.endswith(".kd"):
                return sym[:-3]
    except (struct.error, ValueError, IndexError):
        return None
    return None


__all__ = ["IsaKernel", "Program", "batch_limit", "elf_kernel_name", "program_for"]
