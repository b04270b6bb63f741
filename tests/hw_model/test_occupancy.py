"""Occupancy rules against AMD's occupancy guide and LLVM's AMDGPU tables, and the CLI."""

from __future__ import annotations

import json

import pytest

from hw_model.config import PRESETS
from hw_model.occupancy import format_occupancy, occupancy, wg_requirements
from rocr.cli import main

GFX900, GFX942 = PRESETS["gfx900"], PRESETS["gfx942"]


def test_guide_worked_example_gfx942():
    """The guide: 170 VGPRs are allocated as 176, and 176 x 3 > 512, so 2 waves per EU; with
    16 KiB of LDS and 4-wave workgroups: occ = min(floor(2*4/4), floor(65536/16384)) * 4/4."""
    occ = occupancy(GFX942, workgroup_size=256, vgprs=170, sgprs=32, lds=16384)
    assert occ.vgprs_allocated == 176
    assert occ.waves_per_simd_limit["vgprs"] == 2
    assert occ.workgroups_per_cu_limit["lds"] == 4
    guide = min((2 * 4) // 4, 65536 // 16384) * 4 / 4
    assert occ.waves_per_simd == guide == 2
    assert occ.workgroups_per_cu == 2 and occ.waves_per_cu == 8
    assert occ.limited_by == ["vgprs"]


@pytest.mark.parametrize(
    ("vgprs", "waves"),
    # MI300X tuning guide, table 1 (512 VGPRs per lane, granule 8, at most 8 waves per EU)
    [
        (64, 8),
        (65, 7),
        (72, 7),
        (80, 6),
        (96, 5),
        (128, 4),
        (168, 3),
        (169, 2),
        (256, 2),
        (257, 1),
        (512, 1),
    ],
)
def test_vgpr_table_cdna3(vgprs, waves):
    occ = occupancy(GFX942, workgroup_size=64, vgprs=vgprs)
    assert occ.waves_per_simd == waves


@pytest.mark.parametrize(
    ("vgprs", "waves"),
    # GCN: 256 VGPRs per lane, granule 4, at most 10 waves per SIMD
    [(24, 10), (28, 9), (32, 8), (36, 7), (40, 6), (48, 5), (64, 4), (84, 3), (128, 2), (256, 1)],
)
def test_vgpr_table_gcn(vgprs, waves):
    assert occupancy(GFX900, workgroup_size=64, vgprs=vgprs).waves_per_simd == waves


@pytest.mark.parametrize("lds", [1, 512, 513, 4096, 20000, 32768, 65536])
def test_lds_limit_is_floor_of_64k_over_the_granulated_size(lds):
    occ = occupancy(GFX900, workgroup_size=64, vgprs=4, lds=lds)
    granulated = -(-lds // 512) * 512
    assert occ.lds_allocated == granulated
    assert occ.workgroups_per_cu_limit["lds"] == 65536 // granulated


def test_workgroup_size_rounds_waves_and_a_3_wave_group_leaves_slots_unused():
    # 2 waves per SIMD from VGPRs = 8 per CU; groups of 3 waves: only 2 fit (6 waves).
    occ = occupancy(GFX900, workgroup_size=192, vgprs=128)
    assert occ.waves_per_workgroup == 3
    assert occ.workgroups_per_cu == 2 and occ.waves_per_simd == 1.5


def test_barriers_limit_multi_wave_groups_to_16_but_not_single_wave_groups():
    two_waves = occupancy(GFX900, workgroup_size=128, vgprs=4)
    assert two_waves.workgroups_per_cu == 16 and two_waves.limited_by == ["barriers"]
    one_wave = occupancy(GFX900, workgroup_size=64, vgprs=4)
    assert one_wave.workgroups_per_cu == 40 and one_wave.limited_by == ["wave_slots"]
    assert one_wave.workgroups_per_cu_limit["barriers"] is None


def test_sgprs_are_allocated_in_blocks_of_16_from_800():
    occ = occupancy(GFX900, workgroup_size=64, vgprs=4, sgprs=81)
    assert occ.sgprs_allocated == 96 and occ.waves_per_simd == 800 // 96


def test_scratch_waves_need_one_of_32_scratch_slots():
    occ = occupancy(GFX900, workgroup_size=64, vgprs=4, private_segment_size=16)
    assert occ.scratch_per_wave == 1024  # 16 B x 64 lanes, in 256-dword blocks
    assert occ.workgroups_per_cu == 32 and occ.limited_by == ["scratch_slots"]


def test_requirements_match_the_occupancy_report():
    req = wg_requirements(GFX942, 256, 170, 32, 16384)
    occ = occupancy(GFX942, workgroup_size=256, vgprs=170, sgprs=32, lds=16384)
    assert (req.waves, req.vgprs, req.sgprs, req.lds) == (
        occ.waves_per_workgroup,
        occ.vgprs_allocated,
        occ.sgprs_allocated,
        occ.lds_allocated,
    )
    assert req.barrier and req.scratch == 0


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        (dict(workgroup_size=0, vgprs=4), "workgroup size 0"),
        (dict(workgroup_size=2048, vgprs=4), "1..1024"),
        (dict(workgroup_size=64, vgprs=300), "0..256"),
        (dict(workgroup_size=64, vgprs=4, sgprs=200), "SGPRs"),
        (dict(workgroup_size=64, vgprs=4, lds=70000), "LDS"),
        (dict(workgroup_size=64, vgprs=4, private_segment_size=-1), "negative"),
    ],
)
def test_bad_input_is_explained(kwargs, words):
    with pytest.raises(ValueError, match=words):
        occupancy(GFX900, **kwargs)


def test_report_marks_the_limit():
    text = format_occupancy(occupancy(GFX942, workgroup_size=256, vgprs=170, lds=16384))
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("VGPRs"))
    assert "176" in line and "<- limit" in line
    assert "waves per SIMD     2 of 8 (25% occupancy)" in text


def test_cli(capsys):
    argv = ["occupancy", "--preset", "gfx942", "--vgprs", "170", "--sgprs", "32"]
    assert main([*argv, "--lds", "16384", "--workgroup", "256"]) == 0
    out = capsys.readouterr().out
    assert "workgroups per CU  2" in out and "limited by         vgprs" in out
    assert main([*argv, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["waves_per_simd"] == 2 and data["limited_by"] == ["vgprs"]


def test_cli_bad_input_exits_2_with_a_message(capsys):
    assert main(["occupancy", "--preset", "gfx900", "--vgprs", "600"]) == 2
    err = capsys.readouterr().err
    assert "600 VGPRs" in err and "0..256" in err
