"""A CU's free resources are one packed integer (`ComputeUnit._free`), each workgroup's
charge packed alike and each spread remembered by the CU's state: everything a caller reads
(where a workgroup's waves go, whether it fits, the free counts, occupancy reports) is what
per-SIMD counters updated SIMD by SIMD give."""

from __future__ import annotations

import random

import pytest

from hw_model.compute_unit import ComputeUnit
from hw_model.config import PRESETS
from hw_model.occupancy import WgRequirements, wg_requirements


class _Counters:
    """The per-SIMD bookkeeping the packed state replaces: lists and counters, the spread
    worked out from them every time."""

    def __init__(self, spec) -> None:
        n = spec.simds_per_cu
        self.slots = [spec.wave_slots_per_simd] * n
        self.vgprs = [spec.vgprs_per_simd_lane] * n
        self.sgprs = [spec.sgprs_per_simd] * n
        self.waves = n * spec.wave_slots_per_simd
        self.lds = spec.lds_per_cu
        self.barriers = spec.barrier_slots_per_cu
        self.scratch = spec.scratch_slots_per_cu

    def fit(self, req: WgRequirements) -> list[int] | None:
        w = req.waves
        if w > self.waves or req.lds > self.lds:
            return None
        if req.barrier and self.barriers <= 0:
            return None
        if req.scratch and self.scratch < w:
            return None
        room = [
            min(s, v // req.vgprs, g // req.sgprs)
            for s, v, g in zip(self.slots, self.vgprs, self.sgprs, strict=True)
        ]
        if sum(room) < w:
            return None
        counts = [0] * len(room)
        i = room.index(max(room))
        while w:
            if room[i]:
                room[i] -= 1
                counts[i] += 1
                w -= 1
            i = (i + 1) % len(room)
        return counts

    def charge(self, req: WgRequirements, counts: list[int], sign: int) -> None:
        for i, c in enumerate(counts):
            self.slots[i] -= sign * c
            self.vgprs[i] -= sign * c * req.vgprs
            self.sgprs[i] -= sign * c * req.sgprs
        self.waves -= sign * req.waves
        self.lds -= sign * req.lds
        self.barriers -= sign * int(req.barrier)
        self.scratch -= sign * (req.waves if req.scratch else 0)

    def free(self) -> tuple:
        return (
            self.slots,
            self.vgprs,
            self.sgprs,
            self.waves,
            self.lds,
            self.barriers,
            self.scratch,
        )


def _free(cu: ComputeUnit) -> tuple:
    return (
        cu.free_slots,
        cu.free_vgprs,
        cu.free_sgprs,
        cu.free_wave_slots,
        cu.free_lds,
        cu.free_barriers,
        cu.free_scratch_slots,
    )


@pytest.mark.parametrize("preset", ["teaching", "gfx900", "gfx942"])
def test_packed_free_state_places_and_counts_as_per_simd_counters(preset):
    spec = PRESETS[preset]
    rnd = random.Random(preset)
    reqs = [
        wg_requirements(spec, items, vgprs, sgprs, lds, private)
        for items, vgprs, sgprs, lds, private in [
            (64, 4, 16, 0, 0),
            (256, 24, 40, 0, 0),
            (192, 100, 16, 8192, 0),
            (1024, 8, 102, 0, 0),
            (128, 64, 16, 32768, 16),
            (64, 256, 16, 0, 0),
        ]
    ]
    cu, ref = ComputeUnit(spec, 0), _Counters(spec)
    held: list[tuple[WgRequirements, tuple[int, ...]]] = []
    fits = {id(r): cu.fits_for(r) for r in reqs}
    for step in range(3000):
        if held and (rnd.random() < 0.45 or len(held) > 40):
            req, counts = held.pop(rnd.randrange(len(held)))
            cu.release(req, counts if rnd.random() < 0.5 else list(counts), step)
            ref.charge(req, list(counts), -1)
        else:
            req = rnd.choice(reqs)
            want = ref.fit(req)
            assert cu.try_place(req) == want
            if want is None:
                assert not cu.take(fits[id(req)], step)
                continue
            if rnd.random() < 0.5:
                spread, _, more = cu.take(fits[id(req)], step)
                ref.charge(req, want, 1)
                assert more == (ref.fit(req) is not None)
            else:
                spread = cu.fit(req)
                cu.allocate(req, want if rnd.random() < 0.5 else spread, step)  # type: ignore[arg-type]
                ref.charge(req, want, 1)
            assert list(spread) == want  # type: ignore[arg-type]
            held.append((req, tuple(want)))
        assert _free(cu) == ref.free()
        assert cu.resident_wgs == len(held)
    state = cu.state()
    assert state["free_wave_slots"] == ref.slots and state["free_vgprs"] == ref.vgprs
    assert state["free_lds"] == ref.lds and state["free_scratch_slots"] == ref.scratch


def test_an_idle_cu_reads_as_the_spec_says():
    spec = PRESETS["gfx942"]
    free = _free(ComputeUnit(spec, 3))
    assert free == _Counters(spec).free()
    assert ComputeUnit(spec, 3).waves == 0
