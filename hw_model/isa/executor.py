"""The gfx9 interpreter loop: runs a batch of waves over a kernel's machine code.

Waves that stand at the same PC execute together: each step picks the lowest PC among the
waves that can issue and runs that instruction for all of them, vectorized over waves and
lanes. Taking the lowest PC first lets waves that split at a data-dependent scalar branch
(a loop that runs longer in some waves) meet again where their paths join, so a grid is
not interpreted wave by wave.

Each code address is decoded once (`Program`); the semantics come from the tables of
`salu`, `valu`, `vmem` and `lds` (each exports `OPS`: mnemonic -> fn(ctx, ins, w)).

`s_barrier` parks a wave until every wave of its workgroup that has not ended arrives
(a workgroup whose other waves ended does not wait for them, as on hardware where the
barrier counts only live waves). Here waves are released when nothing else can issue,
which is when every live wave of the batch stands at a barrier.

Faults: an access the page tables refuse (`MemoryFault`) or an instruction the
interpreter cannot run (`IllegalInstruction`) stops the workgroup where it happened and
every later workgroup of the batch; earlier workgroups run to the end (the dispatcher
places workgroups in order and stops after the faulting one).

Counting for the timing model: per wave, instructions by class (`CLASSES`) and dependent
memory round trips — an `s_waitcnt` that has to wait for a vector-memory or scalar-memory
operation still outstanding (memory itself completes at issue here).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from hw_model.isa.decoder import DecodeError, Instruction, decode_one
from hw_model.isa.salu import waitcnt_fields
from hw_model.isa.wave import EXEC_HI, EXEC_LO, IllegalInstruction, WaveContext
from hw_model.memory import MemoryFault

# Instruction classes the executor counts per wave.
CLASSES = (
    "salu",  # SOP1/SOP2/SOPK/SOPC and SOPP other than branches and waits
    "smem",  # scalar memory (s_load_*, s_buffer_load_*)
    "valu",  # vector ALU at full rate
    "trans",  # transcendental VALU (quarter rate)
    "valu64",  # double-precision VALU (rate depends on the target)
    "lds",  # DS instructions
    "vmem_load",  # FLAT/GLOBAL/SCRATCH/MUBUF loads
    "vmem_store",  # their stores and atomics
    "branch",  # s_branch, s_cbranch_*, s_setpc/s_swappc/s_call
    "waitcnt",  # s_waitcnt
)
C = {name: i for i, name in enumerate(CLASSES)}

_SEMANTICS = ("salu", "valu", "vmem", "lds")
IMPORT_ERRORS: dict[str, str] = {}
_OPS: dict[str, Callable] | None = None
_TRANSCENDENTAL: frozenset[str] = frozenset()


def operations() -> dict[str, Callable]:
    """Every mnemonic the interpreter can run, merged from the semantics modules. A module
    that is missing (or fails to import) contributes nothing; its error is kept for the
    message of the instructions it would have run."""
    global _OPS, _TRANSCENDENTAL
    if _OPS is None:
        ops: dict[str, Callable] = {}
        trans: set[str] = set()
        for mod in _SEMANTICS:
            try:
                m = importlib.import_module(f"hw_model.isa.{mod}")
            except Exception as e:  # noqa: BLE001 - reported in IllegalInstruction messages
                IMPORT_ERRORS[mod] = f"{type(e).__name__}: {e}"
                continue
            ops.update(getattr(m, "OPS", {}))
            trans |= set(getattr(m, "TRANSCENDENTAL", ()))
        _OPS = ops
        _TRANSCENDENTAL = frozenset(trans)
    return _OPS


_SUFFIXES = ("_e32", "_e64", "_sdwa", "_dpp")
_BRANCHES = ("s_setpc_b64", "s_swappc_b64", "s_call_b64")


def classify(ins: Instruction) -> int:
    enc = ins.encoding
    name = ins.mnemonic or ""
    if enc == "SMEM":
        return C["smem"]
    if enc in ("SOP1", "SOP2", "SOPK", "SOPC"):
        return C["branch"] if name in _BRANCHES else C["salu"]
    if enc == "SOPP":
        if name.startswith(("s_branch", "s_cbranch")):
            return C["branch"]
        return C["waitcnt"] if name == "s_waitcnt" else C["salu"]
    if enc == "DS":
        return C["lds"]
    if enc in ("FLAT", "GLOBAL", "SCRATCH", "MUBUF"):
        return C["vmem_load"] if "load" in name and "atomic" not in name else C["vmem_store"]
    base = name
    for s in _SUFFIXES:
        base = base.removesuffix(s)
    if name in _TRANSCENDENTAL or {base, base + "_e32", base + "_e64"} & _TRANSCENDENTAL:
        return C["trans"]
    if "f64" in name:
        return C["valu64"]
    return C["valu"]


# Which waits a class's operations count against (gfx9: vmcnt for vector memory, loads and
# stores alike; lgkmcnt for LDS, scalar memory, and FLAT, which may go to LDS).
_VM = (C["vmem_load"], C["vmem_store"])


class Program:
    """A kernel's machine code at its GPU address, decoded once per address on demand."""

    def __init__(self, code: bytes, base: int, target: str, name: str = "") -> None:
        self.code = bytes(code)
        self.base = base
        self.target = target
        self.name = name
        self._at: dict[int, tuple[Instruction, Callable, int]] = {}

    def at(self, pc: int) -> tuple[Instruction, Callable, int]:
        hit = self._at.get(pc)
        if hit is not None:
            return hit
        off = pc - self.base
        if off < 0 or off + 4 > len(self.code) or pc % 4:
            raise IllegalInstruction(
                f"PC {pc:#x} is outside the kernel's code [{self.base:#x}, "
                f"{self.base + len(self.code):#x}) or not dword aligned"
            )
        try:
            ins = decode_one(self.code, off, self.target, pc)
        except DecodeError as e:
            raise IllegalInstruction(str(e)) from None
        fn = operations().get(ins.mnemonic) if ins.mnemonic else None
        if fn is None:
            words = " ".join(f"{x:08x}" for x in ins.words)
            if ins.mnemonic is None:
                what = f"{ins.encoding} opcode {ins.opcode:#x} (words {words})"
                why = f"is not a {self.target} instruction"
            else:
                what = f"{ins.mnemonic} (words {words})"
                why = "is not supported by the interpreter"
                missing = [m for m in _SEMANTICS if m in IMPORT_ERRORS]
                if missing:
                    why += f" ({', '.join(missing)} semantics unavailable)"
            raise IllegalInstruction(f"{what} {why}")
        hit = self._at[pc] = (ins, fn, classify(ins))
        return hit


@dataclass
class RunResult:
    """What a batch did: counts per wave and the first stop, by batch-local workgroup."""

    counts: np.ndarray  # (n, len(CLASSES)) int64
    rounds: np.ndarray  # (n,) dependent memory round trips
    steps: int = 0  # instructions issued (each for a group of waves)
    lanes: int = 0  # lane-instructions: EXEC lanes of every wave instruction issued
    fault: MemoryFault | None = None
    fault_wg: int | None = None
    illegal: str | None = None
    illegal_wg: int | None = None
    extra: dict = field(default_factory=dict)

    @property
    def stop_wg(self) -> int | None:
        c = [g for g in (self.fault_wg, self.illegal_wg) if g is not None]
        return min(c) if c else None


def _describe(ins: Instruction | None, pc: int, kernel: str, detail: str) -> str:
    where = f"at PC {pc:#x} in kernel {kernel}" if kernel else f"at PC {pc:#x}"
    if ins is not None and ins.mnemonic and ins.mnemonic not in detail:
        return f"{ins.mnemonic} {where}: {detail}"
    return f"illegal instruction {where}: {detail}"


def run(ctx: WaveContext, program: Program, max_steps: int = 50_000_000) -> RunResult:
    """Run every wave of `ctx.waves` to s_endpgm (or its workgroup's stop)."""
    wv = ctx.waves
    n = wv.n
    counts = np.zeros((n, len(CLASSES)), dtype=np.int64)
    rounds = np.zeros(n, dtype=np.int64)
    vm_out = np.zeros(n, dtype=np.int64)  # vector memory operations not waited for
    lgkm_out = np.zeros(n, dtype=np.int64)  # LDS + scalar memory + FLAT
    smem_out = np.zeros(n, dtype=np.int64)  # of which scalar (or FLAT) memory
    res = RunResult(counts, rounds)
    all_waves = np.arange(n)
    kernel = ctx.kernel or program.name

    def stop(g: int) -> None:
        wv.done[wv.wg >= g] = True

    sgpr = wv.sgpr
    pcs = wv.pc
    steps = 0
    while True:
        blocked = wv.done | wv.barrier
        if not blocked.any():
            # Every wave can issue: most often all stand at one PC (no selection needed).
            pc = int(pcs.min())
            if pc == pcs.max():
                idx = all_waves
                w = slice(None)
            else:
                idx = np.flatnonzero(pcs == pc)
                w = idx
        else:
            active = ~blocked
            if not active.any():
                if not (wv.barrier & ~wv.done).any():
                    break
                wv.barrier[:] = False  # every live wave is at a barrier: release them all
                continue
            pc = int(pcs[active].min())
            idx = np.flatnonzero(active & (pcs == pc))
            w = slice(None) if len(idx) == n else idx
        steps += 1
        if steps > max_steps:
            res.illegal = (
                f"kernel {kernel} did not finish after {max_steps} instruction issues "
                f"(PC {pc:#x}); an endless loop?"
            )
            res.illegal_wg = int(wv.wg[idx].min())
            break
        ins = None
        lanes = int(
            np.bitwise_count(sgpr[w, EXEC_LO]).sum() + np.bitwise_count(sgpr[w, EXEC_HI]).sum()
        )
        try:
            ins, fn, cls = program.at(pc)
            wv.pc[w] += ins.size
            fn(ctx, ins, w)
        except IllegalInstruction as e:
            g = int(wv.wg[idx].min())
            if res.stop_wg is None or g < res.stop_wg:
                res.illegal = _describe(ins, pc, kernel, str(e))
                res.illegal_wg = g
                res.fault = res.fault_wg = None
            stop(g)
            continue
        except MemoryFault as e:
            g, fault = _find_fault(ctx, ins, fn, idx, pc, e)
            if res.stop_wg is None or g < res.stop_wg:
                res.fault, res.fault_wg = fault, g
                res.illegal = res.illegal_wg = None
            stop(g)
            # Waves of earlier workgroups executed the instruction in _find_fault.
            idx = idx[wv.wg[idx] < g]
            if not len(idx):
                continue
            w = idx
        counts[w, cls] += 1
        res.lanes += lanes
        if cls in _VM:
            vm_out[w] += 1
            if ins.encoding == "FLAT":  # a flat access may go to LDS: it counts both
                lgkm_out[w] += 1
        elif cls == C["lds"]:
            lgkm_out[w] += 1
        elif cls == C["smem"]:
            lgkm_out[w] += 1
            smem_out[w] += 1
        elif cls == C["waitcnt"]:
            vm, _exp, lgkm = waitcnt_fields(ins.fields["simm16"])
            waits_vm = vm_out[w] > vm
            waits_lgkm = (lgkm_out[w] > lgkm) & (smem_out[w] > 0)
            rounds[w] += waits_vm | waits_lgkm
            vm_out[w] = np.minimum(vm_out[w], vm)
            lgkm_out[w] = np.minimum(lgkm_out[w], lgkm)
            smem_out[w] = np.minimum(smem_out[w], lgkm)
    res.steps = steps
    return res


def _find_fault(
    ctx: WaveContext, ins, fn, idx: np.ndarray, pc: int, exc: MemoryFault
) -> tuple[int, MemoryFault]:
    """The lowest workgroup among waves `idx` whose access at `pc` faults, and its fault.
    Waves of lower workgroups are made to complete the instruction."""
    wv = ctx.waves
    order = idx[np.argsort(wv.wg[idx], kind="stable")]
    hinted = getattr(exc, "waves", None)
    if hinted is not None and len(hinted):
        g = int(wv.wg[np.asarray(hinted)].min())
        before = order[wv.wg[order] < g]
        if len(before):
            wv.pc[before] = pc + ins.size
            try:
                fn(ctx, ins, before)
            except MemoryFault as again:  # another wave's lane: look wave by wave
                return _find_fault(ctx, ins, fn, before, pc, again)
        return g, exc
    for i in order:
        one = np.array([i])
        wv.pc[one] = pc + ins.size
        try:
            fn(ctx, ins, one)
        except MemoryFault as e:
            return int(wv.wg[i]), e
    # Run wave by wave nothing faulted (the fault needed waves together): charge the first.
    return int(wv.wg[order[0]]), exc
