"""Compute unit: its resources (wave slots, VGPRs, SGPRs, LDS, barriers, scratch slots) and
the timing of the workgroups it runs; the GPU's DRAM as one shared bandwidth server.

Resources are those of a GCN/CDNA CU as AMD's ISA manuals and the ROCm occupancy guide
describe them: four SIMD16 units, each with wave slots, a VGPR file allocated per wave in
granules, and SGPRs; LDS, barrier slots and scratch wave slots per CU. A workgroup is resident
only when every one of its waves holds a slot and registers on some SIMD and the group holds its
LDS, a barrier (if it has more than one wave) and scratch slots (if it uses scratch); amounts
are rounded by `hw_model.occupancy.wg_requirements`, so an idle CU takes exactly the number of
workgroups `hw_model.occupancy` computes. The free amounts are bit fields of one integer
(`_Layout`): a workgroup's charge is taken and given back in one step whatever the number of
SIMDs its waves went to, and where a workgroup goes is remembered by that integer (`_Fits`).

Timing is a fluid model, event-driven and cheap (docs/timing.md has the equations and what
they leave out). From a kernel's cost profile each wave has B, the time it keeps the CU's
busiest pipe busy (VALU: 4 clocks per op on its SIMD16; the CU's scalar ALU, LDS and vector
memory pipes are shared by the four SIMDs), and T, the time it takes alone (one issue every
4 clocks per instruction plus the memory latency of each dependent round trip). The waves
resident on a CU share its pipes max-min fairly: each progresses at min(1/T, s/B) with
sum(s * waves) <= 1 over the CU. Rates change only when a workgroup arrives or finishes, so the
CU recomputes them then and schedules one event: its next workgroup to finish computing (a
workgroup alone on an idle CU gets its group only when something else needs it). A
workgroup's global bytes go through `MemoryChannel`, the DRAM bandwidth shared by all CUs,
and it finishes when both its compute and its last byte (plus latency) are done.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hw_model.config import GpuSpec
from hw_model.kernels.base import CostProfile
from hw_model.occupancy import WgRequirements, round_up, wg_requirements

if TYPE_CHECKING:
    from hw_model.engine import Engine, Event

__all__ = [
    "ComputeUnit",
    "MemoryChannel",
    "WaveTiming",
    "WgRequirements",
    "WgRun",
    "round_up",
    "wave_timing",
    "wg_requirements",
]

# Progress is a fraction of a workgroup's work; a float compared with this tolerance.
_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class WaveTiming:
    """What one wave of a kernel asks of a CU (docs/timing.md, "Per wave")."""

    busy_ps: float  # B: time the wave keeps the CU's busiest pipe busy
    alone_ps: float  # T: time the wave takes when it has the CU to itself
    bytes_per_item: int  # global bytes read + written per work-item
    latency_ps: int  # DRAM latency added after a workgroup's last byte
    # When a wave alone reaches its first global access and the access's translation fails:
    # where a bad pointer faults (docs/architecture.md, "Fault handling").
    first_access_ps: float = 0.0
    host_bytes_per_item: int = 0  # of bytes_per_item, those over the host link
    # Largest share of the CU one wave can use (it waits for itself the rest): busy / alone,
    # computed once (each workgroup's group on a CU reads it).
    cap: float = field(init=False, repr=False, compare=False)
    # waves -> (rate, ticks): a workgroup of that many waves alone on an idle CU, its rate
    # and compute time (`ComputeUnit.begin`); filled as asked.
    solo: dict[int, tuple[float, int]] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "cap", self.busy_ps / self.alone_ps)

    def solo_for(self, waves: int) -> tuple[float, int]:
        """`solo[waves]`, computed as `ComputeUnit._alone` would for a group of one run of
        `waves` waves that has done no work yet."""
        fair = 1.0 / waves
        share = self.cap if self.cap < fair else fair
        busy = self.busy_ps
        rate = share / busy if busy else 1.0 / self.alone_ps
        dt = 1.0 / rate  # (its run's work, 1.0 from v = 0.0: `_alone`'s (1.0 - 0.0) / rate)
        hit = self.solo[waves] = (rate, math.ceil(dt) if dt > 0 else 0)
        return hit


def wave_timing(spec: GpuSpec, cost: CostProfile) -> WaveTiming:
    """B and T of one wave of `cost` on a CU of `spec`."""
    simds = spec.simds_per_cu
    cyc = spec.cycle_ps
    pass_cycles = spec.wavefront_size // spec.simd_width  # 4: a wave64 op on a SIMD16
    # CU clocks of each pipe per wave; the VALU pipes are four (one per SIMD).
    valu = cost.valu * pass_cycles / simds
    salu = cost.salu / spec.salu_per_clock
    lds = cost.lds * spec.wavefront_size * 4 / spec.lds_bytes_per_clock
    vmem = cost.vmem * spec.wavefront_size / spec.vmem_lanes_per_clock
    busy = max(valu, salu, lds, vmem) * cyc
    # Alone, a wave issues one instruction each time its SIMD's turn comes (every 4 clocks),
    # and waits a full memory latency for each dependent round trip.
    instrs = cost.valu + cost.salu + cost.lds + cost.vmem
    latency = spec.memory_latency_ns * 1000
    issue = instrs * max(simds, pass_cycles) * cyc
    alone = max(issue + cost.mem_rounds * latency, cyc)
    # A cost profile does not say where in the code the first global access sits. Guess: the
    # issue time spreads evenly over the rounds, so the first access goes out after 1/(rounds
    # + 1) of it; its address translation fails (a UTCL2 walk, taken as one DRAM latency,
    # also a guess) and the fault is raised then.
    first = issue / (cost.mem_rounds + 1) + latency
    return WaveTiming(
        busy_ps=float(busy),
        alone_ps=float(alone),
        bytes_per_item=cost.load_bytes + cost.store_bytes,
        latency_ps=latency,
        first_access_ps=float(first),
        host_bytes_per_item=cost.host_bytes,
    )


class _LazyKey:
    """`WgRun.key` of a run placed with `LAZY_KEY`: its launch's key for its timing
    (`KernelLaunch.group_key`), worked out when first read and kept in the run, whose own
    attribute hides this descriptor from then on. A workgroup alone on its CU from start to
    end (an empty kernel's) never needs it."""

    def __get__(self, run: WgRun | None, owner: type | None = None) -> Any:
        if run is None:
            return self
        key = run.__dict__["key"] = run.launch.group_key(run.timing)
        return key


# `WgRun`'s `key` argument for "work it out if asked" (`_LazyKey`).
LAZY_KEY: Any = object()


class WgRun:
    """One workgroup from placement to completion."""

    # What a run starts with and mostly keeps: class defaults, which placing a workgroup does
    # not pay to store. `mem_done`: the tick its last byte is done (0: no bytes, nothing to
    # wait for). `fault`: what stops it at its first global access, if anything: the
    # MemoryFault its bad access raises, or the message of the illegal instruction its code
    # reached. `mult`: workgroups it stands for, one on this CU and one on each CU of its
    # class, CUs whose timelines are identical (the dispatcher's batched model); 1 in the
    # reference model. `phase`: 0 placed, 1 computing, 2 waiting for its last byte, 3
    # computing unwatched (`begin_unwatched`: one event, `event`, at the later of its compute
    # end and its last byte). `_coords`: None until asked (only traces and faults ask).
    mem_done = 0
    fault: Any = None
    mult = 1
    phase = 0
    event: Any = None
    _coords: tuple[int, int, int] | None = None
    key: Any = _LazyKey()

    def __init__(
        self,
        launch: Any,
        cu: ComputeUnit,
        index: int,
        coords: tuple[int, int, int] | None,
        items: int,
        req: WgRequirements,
        simds: list[int],
        start: int,
        timing: WaveTiming | None = None,
        key: Any = None,
    ) -> None:
        self.launch = launch  # the KernelLaunch (a dispatcher object)
        self.cu = cu
        self.index = index
        if coords is not None:
            self._coords = coords
        self.items = items
        self.req = req
        self.simds = simds  # waves placed on each SIMD
        self.start = start
        # Workgroups of one kernel with one timing progress alike: one group on a CU. A
        # launch that keeps `group_keys` hands every run of a timing the same key, hashed by
        # identity: the CU looks its group up twice per workgroup. `key`: that key (and
        # `timing` its timing), from a caller that already holds it; `LAZY_KEY` (with the
        # timing) from a launch's caller that may never need it.
        if key is None:
            t = self.timing = timing if timing is not None else getattr(launch, "timing", None)
            group_key = getattr(launch, "group_key", None)
            self.key = (launch, t) if group_key is None else group_key(t)
        else:
            self.timing = timing
            if key is not LAZY_KEY:
                self.key = key

    @property
    def coords(self) -> tuple[int, int, int]:
        """The workgroup's (x, y, z) id in the grid."""
        c = self._coords
        if c is None:
            c = self._coords = self.launch.wg_coords(self.index)
        return c


class _GroupKey(tuple):
    """(launch, timing) as a CU's group key, hashed and compared by identity (a C-level
    hash, not the timing dataclass's field-by-field one): one object per pair, interned in
    the launch's `group_keys` (the timing it holds keeps its id unique)."""

    __slots__ = ()
    __hash__ = object.__hash__
    __eq__ = object.__eq__
    __ne__ = object.__ne__


class _Group:
    """The resident workgroups of one kernel on one CU: their waves all progress alike."""

    __slots__ = ("timing", "cap", "waves", "v", "rate", "fifo", "unwatched", "ticks")

    def __init__(
        self,
        timing: WaveTiming,
        waves: int = 0,
        rate: float = 0.0,
        first: tuple[float, WgRun] | None = None,
    ) -> None:
        self.timing = timing
        self.cap = timing.cap
        self.waves = waves
        self.v = 0.0  # work done by each resident wave since the group formed
        self.rate = rate  # work per ps of each wave
        # (v at which it finishes, run); equal work and equal rates keep arrival order
        self.fifo: deque[tuple[float, WgRun]] = deque() if first is None else deque((first,))
        # Its runs' compute ends are known at their start (`begin_unwatched`): the CU keeps no
        # event for them; each leaves the group at its own event (`end_unwatched`). `ticks`:
        # then the compute time of each (their rate never changes).
        self.unwatched = False


class _Layout:
    """Where each free resource of a CU of one spec sits in `ComputeUnit._free`, one int: a
    bit field each, all `bits` wide (enough for the largest capacity, so a field never
    carries into the next: charges are taken only where they fit and given back once).
    SIMD i's wave slots, VGPRs (per lane) and SGPRs are fields i, n + i and 2n + i (n SIMDs);
    then the CU's wave slots, LDS bytes, barrier slots and scratch wave slots. A workgroup's
    charge is packed the same way, so taking it or giving it back is one subtraction or one
    addition, whatever the number of SIMDs its waves went to."""

    def __init__(self, spec: GpuSpec) -> None:
        self.spec = spec
        n = self.n = spec.simds_per_cu
        self.caps = (
            [spec.wave_slots_per_simd] * n
            + [spec.vgprs_per_simd_lane] * n
            + [spec.sgprs_per_simd] * n
            + [
                n * spec.wave_slots_per_simd,
                spec.lds_per_cu,
                spec.barrier_slots_per_cu,
                spec.scratch_slots_per_cu,
            ]
        )
        self.bits = max(c.bit_length() for c in self.caps)
        self.full = self.pack(self.caps)
        # requirements (by identity) -> their `_Fits`; `last`: the one asked last
        self.fits: dict[int, _Fits] = {}
        self.last = _Fits(self, None)

    def pack(self, fields: list[int]) -> int:
        b = self.bits
        return sum(v << (b * j) for j, v in enumerate(fields))

    def unpack(self, state: int) -> list[int]:
        b = self.bits
        mask = (1 << b) - 1
        return [(state >> (b * j)) & mask for j in range(len(self.caps))]

    def fits_for(self, req: WgRequirements) -> _Fits:
        f = self.fits.get(id(req))
        if f is None or f.req is not req:  # (an id reused by a newer object)
            if len(self.fits) >= _REQS_MAX:
                self.fits.clear()
            f = self.fits[id(req)] = _Fits(self, req)
        self.last = f
        return f

    def __reduce__(self) -> tuple:
        # A checkpoint holds the spec, not the remembered spreads.
        return (_layout_for, (self.spec,))


class _Fits:
    """Where a workgroup needing `req` goes on a CU of `layout`, by the CU's free state: the
    spread is a pure function of the two, and a CU running one kernel sees the same few
    states over and over, so each is worked out once. `at`: state -> (spread, charge,
    whether another fits once it is taken), () when the workgroup does not fit; `charges`:
    spread -> its charge."""

    __slots__ = ("layout", "req", "at", "charges")

    def __init__(self, layout: _Layout, req: WgRequirements | None) -> None:
        self.layout = layout
        self.req = req
        self.at: dict[int, tuple] = {}
        self.charges: dict[tuple[int, ...], int] = {}

    def work_out(self, state: int) -> tuple:
        """`at[state]`: waves go round-robin over the SIMDs that have room, starting at the
        one with the most room, as the SPI spreads a workgroup (each wave needs a slot and
        registers there); the group needs its LDS, a barrier (more than one wave) and
        scratch slots (if it uses scratch)."""
        layout, req = self.layout, self.req
        n = layout.n
        f = layout.unpack(state)
        waves, lds, barriers, scratch = f[3 * n :]
        w = req.waves  # type: ignore[union-attr]
        hit: tuple = ()
        if (
            w <= waves
            and req.lds <= lds  # type: ignore[union-attr]
            and (not req.barrier or barriers > 0)  # type: ignore[union-attr]
            and (not req.scratch or scratch >= w)  # type: ignore[union-attr]
        ):
            rv, rs = req.vgprs, req.sgprs  # type: ignore[union-attr]
            room = [min(f[i], f[n + i] // rv, f[2 * n + i] // rs) for i in range(n)]
            if sum(room) >= w:
                counts = [0] * n
                i = room.index(max(room))
                while w:
                    if room[i]:
                        room[i] -= 1
                        counts[i] += 1
                        w -= 1
                    i = (i + 1) % n
                spread = tuple(counts)
                charge = self.charge(spread)
                after = state - charge  # (fewer resources: this recursion ends)
                more = self.at.get(after)
                if more is None:
                    more = self.work_out(after)
                hit = (spread, charge, bool(more))
        if len(self.at) >= _FITS_MAX:
            self.at.clear()
        self.at[state] = hit
        return hit

    def charge(self, counts: Sequence[int]) -> int:
        """What a workgroup whose waves went to the SIMDs as `counts` holds, packed."""
        key = tuple(counts)
        c = self.charges.get(key)
        if c is None:
            req, layout = self.req, self.layout
            n = layout.n
            w = req.waves  # type: ignore[union-attr]
            fields = (
                list(key)
                + [k * req.vgprs for k in key]  # type: ignore[union-attr]
                + [k * req.sgprs for k in key]  # type: ignore[union-attr]
                + [w, req.lds, int(req.barrier), w if req.scratch else 0]  # type: ignore[union-attr]
            )
            assert len(fields) == 3 * n + 4
            c = self.charges[key] = layout.pack(fields)
        return c


# Bounds on the states each `_Fits` remembers, on the requirements each layout remembers and
# on the layouts kept for new CUs (each cleared when full; sizes chosen, not measured). A CU
# keeps its own layout.
_FITS_MAX = 4096
_REQS_MAX = 256
_LAYOUTS_MAX = 64
_LAYOUTS: dict[int, _Layout] = {}


def _layout_for(spec: GpuSpec) -> _Layout:
    """The layout of CUs of `spec` (one per spec object: the CUs of a GPU share it)."""
    layout = _LAYOUTS.get(id(spec))
    if layout is None or layout.spec is not spec:
        if len(_LAYOUTS) >= _LAYOUTS_MAX:
            _LAYOUTS.clear()
        layout = _LAYOUTS[id(spec)] = _Layout(spec)
    return layout


class ComputeUnit:
    """Resources and workgroup timing of one CU."""

    # A workgroup computing alone on the CU and its timing: the group `begin` would make for
    # it on an idle CU, not made until something else needs the CU's groups (`_group_lone`,
    # which builds exactly that group: its v is still 0.0 and `_t` its start). A workgroup
    # that arrives and leaves alone (an empty kernel's) never has one. While set, `_groups` is
    # empty. (A class default: checkpoints of CUs from before it load without it.)
    _lone: tuple[WgRun, WaveTiming] | None = None

    def __init__(self, spec: GpuSpec, index: int) -> None:
        self.spec = spec
        self.index = index
        self.shader_engine = index % spec.shader_engines  # KFD CU-mask bit order: SEs interleave
        layout = self._layout = _layout_for(spec)
        self._free = layout.full  # every free resource, packed (`_Layout`)
        self.resident_wgs = 0
        self.busy_ps = 0  # time with at least one resident workgroup
        self._busy_since = 0
        self.wgs_run = 0
        # timing
        self._engine: Engine | None = None
        self._on_compute_done: Callable[[WgRun], None] | None = None
        self._groups: dict[Any, _Group] = {}
        self._t = 0  # tick the groups' progress was last brought up to
        self._event: Event | None = None

    def attach(self, engine: Engine, on_compute_done: Callable[[WgRun], None]) -> None:
        """Connect the CU to the clock and to whoever retires its workgroups."""
        self._engine = engine
        self._on_compute_done = on_compute_done

    # -- resources -------------------------------------------------------------------------
    # Snapshots of the packed free state (`_free`), per SIMD or for the CU.
    @property
    def free_slots(self) -> list[int]:
        n = self._layout.n
        return self._layout.unpack(self._free)[:n]

    @property
    def free_vgprs(self) -> list[int]:
        n = self._layout.n
        return self._layout.unpack(self._free)[n : 2 * n]

    @property
    def free_sgprs(self) -> list[int]:
        n = self._layout.n
        return self._layout.unpack(self._free)[2 * n : 3 * n]

    @property
    def free_wave_slots(self) -> int:
        return self._layout.unpack(self._free)[-4]

    @property
    def free_lds(self) -> int:
        return self._layout.unpack(self._free)[-3]

    @property
    def free_barriers(self) -> int:
        return self._layout.unpack(self._free)[-2]

    @property
    def free_scratch_slots(self) -> int:
        return self._layout.unpack(self._free)[-1]

    @property
    def waves(self) -> int:
        return self.spec.max_waves_per_cu - self.free_wave_slots

    def fits_for(self, req: WgRequirements) -> _Fits:
        """Where workgroups needing `req` go on this CU, by its free state (`_Fits`)."""
        f = self._layout.last
        return f if f.req is req else self._layout.fits_for(req)

    def fit(self, req: WgRequirements) -> tuple[int, ...] | None:
        """Waves per SIMD if the whole workgroup fits now, else None (`try_place`, shared
        and immutable)."""
        f = self._layout.last
        if f.req is not req:
            f = self._layout.fits_for(req)
        hit = f.at.get(self._free)
        if hit is None:
            hit = f.work_out(self._free)
        return hit[0] if hit else None

    def try_place(self, req: WgRequirements) -> list[int] | None:
        """Waves per SIMD if the whole workgroup fits now, else None.

        Waves go round-robin over the SIMDs that have room, starting at the one with the most
        room, as the SPI spreads a workgroup (each wave needs a slot and registers there).
        """
        spread = self.fit(req)
        return None if spread is None else list(spread)

    def take(self, fits: _Fits, now: int) -> tuple:
        """`fit` and `allocate` in one, for a caller that holds the requirements' `_Fits`:
        (spread, charge, whether another such workgroup fits after it), or () (nothing
        taken) when the workgroup does not fit."""
        state = self._free
        hit = fits.at.get(state)
        if hit is None:
            hit = fits.work_out(state)
        if hit:
            self._free = state - hit[1]
            resident = self.resident_wgs
            if not resident:
                self._busy_since = now
            self.resident_wgs = resident + 1
        return hit

    def allocate(self, req: WgRequirements, counts: Sequence[int], now: int) -> None:
        f = self._layout.last
        if f.req is not req:
            f = self._layout.fits_for(req)
        try:  # a spread from `fit`: a tuple whose charge is known
            charge = f.charges[counts]  # type: ignore[index]
        except (KeyError, TypeError):  # (a list, from a caller of `try_place`)
            charge = f.charge(counts)
        self._free -= charge
        resident = self.resident_wgs
        if not resident:
            self._busy_since = now
        self.resident_wgs = resident + 1

    def release(self, req: WgRequirements, counts: Sequence[int], now: int) -> None:
        f = self._layout.last
        if f.req is not req:
            f = self._layout.fits_for(req)
        try:  # (as in `allocate`)
            charge = f.charges[counts]  # type: ignore[index]
        except (KeyError, TypeError):
            charge = f.charge(counts)
        self._free += charge
        left = self.resident_wgs = self.resident_wgs - 1
        self.wgs_run += 1
        if not left:
            self.busy_ps += now - self._busy_since

    # -- timing ----------------------------------------------------------------------------
    def begin(self, run: WgRun, timing: WaveTiming, now: int) -> None:
        """`run`'s waves start issuing: it joins its kernel's group and shares the CU."""
        groups = self._groups
        if not groups:
            lone = self._lone
            if lone is None:  # an idle CU: no progress to bring up, the workgroup alone
                self._t = now
                # `_alone` for its group, its end known per wave count
                waves = run.req.waves
                solo = timing.solo.get(waves)
                if solo is None:
                    solo = timing.solo_for(waves)
                self._lone = (run, timing)
                best = now + solo[1]
                ev = self._event
                if ev is not None:
                    if ev.tick == best:
                        return
                    ev.cancel()
                self._event = self._engine.schedule_at(best, self._fire, priority=1)  # type: ignore[union-attr]
                return
            # a second workgroup: the first gets its group now (`_group_lone`, inline)
            self._lone = None
            lr = lone[0]
            w = lr.req.waves
            t = lone[1]
            groups[lr.key] = _Group(t, w, t.solo[w][0], (1.0, lr))
        dt = now - self._t
        if dt:  # `_advance`, inline: twice per workgroup
            for g in groups.values():
                g.v += g.rate * dt
            self._t = now
        g = groups.get(run.key)
        if g is None:
            g = groups[run.key] = _Group(timing)
        g.waves += run.req.waves
        g.fifo.append((g.v + 1.0, run))
        if len(groups) == 1:
            self._alone(g, now)
        else:
            self._set_rates()
            self._reschedule(now)

    def begin_unwatched(self, run: WgRun, timing: WaveTiming, now: int) -> int:
        """`begin` for a workgroup whose rate no other can change: every wave on the CU runs
        at its cap, even with the CU full of them (`timing.cap * max_waves_per_cu <= 1`,
        the CU running this kernel only). Returns the tick it finishes computing (what its
        `_fire` would find) and sets no event: the caller keeps one for it and calls
        `end_unwatched` then. `watch` turns the group back into an ordinary one. -1: the
        kernel's group on the CU is an ordinary one, which `run` joined (`begin`)."""
        if self._lone is not None:
            self._group_lone()
        groups = self._groups
        dt = now - self._t
        if dt:
            for g in groups.values():
                g.v += g.rate * dt
            self._t = now
        g = groups.get(run.key)
        if g is None:
            g = groups[run.key] = _Group(timing)
            g.unwatched = True
            busy = timing.busy_ps
            rate = g.rate = timing.cap / busy if busy else 1.0 / timing.alone_ps
            dt = 1.0 / rate
            g.ticks = math.ceil(dt) if dt > 0 else 0
        elif not g.unwatched:  # runs of its kernel computing under the CU's event
            self.begin(run, timing, now)
            return -1
        g.waves += run.req.waves
        g.fifo.append((g.v + 1.0, run))
        run.phase = 3
        return now + g.ticks

    def end_unwatched(self, run: WgRun, now: int) -> None:
        """An unwatched `run` has finished computing (and maybe waited for its bytes since):
        it leaves its group, whose other runs' rates do not change, and gives its resources
        back (`release`)."""
        g = self._groups[run.key]
        fifo = g.fifo
        if fifo[0][1] is run:
            fifo.popleft()
        else:
            for i, (_, r) in enumerate(fifo):
                if r is run:
                    del fifo[i]
                    break
        req = run.req
        g.waves -= req.waves
        run.phase = 2
        if not fifo:
            del self._groups[run.key]
        # `release`, inline (its one caller retires a whole class of workgroups per call)
        f = self._layout.last
        if f.req is not req:
            f = self._layout.fits_for(req)
        try:
            charge = f.charges[run.simds]  # type: ignore[index]
        except (KeyError, TypeError):
            charge = f.charge(run.simds)
        self._free += charge
        left = self.resident_wgs = self.resident_wgs - 1
        self.wgs_run += 1
        if not left:
            self.busy_ps += now - self._busy_since

    def watch(self, now: int) -> list[WgRun]:
        """Unwatched groups become ordinary ones: runs that finished computing leave (phase
        2: their events stay, for their last byte); the others compute on under the CU's own
        event (phase 1). Returns those others: their events are the caller's to cancel."""
        self._advance(now)
        computing: list[WgRun] = []
        for key in list(self._groups):
            g = self._groups[key]
            if not g.unwatched:
                continue
            g.unwatched = False
            fifo = g.fifo
            while fifo and fifo[0][0] <= g.v + _EPS:
                run = fifo.popleft()[1]
                g.waves -= run.req.waves
                run.phase = 2
            for _, run in fifo:
                run.phase = 1
                computing.append(run)
            if not fifo:
                del self._groups[key]
        if computing:
            self._set_rates()
            self._reschedule(now)
        return computing

    def stop(self, run: WgRun, now: int) -> None:
        """`run`'s waves stop issuing before they finish (a memory fault): it leaves its
        kernel's group and the others get its share of the CU."""
        self._advance(now)
        g = self._groups.get(run.key)
        if g is None:
            return
        for i, (_, r) in enumerate(g.fifo):
            if r is run:
                del g.fifo[i]
                g.waves -= run.req.waves
                break
        else:
            return
        if not g.fifo:
            del self._groups[run.key]
        self._set_rates()
        self._reschedule(now)

    def _group_lone(self) -> None:
        """The lone workgroup's group, as `begin` made it on the idle CU (v 0.0 at `_t`)."""
        run, timing = self._lone  # type: ignore[misc]
        self._lone = None
        waves = run.req.waves
        self._groups[run.key] = _Group(timing, waves, timing.solo[waves][0], (1.0, run))

    def _advance(self, now: int) -> None:
        if self._lone is not None:
            self._group_lone()
        dt = now - self._t
        if dt:
            for g in self._groups.values():
                g.v += g.rate * dt
            self._t = now

    def _set_rates(self) -> None:
        """Max-min fair shares of the CU's busiest pipe, each capped at what a wave can use."""
        groups = self._groups
        if len(groups) == 1:
            for g in groups.values():
                fair = 1.0 / g.waves
                share = g.cap if g.cap < fair else fair
                busy = g.timing.busy_ps
                g.rate = share / busy if busy else 1.0 / g.timing.alone_ps
            return
        order = sorted(groups.values(), key=_cap_key)
        left = 1.0
        waves = sum(g.waves for g in order)
        for g in order:
            fair = left / waves
            share = g.cap if g.cap < fair else fair
            busy = g.timing.busy_ps
            g.rate = share / busy if busy else 1.0 / g.timing.alone_ps
            left -= share * g.waves
            waves -= g.waves

    def _alone(self, g: _Group, now: int) -> None:
        """`_set_rates` and `_reschedule` for a CU whose only group is `g` (the common
        case: a kernel alone), in one call."""
        fair = 1.0 / g.waves
        share = g.cap if g.cap < fair else fair
        busy = g.timing.busy_ps
        rate = g.rate = share / busy if busy else 1.0 / g.timing.alone_ps
        dt = (g.fifo[0][0] - g.v) / rate
        best = now + math.ceil(dt) if dt > 0 else now
        ev = self._event
        if ev is not None:
            if ev.tick == best:
                return
            ev.cancel()
        self._event = self._engine.schedule_at(best, self._fire, priority=1)  # type: ignore[union-attr]

    def _reschedule(self, now: int) -> None:
        """Keep one event: the next workgroup of any group to finish computing."""
        best = -1
        for g in self._groups.values():
            if g.fifo:
                dt = (g.fifo[0][0] - g.v) / g.rate
                t = now + math.ceil(dt) if dt > 0 else now
                if best < 0 or t < best:
                    best = t
        ev = self._event
        if ev is not None:
            if ev.tick == best:
                return
            ev.cancel()
            self._event = None
        if best >= 0:
            self._event = self._engine.schedule_at(best, self._fire, priority=1)  # type: ignore[union-attr]

    def _fire(self) -> None:
        self._event = None
        lone = self._lone
        if lone is not None:
            # Its group's one run done (at its event, v = rate * ceil(1 / rate) >= 1 - 1e-15,
            # within `_EPS` of its end): the group would go, the CU idle again.
            self._lone = None
            self._on_compute_done(lone[0])  # type: ignore[misc]
            return
        now = self._engine.now  # type: ignore[union-attr]
        groups = self._groups
        if len(groups) == 1:  # the loop below over one group (a kernel alone on the CU)
            (g,) = groups.values()
            fifo = g.fifo
            # `_advance` (the same sum; with nothing elapsed, v + 0.0 is v) ...
            v = g.v + g.rate * (now - self._t)
            if len(fifo) == 1 and fifo[0][0] <= v + _EPS:
                # ... kept by no one when the group's last run is done: the group goes
                groups.clear()
                self._on_compute_done(fifo[0][1])  # type: ignore[misc]
                return
            g.v = v
            self._t = now
            v += _EPS
            done: list[WgRun] = []
            while fifo and fifo[0][0] <= v:
                run = fifo.popleft()[1]
                g.waves -= run.req.waves
                done.append(run)
            if fifo:
                self._alone(g, now)
            else:
                groups.clear()
            for run in done:
                self._on_compute_done(run)  # type: ignore[misc]
            return
        dt = now - self._t
        if dt:  # `_advance`, inline
            for g in groups.values():
                g.v += g.rate * dt
            self._t = now
        done = []
        for key in list(groups):
            g = groups[key]
            fifo = g.fifo
            while fifo and fifo[0][0] <= g.v + _EPS:
                run = fifo.popleft()[1]
                g.waves -= run.req.waves
                done.append(run)
            if not fifo:
                del groups[key]
        if len(groups) == 1:
            for g in groups.values():
                self._alone(g, now)
        elif groups:  # none left: no rate to set, no event to keep
            self._set_rates()
            self._reschedule(now)
        for run in done:
            self._on_compute_done(run)  # type: ignore[misc]

    def state(self) -> dict:
        if self._lone is not None:
            self._group_lone()
        n = self._layout.n
        free = self._layout.unpack(self._free)
        return {
            "index": self.index,
            "shader_engine": self.shader_engine,
            "resident_wgs": self.resident_wgs,
            "waves": [self.spec.wave_slots_per_simd - f for f in free[:n]],
            "free_wave_slots": free[:n],
            "free_vgprs": free[n : 2 * n],
            "free_sgprs": free[2 * n : 3 * n],
            "free_lds": free[-3],
            "free_barriers": free[-2],
            "free_scratch_slots": free[-1],
            "kernels": [
                {
                    "kernel": getattr(k[0], "name", str(k[0])),
                    "waves_computing": g.waves,
                    "workgroups_computing": len(g.fifo),
                    "cu_share_per_wave": g.rate * g.timing.busy_ps,
                }
                for k, g in self._groups.items()
            ],
        }


def _cap_key(g: _Group) -> float:
    return g.cap


class MemoryChannel:
    """The GPU's DRAM bandwidth as one FIFO server shared by all CUs."""

    def __init__(self, spec: GpuSpec) -> None:
        self.ps_per_byte = 1000.0 / spec.memory_bandwidth_gbps  # GB/s = bytes per ns
        self.free_at = 0.0
        self.bytes_moved = 0
        self.busy_ps = 0.0

    def transfer_mean(self, now: int, nbytes: int, mult: int) -> int:
        """`transfer` of `mult` workgroups' `nbytes` each at once (a CU class's run): one
        reservation; each would have seen its own bytes done in turn, so all take the mean
        of those ticks."""
        ps = self.ps_per_byte
        total = nbytes * mult
        start = now if now > self.free_at else self.free_at
        t = total * ps
        free = self.free_at = start + t
        self.busy_ps += t
        self.bytes_moved += total
        return math.ceil(free) - int((mult - 1) * nbytes * ps / 2)

    def transfer(self, now: int, nbytes: int) -> int:
        """Reserve the channel for `nbytes`; returns the tick the last byte has moved."""
        if nbytes <= 0:
            return now
        start = now if now > self.free_at else self.free_at
        t = nbytes * self.ps_per_byte
        self.free_at = start + t
        self.busy_ps += t
        self.bytes_moved += nbytes
        return math.ceil(self.free_at)
