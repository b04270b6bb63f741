"""Occupancy: how many waves and workgroups of one kernel a compute unit holds at once.

Models the resource check of the SPI (the shader processor input, which launches waves on a
CU) for GCN/CDNA, as AMD's ROCm occupancy guide states it:

    occ = min(floor(occ_vgpr * 4 / waves_per_wg), occ_lds) * waves_per_wg / 4

where occ_vgpr is the waves per SIMD the VGPR file allows and occ_lds the workgroups per CU
the LDS allows; extended with the other per-SIMD and per-CU limits the hardware has. Facts:
granules and register file sizes from LLVM's AMDGPUBaseInfo (getVGPRAllocGranule,
getTotalNumVGPRs, getSGPRAllocGranule, getTotalNumSGPRs, getMaxWavesPerEU), barriers from its
getMaxWorkGroupsPerCU (16 per CU; one-wave workgroups need none), LDS and scratch blocks from
getSIProgramInfo (128 and 256 dwords), scratch wave slots from amdgpu gfx_v9_0_get_cu_info.

Every amount here is what the hardware reserves, rounded to its allocation granule; the
dispatcher's fit check (`ComputeUnit.try_place`) takes the same rounded amounts out of the same
per-SIMD and per-CU pools, so on an idle CU it places exactly `workgroups_per_cu` workgroups.

This module is pure spec arithmetic with no hardware state: `rocr.cli` imports it (with
`hw_model.config`) for the `hsaemu occupancy` subcommand, the way a ROCm tool links a table.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, computed_field

from hw_model.config import GpuSpec

# Order in which a tie for the limiting resource is reported (the guide's order first).
RESOURCES = ("vgprs", "lds", "wave_slots", "sgprs", "barriers", "scratch_slots")


@dataclass(frozen=True, slots=True)
class WgRequirements:
    """What one workgroup of a dispatch takes from a CU, rounded to allocation granules."""

    waves: int
    vgprs: int  # per wave (per lane), rounded to the VGPR granule
    sgprs: int  # per wave, rounded to the SGPR granule
    lds: int  # bytes per workgroup, rounded to the LDS granule
    barrier: bool  # needs a barrier slot (more than one wave)
    scratch: int = 0  # bytes of scratch per wave (0: needs no scratch wave slot)


def round_up(x: int, granule: int) -> int:
    return -(-x // granule) * granule if granule > 1 else x


def wg_requirements(
    spec: GpuSpec,
    workitems: int,
    vgprs: int,
    sgprs: int,
    lds_bytes: int,
    private_segment_size: int = 0,
) -> WgRequirements:
    """Requirements of a workgroup of `workitems` work-items.

    `vgprs`/`sgprs` are the per-wave counts the kernel descriptor encodes (SGPRs including
    VCC, FLAT_SCRATCH and XNACK_MASK, as `.sgpr_count` reports them); `lds_bytes` the group
    segment size (static + dynamic, as the dispatch packet gives it); `private_segment_size`
    the scratch bytes per work-item.
    """
    waves = -(-workitems // spec.wavefront_size)
    scratch = 0
    if private_segment_size > 0:
        scratch = round_up(private_segment_size * spec.wavefront_size, spec.scratch_alloc_granule)
    return WgRequirements(
        waves=waves,
        vgprs=round_up(max(vgprs, 1), spec.vgpr_alloc_granule),
        sgprs=round_up(max(sgprs, 1), spec.sgpr_alloc_granule),
        lds=round_up(lds_bytes, spec.lds_alloc_granule),
        barrier=waves > 1,
        scratch=scratch,
    )


def workgroups_per_cu(spec: GpuSpec, req: WgRequirements) -> int:
    """Workgroups an idle CU holds at once (`Occupancy.workgroups_per_cu`, without building
    the report: the dispatcher asks on every launch)."""
    s = spec
    w = req.waves
    simds = s.simds_per_cu
    fit = simds * min(s.wave_slots_per_simd, s.vgprs_per_simd_lane // req.vgprs) // w
    fit = min(fit, simds * (s.sgprs_per_simd // req.sgprs) // w)
    if req.lds:
        fit = min(fit, s.lds_per_cu // req.lds)
    if req.barrier:
        fit = min(fit, s.barrier_slots_per_cu)
    if req.scratch:
        fit = min(fit, s.scratch_slots_per_cu // w)
    return fit


class Occupancy(BaseModel):
    """Occupancy of one kernel configuration on one CU of a GPU preset."""

    model_config = ConfigDict(frozen=True)
    target: str
    workgroup_size: int
    waves_per_workgroup: int
    vgprs: int
    vgprs_allocated: int
    sgprs: int
    sgprs_allocated: int
    lds: int
    lds_allocated: int
    scratch_per_wave: int
    # Waves per SIMD the slots / each register file would allow on its own.
    waves_per_simd_limit: dict[str, int]
    # Workgroups per CU each resource allows on its own (None: not a limit for this kernel).
    workgroups_per_cu_limit: dict[str, int | None]
    workgroups_per_cu: int
    waves_per_cu: int
    waves_per_simd: float
    max_waves_per_simd: int
    limited_by: list[str]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def occupancy_fraction(self) -> float:
        """Resident waves over wave slots (what rocprof calls occupancy)."""
        return self.waves_per_simd / self.max_waves_per_simd


def check_kernel_resources(
    spec: GpuSpec, workgroup_size: int, vgprs: int, sgprs: int, lds: int, private: int = 0
) -> str | None:
    """Why this configuration can never run on `spec`, or None if it is valid input."""
    if not 1 <= workgroup_size <= spec.max_workgroup_size:
        return (
            f"workgroup size {workgroup_size} is outside 1..{spec.max_workgroup_size} "
            f"(HSA_AGENT_INFO_WORKGROUP_MAX_SIZE of {spec.name})"
        )
    if not 0 <= vgprs <= spec.max_vgprs_per_wave:
        return (
            f"{vgprs} VGPRs per wave: {spec.name} allows 0..{spec.max_vgprs_per_wave} "
            "(the kernel's .vgpr_count)"
        )
    if not 0 <= sgprs <= spec.max_sgprs_per_wave:
        return (
            f"{sgprs} SGPRs per wave: {spec.name} allows 0..{spec.max_sgprs_per_wave} "
            "(the kernel's .sgpr_count, VCC and FLAT_SCRATCH included)"
        )
    if not 0 <= lds <= spec.lds_per_cu:
        return f"{lds} bytes of LDS: a CU of {spec.name} has {spec.lds_per_cu}"
    if private < 0:
        return f"private segment size {private} must not be negative"
    return None


def occupancy_of(spec: GpuSpec, req: WgRequirements, workgroup_size: int = 0) -> Occupancy:
    """Occupancy for already-granulated requirements (what the dispatcher holds)."""
    s = spec
    w = req.waves
    per_simd = {
        "wave_slots": s.wave_slots_per_simd,
        "vgprs": s.vgprs_per_simd_lane // req.vgprs,
        "sgprs": s.sgprs_per_simd // req.sgprs,
    }
    # Waves of a workgroup may share a SIMD, so each per-SIMD limit caps the CU's total.
    wgs: dict[str, int | None] = {name: s.simds_per_cu * n // w for name, n in per_simd.items()}
    wgs["lds"] = s.lds_per_cu // req.lds if req.lds else None
    wgs["barriers"] = s.barrier_slots_per_cu if req.barrier else None
    wgs["scratch_slots"] = s.scratch_slots_per_cu // w if req.scratch else None
    fit = min(v for v in wgs.values() if v is not None)
    limited = [r for r in RESOURCES if wgs[r] == fit]
    waves_cu = fit * w
    return Occupancy(
        target=s.name,
        workgroup_size=workgroup_size or w * s.wavefront_size,
        waves_per_workgroup=w,
        vgprs=req.vgprs,
        vgprs_allocated=req.vgprs,
        sgprs=req.sgprs,
        sgprs_allocated=req.sgprs,
        lds=req.lds,
        lds_allocated=req.lds,
        scratch_per_wave=req.scratch,
        waves_per_simd_limit=per_simd,
        workgroups_per_cu_limit=wgs,
        workgroups_per_cu=fit,
        waves_per_cu=waves_cu,
        waves_per_simd=waves_cu / s.simds_per_cu,
        max_waves_per_simd=s.wave_slots_per_simd,
        limited_by=limited,
    )


def occupancy(
    spec: GpuSpec,
    *,
    workgroup_size: int,
    vgprs: int,
    sgprs: int = 16,
    lds: int = 0,
    private_segment_size: int = 0,
) -> Occupancy:
    """Occupancy of a kernel with these resources on one CU of `spec`.

    Raises ValueError, saying what is wrong, when the configuration is not one a kernel of
    this target can have.
    """
    problem = check_kernel_resources(spec, workgroup_size, vgprs, sgprs, lds, private_segment_size)
    if problem:
        raise ValueError(problem)
    req = wg_requirements(spec, workgroup_size, vgprs, sgprs, lds, private_segment_size)
    occ = occupancy_of(spec, req, workgroup_size)
    return occ.model_copy(update={"vgprs": vgprs, "sgprs": sgprs, "lds": lds})


def format_occupancy(occ: Occupancy, title: str = "") -> str:
    """The `hsaemu occupancy` report: one row per resource, the limiting ones marked."""
    lim = occ.workgroups_per_cu_limit
    simd = occ.waves_per_simd_limit
    w = occ.waves_per_workgroup
    rows = [
        ("VGPRs", f"{occ.vgprs} per lane", f"{occ.vgprs_allocated}", f"{simd['vgprs']}", "vgprs"),
        ("SGPRs", f"{occ.sgprs} per wave", f"{occ.sgprs_allocated}", f"{simd['sgprs']}", "sgprs"),
        ("wave slots", "1 per wave", "", f"{simd['wave_slots']}", "wave_slots"),
        ("LDS", f"{occ.lds} B per group", f"{occ.lds_allocated} B", "", "lds"),
        ("barriers", "1 per group" if w > 1 else "none (1 wave)", "", "", "barriers"),
        (
            "scratch",
            f"{occ.scratch_per_wave} B per wave" if occ.scratch_per_wave else "none",
            "",
            "",
            "scratch_slots",
        ),
    ]
    out = [
        f"{title or occ.target}: {occ.workgroup_size} work-items per workgroup = {w} "
        f"wave{'s' if w > 1 else ''}",
        "",
        f"  {'resource':<11}{'needs':<20}{'allocated':<11}{'waves/SIMD':<12}workgroups/CU",
    ]
    for label, need, alloc, per_simd, key in rows:
        v = lim[key]
        mark = "  <- limit" if key in occ.limited_by else ""
        cu = "-" if v is None else str(v)
        out.append(f"  {label:<11}{need:<20}{alloc:<11}{per_simd:<12}{cu}{mark}")
    out += [
        "",
        f"  workgroups per CU  {occ.workgroups_per_cu}",
        f"  waves per CU       {occ.waves_per_cu}",
        f"  waves per SIMD     {occ.waves_per_simd:g} of {occ.max_waves_per_simd} "
        f"({100 * occ.occupancy_fraction:.0f}% occupancy)",
        f"  limited by         {', '.join(occ.limited_by)}",
    ]
    return "\n".join(out)
