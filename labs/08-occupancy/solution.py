"""Lab 8 reference solution."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "lab8_starter", Path(__file__).with_name("starter.py")
)
starter = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(starter)
s = starter

# Measured with Gpu.measure("chase", w): 1 workgroup 9.34 us, 20 (one round) 10.1 us,
# 40 (two) 14.44 us, 80 (four) 23.12 us: ~4.34 us per round, ~5 us fixed.
FIXED_US = 5.0
ROUND_US = 4.34


def _up(x: int, granule: int) -> int:
    return -(-x // granule) * granule


def workgroups_per_cu(workgroup_size: int, vgprs: int, sgprs: int, lds: int) -> tuple[int, str]:
    waves = -(-workgroup_size // s.WAVEFRONT)
    per_simd = {
        "wave_slots": s.WAVE_SLOTS_PER_SIMD,
        "vgprs": s.VGPRS_PER_SIMD_LANE // _up(max(vgprs, 1), s.VGPR_GRANULE),
        "sgprs": s.SGPRS_PER_SIMD // _up(max(sgprs, 1), s.SGPR_GRANULE),
    }
    limits = {name: s.SIMDS_PER_CU * n // waves for name, n in per_simd.items()}
    if lds:
        limits["lds"] = s.LDS_PER_CU // _up(lds, s.LDS_GRANULE)
    if waves > 1:
        limits["barriers"] = s.BARRIERS_PER_CU
    name = min(limits, key=limits.get)
    return limits[name], name


def predict_us(kernel: str, vgprs: int, sgprs: int, workgroups: int, lds: int = 0) -> float:
    per_round = s.CUS * workgroups_per_cu(s.WG, vgprs, sgprs, lds)[0]
    rounds = -(-workgroups // per_round)
    return FIXED_US + rounds * ROUND_US


if __name__ == "__main__":
    starter.workgroups_per_cu, starter.predict_us = workgroups_per_cu, predict_us
    sys.exit(starter.main(sys.argv[1:]))
