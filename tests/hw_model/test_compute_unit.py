"""Compute unit: the fit check agrees with the occupancy rules; the fluid timing model gives
the times its equations say (docs/timing.md); DRAM bandwidth is one shared FIFO server."""

from __future__ import annotations

import itertools

import pytest

from hw_model.compute_unit import ComputeUnit, MemoryChannel, WgRun, wave_timing
from hw_model.config import PRESETS
from hw_model.engine import Engine
from hw_model.kernels.base import CostProfile
from hw_model.occupancy import WgRequirements, occupancy, wg_requirements

TEACHING = PRESETS["teaching"]  # 1 GHz: one clock is 1000 ps, memory latency 500 ns


def fill(cu: ComputeUnit, req: WgRequirements) -> list[list[int]]:
    placed = []
    while (p := cu.try_place(req)) is not None:
        cu.allocate(req, p, 0)
        placed.append(p)
    return placed


CONFIGS = list(
    itertools.product(
        [64, 128, 192, 256, 1024],  # work-items per workgroup
        [1, 24, 41, 84, 128, 170, 256, 512],  # VGPRs
        [16, 100],  # SGPRs
        [0, 3000, 16384, 40000],  # LDS bytes
        [0, 8],  # private segment bytes per work-item
    )
)


@pytest.mark.parametrize("preset", ["gfx900", "gfx942", "gem5"])
def test_idle_cu_takes_exactly_what_occupancy_says(preset):
    spec = PRESETS[preset]
    checked = 0
    for wg, vgprs, sgprs, lds, private in CONFIGS:
        if vgprs > spec.max_vgprs_per_wave:
            continue
        occ = occupancy(
            spec, workgroup_size=wg, vgprs=vgprs, sgprs=sgprs, lds=lds, private_segment_size=private
        )
        req = wg_requirements(spec, wg, vgprs, sgprs, lds, private)
        cu = ComputeUnit(spec, 0)
        placed = fill(cu, req)
        assert len(placed) == occ.workgroups_per_cu, (wg, vgprs, sgprs, lds, private)
        assert all(sum(p) == req.waves for p in placed)
        if placed:  # freeing one workgroup makes room for exactly one
            cu.release(req, placed[0], 1)
            assert cu.try_place(req) is not None
        checked += 1
    assert checked > 100


def test_release_restores_every_resource():
    cu = ComputeUnit(PRESETS["gfx900"], 0)
    before = cu.state()
    req = wg_requirements(cu.spec, 256, 64, 32, 5000, 4)
    placed = fill(cu, req)
    assert cu.resident_wgs == len(placed) > 0
    for i, p in enumerate(placed):
        cu.release(req, p, 10 + i)
    assert cu.state() == before
    assert cu.wgs_run == len(placed) and cu.busy_ps == 10 + len(placed) - 1


def test_two_kernels_share_each_simds_register_file():
    cu = ComputeUnit(PRESETS["gfx900"], 0)
    big = wg_requirements(cu.spec, 256, 128, 16, 0)  # 4 waves x 128 VGPRs: half a SIMD each
    small = wg_requirements(cu.spec, 64, 64, 16, 0)  # 1 wave x 64 VGPRs
    assert cu.try_place(big) == [1, 1, 1, 1]
    cu.allocate(big, [1, 1, 1, 1], 0)
    # 128 VGPRs left on each SIMD: two 64-VGPR waves per SIMD, 8 in all
    assert len(fill(cu, small)) == 8
    assert cu.try_place(big) is None and cu.free_vgprs == [0, 0, 0, 0]


def test_waves_spread_over_simds_starting_with_the_emptiest():
    cu = ComputeUnit(PRESETS["gfx900"], 0)
    one = wg_requirements(cu.spec, 64, 4, 16, 0)
    cu.allocate(one, [1, 0, 0, 0], 0)
    three = wg_requirements(cu.spec, 192, 4, 16, 0)
    assert cu.try_place(three) == [0, 1, 1, 1]


def test_spreads_are_recomputed_when_only_the_register_room_differs():
    # The fit check remembers its spreads by the free room of every SIMD: two CUs with the
    # same free wave slots but different free VGPRs must not share an answer, and a caller
    # that changes the list it got back does not change the next answer.
    spec = PRESETS["gfx900"]
    four = wg_requirements(spec, 256, 128, 16, 0)  # 4 waves x 128 VGPRs
    roomy, tight = ComputeUnit(spec, 0), ComputeUnit(spec, 1)
    tight.allocate(wg_requirements(spec, 64, 256, 16, 0), [1, 0, 0, 0], 0)  # SIMD0's VGPRs
    tight.release(wg_requirements(spec, 64, 4, 16, 0), [1, 0, 0, 0], 0)  # its slot back
    assert tight.free_slots == roomy.free_slots
    first = roomy.try_place(four)
    assert first == [1, 1, 1, 1]
    first[0] = 9
    assert roomy.try_place(four) == [1, 1, 1, 1]
    assert tight.try_place(four) == [0, 2, 1, 1]


def test_wave_timing_equations():
    cost = CostProfile(valu=40, salu=30, lds=10, vmem=6, mem_rounds=2, load_bytes=8)
    t = wave_timing(TEACHING, cost)
    # B: CU clocks of the busiest pipe: VALU 40*4/4, SALU 30, LDS 10*256/128, VMEM 6*64/16
    assert t.busy_ps == max(40, 30, 20, 24) * 1000
    # T: one issue every 4 clocks per instruction, plus 2 memory latencies of 500 ns
    assert t.alone_ps == 4 * (40 + 30 + 10 + 6) * 1000 + 2 * 500_000
    assert t.bytes_per_item == 8 and t.latency_ps == 500_000


def run_on_cu(jobs):
    """jobs: (start_ps, cost, waves, kernel key); returns each job's compute end tick."""
    eng = Engine()
    cu = ComputeUnit(TEACHING, 0)
    ends: dict[int, int] = {}
    cu.attach(eng, lambda run: ends.__setitem__(run.index, eng.now))
    for i, (start, cost, waves, key) in enumerate(jobs):
        req = WgRequirements(waves=waves, vgprs=4, sgprs=16, lds=0, barrier=waves > 1)
        run = WgRun(key, cu, i, (i, 0, 0), 64 * waves, req, [waves, 0, 0, 0], start)
        eng.schedule_at(start, cu.begin, run, wave_timing(TEACHING, cost), start)
    eng.run_until(10**12)
    return [ends[i] for i in range(len(jobs))]


COMPUTE = CostProfile(valu=100)  # B = 100 clocks, T = 400 clocks: a wave uses 1/4 of the CU
LATENCY = CostProfile(valu=10, mem_rounds=1)  # B = 10 clocks, T = 40 clocks + 500 ns


def test_a_lone_wave_takes_its_critical_path():
    assert run_on_cu([(0, COMPUTE, 1, "k")]) == [400_000]
    assert run_on_cu([(0, LATENCY, 1, "k")]) == [540_000]


def test_waves_share_the_cu_when_they_have_work_to_issue():
    # 4 groups x 4 waves = 16 waves, each needing B = 100 clocks of the CU: 1600 clocks
    assert run_on_cu([(0, COMPUTE, 4, "k")] * 4) == [1_600_000] * 4


def test_resident_waves_hide_latency():
    # 40 waves x 10 clocks of issue = 400 clocks < T: everyone still finishes at T
    assert run_on_cu([(0, LATENCY, 4, "k")] * 10) == [540_000] * 10


def test_a_later_arrival_slows_the_first_workgroup_from_then_on():
    # A (4 waves) alone would take 400 clocks; B arrives at 200: both progress at half speed
    # until A ends (200 + 2 * 200), then B finishes its second half alone.
    assert run_on_cu([(0, COMPUTE, 4, "a"), (200_000, COMPUTE, 4, "b")]) == [600_000, 800_000]


def test_two_kernels_share_max_min_fairly():
    lat, comp = wave_timing(TEACHING, LATENCY), wave_timing(TEACHING, COMPUTE)
    ends = run_on_cu([(0, LATENCY, 4, "lat"), (0, COMPUTE, 16, "comp")])
    # The latency-bound kernel needs less than a fair share: it gets what it can use.
    assert ends[0] == 540_000
    share = (1 - 4 * lat.cap) / 16
    done = 540_000 * share / comp.busy_ps
    expected = 540_000 + (1 - done) * 16 * comp.busy_ps
    assert abs(ends[1] - expected) <= 1


def test_memory_channel_is_one_fifo_bandwidth_server():
    ch = MemoryChannel(TEACHING)  # 64 GB/s: 64 bytes per ns
    assert ch.transfer(0, 64_000) == 1_000_000
    assert ch.transfer(0, 64_000) == 2_000_000  # queued behind the first
    assert ch.transfer(5_000_000, 64) == 5_001_000  # idle channel: starts at once
    assert ch.bytes_moved == 128_064 and ch.transfer(0, 0) == 0
