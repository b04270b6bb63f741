"""In-memory runtime structures shared by the HSA runtime and the GPU.

Models the C layouts that live in memory visible to both the CPU and the command processor:
``hsa_queue_t`` (``hsa.h``), ``amd_queue_t`` (``amd_hsa_queue.h``), ``amd_signal_t``
(``amd_hsa_signal.h``) from the ROCm 5.2 headers, and the code-object-v3+ kernel descriptor
with its ``COMPUTE_PGM_RSRC1/2/3`` and kernel-code-property bit fields from LLVM's
``llvm/Support/AMDHSAKernelDescriptor.h``; register-count granules follow LLVM's
``AMDGPUBaseInfo.cpp`` and the "Kernel Descriptor" section of ``AMDGPUUsage``. All layouts are
64-bit little-endian.
"""

import math
from collections.abc import Callable
from enum import IntEnum, IntFlag
from typing import Annotated, NamedTuple

from pydantic import Field

from hw_model.aql import I64, U16, U32, U64, PackedModel

# --------------------------------------------------------------------------------------------
# hsa_queue_t
# --------------------------------------------------------------------------------------------


class HsaQueueType(IntEnum):
    """``hsa_queue_type_t``."""

    MULTI = 0
    SINGLE = 1
    COOPERATIVE = 2


class HsaQueueFeature(IntFlag):
    """``hsa_queue_feature_t`` bits of ``hsa_queue_t.features``."""

    KERNEL_DISPATCH = 1
    AGENT_DISPATCH = 2


HSA_QUEUE_TYPE_OFFSET = 0
HSA_QUEUE_FEATURES_OFFSET = 4
HSA_QUEUE_BASE_ADDRESS_OFFSET = 8
HSA_QUEUE_DOORBELL_SIGNAL_OFFSET = 16
HSA_QUEUE_SIZE_OFFSET = 24
HSA_QUEUE_RESERVED1_OFFSET = 28
HSA_QUEUE_ID_OFFSET = 32
HSA_QUEUE_SIZE = 40


class HsaQueue(PackedModel):
    """``hsa_queue_t``; ``size`` is in packets and ``doorbell_signal`` is a signal handle."""

    LAYOUT = (
        ("type", "I"),
        ("features", "I"),
        ("base_address", "Q"),
        ("doorbell_signal", "Q"),
        ("size", "I"),
        ("reserved1", "I"),
        ("id", "Q"),
    )

    type: U32 = 0
    features: U32 = 0
    base_address: U64 = 0
    doorbell_signal: U64 = 0
    size: U32 = 0
    reserved1: U32 = 0
    id: U64 = 0


# --------------------------------------------------------------------------------------------
# amd_queue_t
# --------------------------------------------------------------------------------------------

# enum amd_queue_properties_t (AMD_HSA_BITS_CREATE_ENUM_ENTRIES: mask, _SHIFT, _WIDTH)
AMD_QUEUE_PROPERTIES_ENABLE_TRAP_HANDLER_SHIFT = 0
AMD_QUEUE_PROPERTIES_ENABLE_TRAP_HANDLER_WIDTH = 1
AMD_QUEUE_PROPERTIES_ENABLE_TRAP_HANDLER = 0x1
AMD_QUEUE_PROPERTIES_IS_PTR64_SHIFT = 1
AMD_QUEUE_PROPERTIES_IS_PTR64_WIDTH = 1
AMD_QUEUE_PROPERTIES_IS_PTR64 = 0x2
AMD_QUEUE_PROPERTIES_ENABLE_TRAP_HANDLER_DEBUG_SGPRS_SHIFT = 2
AMD_QUEUE_PROPERTIES_ENABLE_TRAP_HANDLER_DEBUG_SGPRS_WIDTH = 1
AMD_QUEUE_PROPERTIES_ENABLE_TRAP_HANDLER_DEBUG_SGPRS = 0x4
AMD_QUEUE_PROPERTIES_ENABLE_PROFILING_SHIFT = 3
AMD_QUEUE_PROPERTIES_ENABLE_PROFILING_WIDTH = 1
AMD_QUEUE_PROPERTIES_ENABLE_PROFILING = 0x8
AMD_QUEUE_PROPERTIES_USE_SCRATCH_ONCE_SHIFT = 4
AMD_QUEUE_PROPERTIES_USE_SCRATCH_ONCE_WIDTH = 1
AMD_QUEUE_PROPERTIES_USE_SCRATCH_ONCE = 0x10
AMD_QUEUE_PROPERTIES_RESERVED1_SHIFT = 5
AMD_QUEUE_PROPERTIES_RESERVED1_WIDTH = 27
AMD_QUEUE_PROPERTIES_RESERVED1 = 0xFFFF_FFE0

AMD_QUEUE_ALIGN_BYTES = 64
AMD_QUEUE_HSA_QUEUE_OFFSET = 0
AMD_QUEUE_RESERVED1_OFFSET = 40
AMD_QUEUE_WRITE_DISPATCH_ID_OFFSET = 56
AMD_QUEUE_GROUP_SEGMENT_APERTURE_BASE_HI_OFFSET = 64
AMD_QUEUE_PRIVATE_SEGMENT_APERTURE_BASE_HI_OFFSET = 68
AMD_QUEUE_MAX_CU_ID_OFFSET = 72
AMD_QUEUE_MAX_WAVE_ID_OFFSET = 76
AMD_QUEUE_MAX_LEGACY_DOORBELL_DISPATCH_ID_PLUS_1_OFFSET = 80
AMD_QUEUE_LEGACY_DOORBELL_LOCK_OFFSET = 88
AMD_QUEUE_RESERVED2_OFFSET = 92
AMD_QUEUE_READ_DISPATCH_ID_OFFSET = 128
AMD_QUEUE_READ_DISPATCH_ID_FIELD_BASE_BYTE_OFFSET_OFFSET = 136
AMD_QUEUE_COMPUTE_TMPRING_SIZE_OFFSET = 140
AMD_QUEUE_SCRATCH_RESOURCE_DESCRIPTOR_OFFSET = 144
AMD_QUEUE_SCRATCH_BACKING_MEMORY_LOCATION_OFFSET = 160
AMD_QUEUE_SCRATCH_BACKING_MEMORY_BYTE_SIZE_OFFSET = 168
AMD_QUEUE_SCRATCH_WAVE64_LANE_BYTE_SIZE_OFFSET = 176
AMD_QUEUE_QUEUE_PROPERTIES_OFFSET = 180
AMD_QUEUE_RESERVED3_OFFSET = 184
AMD_QUEUE_QUEUE_INACTIVE_SIGNAL_OFFSET = 192
AMD_QUEUE_RESERVED4_OFFSET = 200
AMD_QUEUE_SIZE = 256


_U32x2 = Annotated[list[U32], Field(min_length=2, max_length=2)]
_U32x4 = Annotated[list[U32], Field(min_length=4, max_length=4)]
_U32x9 = Annotated[list[U32], Field(min_length=9, max_length=9)]
_U32x14 = Annotated[list[U32], Field(min_length=14, max_length=14)]


def _zeros(n: int) -> Callable[[], list[int]]:
    return lambda: [0] * n


class AmdQueue(PackedModel):
    """``amd_queue_t``: the AMD extension of ``hsa_queue_t`` (64-byte aligned, 256 bytes).

    ``hsa_queue`` is the embedded ``hsa_queue_t`` at offset 0, so a pointer to an
    ``amd_queue_t`` is also a valid ``hsa_queue_t*``. The dispatch ids are packet indices
    that only grow; the command processor advances ``read_dispatch_id``.
    """

    LAYOUT = (
        ("hsa_queue", HsaQueue),
        ("reserved1", "4I"),
        ("write_dispatch_id", "Q"),
        ("group_segment_aperture_base_hi", "I"),
        ("private_segment_aperture_base_hi", "I"),
        ("max_cu_id", "I"),
        ("max_wave_id", "I"),
        ("max_legacy_doorbell_dispatch_id_plus_1", "Q"),
        ("legacy_doorbell_lock", "I"),
        ("reserved2", "9I"),
        ("read_dispatch_id", "Q"),
        ("read_dispatch_id_field_base_byte_offset", "I"),
        ("compute_tmpring_size", "I"),
        ("scratch_resource_descriptor", "4I"),
        ("scratch_backing_memory_location", "Q"),
        ("scratch_backing_memory_byte_size", "Q"),
        ("scratch_wave64_lane_byte_size", "I"),
        ("queue_properties", "I"),
        ("reserved3", "2I"),
        ("queue_inactive_signal", "Q"),
        ("reserved4", "14I"),
    )

    hsa_queue: HsaQueue = Field(default_factory=HsaQueue)
    reserved1: _U32x4 = Field(default_factory=_zeros(4))
    write_dispatch_id: U64 = 0
    group_segment_aperture_base_hi: U32 = 0
    private_segment_aperture_base_hi: U32 = 0
    max_cu_id: U32 = 0
    max_wave_id: U32 = 0
    max_legacy_doorbell_dispatch_id_plus_1: U64 = 0
    legacy_doorbell_lock: U32 = 0
    reserved2: _U32x9 = Field(default_factory=_zeros(9))
    read_dispatch_id: U64 = 0
    read_dispatch_id_field_base_byte_offset: U32 = 0
    compute_tmpring_size: U32 = 0
    scratch_resource_descriptor: _U32x4 = Field(default_factory=_zeros(4))
    scratch_backing_memory_location: U64 = 0
    scratch_backing_memory_byte_size: U64 = 0
    scratch_wave64_lane_byte_size: U32 = 0
    queue_properties: U32 = 0
    reserved3: _U32x2 = Field(default_factory=_zeros(2))
    queue_inactive_signal: U64 = 0
    reserved4: _U32x14 = Field(default_factory=_zeros(14))


# --------------------------------------------------------------------------------------------
# amd_signal_t
# --------------------------------------------------------------------------------------------


class AmdSignalKind(IntEnum):
    """``amd_signal_kind_t``."""

    INVALID = 0
    USER = 1
    DOORBELL = -1
    LEGACY_DOORBELL = -2


AMD_SIGNAL_ALIGN_BYTES = 64
AMD_SIGNAL_KIND_OFFSET = 0
AMD_SIGNAL_VALUE_OFFSET = 8
AMD_SIGNAL_HARDWARE_DOORBELL_PTR_OFFSET = 8
AMD_SIGNAL_EVENT_MAILBOX_PTR_OFFSET = 16
AMD_SIGNAL_EVENT_ID_OFFSET = 24
AMD_SIGNAL_RESERVED1_OFFSET = 28
AMD_SIGNAL_START_TS_OFFSET = 32
AMD_SIGNAL_END_TS_OFFSET = 40
AMD_SIGNAL_QUEUE_PTR_OFFSET = 48
AMD_SIGNAL_RESERVED3_OFFSET = 56
AMD_SIGNAL_SIZE = 64

_U64_MASK = (1 << 64) - 1


class AmdSignal(PackedModel):
    """``amd_signal_t``: the memory an ``hsa_signal_t`` handle points at.

    ``value`` shares its 8 bytes with ``hardware_doorbell_ptr`` (and the 32-bit
    ``legacy_hardware_doorbell_ptr``) for doorbell signals; ``queue_ptr`` shares its bytes
    with ``reserved2``.
    """

    LAYOUT = (
        ("kind", "q"),
        ("value", "q"),
        ("event_mailbox_ptr", "Q"),
        ("event_id", "I"),
        ("reserved1", "I"),
        ("start_ts", "Q"),
        ("end_ts", "Q"),
        ("queue_ptr", "Q"),
        ("reserved3", "2I"),
    )

    kind: I64 = 0
    value: I64 = 0
    event_mailbox_ptr: U64 = 0
    event_id: U32 = 0
    reserved1: U32 = 0
    start_ts: U64 = 0
    end_ts: U64 = 0
    queue_ptr: U64 = 0
    reserved3: _U32x2 = Field(default_factory=_zeros(2))

    @property
    def hardware_doorbell_ptr(self) -> int:
        """The union member a DOORBELL signal stores in place of ``value``."""
        return self.value & _U64_MASK


# --------------------------------------------------------------------------------------------
# Kernel descriptor (code object v3+)
# --------------------------------------------------------------------------------------------

KERNEL_DESCRIPTOR_SIZE = 64
KERNEL_DESCRIPTOR_ALIGN = 64

KD_GROUP_SEGMENT_FIXED_SIZE_OFFSET = 0
KD_PRIVATE_SEGMENT_FIXED_SIZE_OFFSET = 4
KD_KERNARG_SIZE_OFFSET = 8
KD_RESERVED0_OFFSET = 12
KD_KERNEL_CODE_ENTRY_BYTE_OFFSET_OFFSET = 16
KD_RESERVED1_OFFSET = 24
KD_COMPUTE_PGM_RSRC3_OFFSET = 44
KD_COMPUTE_PGM_RSRC1_OFFSET = 48
KD_COMPUTE_PGM_RSRC2_OFFSET = 52
KD_KERNEL_CODE_PROPERTIES_OFFSET = 56
KD_KERNARG_PRELOAD_OFFSET = 58
KD_RESERVED3_OFFSET = 60


class KernelDescriptor(PackedModel):
    """``llvm::amdhsa::kernel_descriptor_t``.

    Uses the current LLVM layout, where bytes 58-59 are ``kernarg_preload`` (added with
    kernarg preloading in 2023); older releases such as LLVM 15 declare bytes 58-63 as one
    ``reserved2[6]``, which this layout reads as ``kernarg_preload`` = 0 and ``reserved3`` =
    zeros. ``kernel_code_entry_byte_offset`` is signed and relative to the descriptor's own
    address.
    """

    LAYOUT = (
        ("group_segment_fixed_size", "I"),
        ("private_segment_fixed_size", "I"),
        ("kernarg_size", "I"),
        ("reserved0", "4s"),
        ("kernel_code_entry_byte_offset", "q"),
        ("reserved1", "20s"),
        ("compute_pgm_rsrc3", "I"),
        ("compute_pgm_rsrc1", "I"),
        ("compute_pgm_rsrc2", "I"),
        ("kernel_code_properties", "H"),
        ("kernarg_preload", "H"),
        ("reserved3", "4s"),
    )

    group_segment_fixed_size: U32 = 0
    private_segment_fixed_size: U32 = 0
    kernarg_size: U32 = 0
    reserved0: Annotated[bytes, Field(min_length=4, max_length=4)] = bytes(4)
    kernel_code_entry_byte_offset: I64 = 0
    reserved1: Annotated[bytes, Field(min_length=20, max_length=20)] = bytes(20)
    compute_pgm_rsrc3: U32 = 0
    compute_pgm_rsrc1: U32 = 0
    compute_pgm_rsrc2: U32 = 0
    kernel_code_properties: U16 = 0
    kernarg_preload: U16 = 0
    reserved3: Annotated[bytes, Field(min_length=4, max_length=4)] = bytes(4)


class BitField(NamedTuple):
    """A register bit field: LLVM's ``NAME_SHIFT``, ``NAME_WIDTH`` and ``NAME`` (the mask)."""

    shift: int
    width: int
    mask: int

    def get(self, reg: int) -> int:
        return (reg & self.mask) >> self.shift

    def put(self, reg: int, value: int) -> int:
        """Return ``reg`` with this field replaced by ``value`` (which must fit)."""
        if not 0 <= value < (1 << self.width):
            raise ValueError(f"value {value} does not fit in {self.width} bits")
        return (reg & ~self.mask) | (value << self.shift)


def _bits(shift: int, width: int) -> BitField:
    return BitField(shift, width, ((1 << width) - 1) << shift)


# Names are LLVM's; an infix such as GFX6_GFX11 or GFX10_PLUS gives the targets where the
# field has that meaning. GFX12+-only reinterpretations are left out.
COMPUTE_PGM_RSRC1_GRANULATED_WORKITEM_VGPR_COUNT = _bits(0, 6)
COMPUTE_PGM_RSRC1_GRANULATED_WAVEFRONT_SGPR_COUNT = _bits(6, 4)
COMPUTE_PGM_RSRC1_PRIORITY = _bits(10, 2)
COMPUTE_PGM_RSRC1_FLOAT_ROUND_MODE_32 = _bits(12, 2)
COMPUTE_PGM_RSRC1_FLOAT_ROUND_MODE_16_64 = _bits(14, 2)
COMPUTE_PGM_RSRC1_FLOAT_DENORM_MODE_32 = _bits(16, 2)
COMPUTE_PGM_RSRC1_FLOAT_DENORM_MODE_16_64 = _bits(18, 2)
COMPUTE_PGM_RSRC1_PRIV = _bits(20, 1)
COMPUTE_PGM_RSRC1_GFX6_GFX11_ENABLE_DX10_CLAMP = _bits(21, 1)
COMPUTE_PGM_RSRC1_DEBUG_MODE = _bits(22, 1)
COMPUTE_PGM_RSRC1_GFX6_GFX11_ENABLE_IEEE_MODE = _bits(23, 1)
COMPUTE_PGM_RSRC1_BULKY = _bits(24, 1)
COMPUTE_PGM_RSRC1_CDBG_USER = _bits(25, 1)
COMPUTE_PGM_RSRC1_GFX9_PLUS_FP16_OVFL = _bits(26, 1)
COMPUTE_PGM_RSRC1_RESERVED1 = _bits(27, 2)
COMPUTE_PGM_RSRC1_GFX6_GFX9_RESERVED2 = _bits(29, 3)
COMPUTE_PGM_RSRC1_GFX10_PLUS_WGP_MODE = _bits(29, 1)
COMPUTE_PGM_RSRC1_GFX10_PLUS_MEM_ORDERED = _bits(30, 1)
COMPUTE_PGM_RSRC1_GFX10_PLUS_FWD_PROGRESS = _bits(31, 1)

COMPUTE_PGM_RSRC2_ENABLE_PRIVATE_SEGMENT = _bits(0, 1)
COMPUTE_PGM_RSRC2_USER_SGPR_COUNT = _bits(1, 5)
COMPUTE_PGM_RSRC2_GFX6_GFX11_ENABLE_TRAP_HANDLER = _bits(6, 1)
COMPUTE_PGM_RSRC2_ENABLE_SGPR_WORKGROUP_ID_X = _bits(7, 1)
COMPUTE_PGM_RSRC2_ENABLE_SGPR_WORKGROUP_ID_Y = _bits(8, 1)
COMPUTE_PGM_RSRC2_ENABLE_SGPR_WORKGROUP_ID_Z = _bits(9, 1)
COMPUTE_PGM_RSRC2_ENABLE_SGPR_WORKGROUP_INFO = _bits(10, 1)
COMPUTE_PGM_RSRC2_ENABLE_VGPR_WORKITEM_ID = _bits(11, 2)
COMPUTE_PGM_RSRC2_ENABLE_EXCEPTION_ADDRESS_WATCH = _bits(13, 1)
COMPUTE_PGM_RSRC2_ENABLE_EXCEPTION_MEMORY = _bits(14, 1)
COMPUTE_PGM_RSRC2_GRANULATED_LDS_SIZE = _bits(15, 9)
COMPUTE_PGM_RSRC2_ENABLE_EXCEPTION_IEEE_754_FP_INVALID_OPERATION = _bits(24, 1)
COMPUTE_PGM_RSRC2_ENABLE_EXCEPTION_FP_DENORMAL_SOURCE = _bits(25, 1)
COMPUTE_PGM_RSRC2_ENABLE_EXCEPTION_IEEE_754_FP_DIVISION_BY_ZERO = _bits(26, 1)
COMPUTE_PGM_RSRC2_ENABLE_EXCEPTION_IEEE_754_FP_OVERFLOW = _bits(27, 1)
COMPUTE_PGM_RSRC2_ENABLE_EXCEPTION_IEEE_754_FP_UNDERFLOW = _bits(28, 1)
COMPUTE_PGM_RSRC2_ENABLE_EXCEPTION_IEEE_754_FP_INEXACT = _bits(29, 1)
COMPUTE_PGM_RSRC2_ENABLE_EXCEPTION_INT_DIVIDE_BY_ZERO = _bits(30, 1)
COMPUTE_PGM_RSRC2_GFX6_GFX11_RESERVED0 = _bits(31, 1)

COMPUTE_PGM_RSRC3_GFX90A_ACCUM_OFFSET = _bits(0, 6)
COMPUTE_PGM_RSRC3_GFX90A_RESERVED0 = _bits(6, 10)
COMPUTE_PGM_RSRC3_GFX90A_TG_SPLIT = _bits(16, 1)
COMPUTE_PGM_RSRC3_GFX90A_RESERVED1 = _bits(17, 15)
COMPUTE_PGM_RSRC3_GFX10_GFX11_SHARED_VGPR_COUNT = _bits(0, 4)
COMPUTE_PGM_RSRC3_GFX11_INST_PREF_SIZE = _bits(4, 6)
COMPUTE_PGM_RSRC3_GFX11_TRAP_ON_START = _bits(10, 1)
COMPUTE_PGM_RSRC3_GFX11_TRAP_ON_END = _bits(11, 1)
COMPUTE_PGM_RSRC3_GFX11_PLUS_IMAGE_OP = _bits(31, 1)

KERNEL_CODE_PROPERTY_ENABLE_SGPR_PRIVATE_SEGMENT_BUFFER = _bits(0, 1)
KERNEL_CODE_PROPERTY_ENABLE_SGPR_DISPATCH_PTR = _bits(1, 1)
KERNEL_CODE_PROPERTY_ENABLE_SGPR_QUEUE_PTR = _bits(2, 1)
KERNEL_CODE_PROPERTY_ENABLE_SGPR_KERNARG_SEGMENT_PTR = _bits(3, 1)
KERNEL_CODE_PROPERTY_ENABLE_SGPR_DISPATCH_ID = _bits(4, 1)
KERNEL_CODE_PROPERTY_ENABLE_SGPR_FLAT_SCRATCH_INIT = _bits(5, 1)
KERNEL_CODE_PROPERTY_ENABLE_SGPR_PRIVATE_SEGMENT_SIZE = _bits(6, 1)
KERNEL_CODE_PROPERTY_RESERVED0 = _bits(7, 3)
KERNEL_CODE_PROPERTY_ENABLE_WAVEFRONT_SIZE32 = _bits(10, 1)
KERNEL_CODE_PROPERTY_USES_DYNAMIC_STACK = _bits(11, 1)
KERNEL_CODE_PROPERTY_RESERVED1 = _bits(12, 4)

KERNARG_PRELOAD_SPEC_LENGTH = _bits(0, 7)
KERNARG_PRELOAD_SPEC_OFFSET = _bits(7, 9)


class FloatRoundMode(IntEnum):
    NEAR_EVEN = 0
    PLUS_INFINITY = 1
    MINUS_INFINITY = 2
    ZERO = 3


class FloatDenormMode(IntEnum):
    FLUSH_SRC_DST = 0
    FLUSH_DST = 1
    FLUSH_SRC = 2
    FLUSH_NONE = 3


class SystemVgprWorkitemId(IntEnum):
    """Values of ``COMPUTE_PGM_RSRC2.ENABLE_VGPR_WORKITEM_ID``."""

    X = 0
    X_Y = 1
    X_Y_Z = 2
    UNDEFINED = 3


# Register granules. The encoding granule is what the descriptor field counts in; the
# hardware may allocate in coarser blocks.
#  - VGPRs (LLVM getVGPREncodingGranule): 4 on GFX6-GFX9 in wave64 (gfx900, gfx906, gfx908),
#    8 on gfx90a/gfx942 (unified VGPR+AGPR file) and 8 for wave32 on GFX10+.
#  - SGPRs (LLVM getSGPREncodingGranule): always 8, but the SPI allocates SGPRs in blocks of
#    16 on GFX8/GFX9 (LLVM getSGPRAllocGranule), so (field + 1) * 8 is rounded up to 16. On
#    GFX10+ the field must be 0 because every wave gets a fixed SGPR budget.
VGPR_ENCODING_GRANULE_GFX9 = 4
VGPR_ENCODING_GRANULE_GFX90A = 8
VGPR_ENCODING_GRANULE_WAVE32 = 8
SGPR_ENCODING_GRANULE = 8
SGPR_ALLOC_GRANULE_GFX9 = 16
# COMPUTE_PGM_RSRC2.LDS_SIZE granule on GFX7-GFX9: 128 dwords (LLVM getSIProgramInfo). The CP
# derives the value from the dispatch packet, so the descriptor's GRANULATED_LDS_SIZE must be 0.
LDS_ALLOC_GRANULE_BYTES_GFX9 = 512


def _granulated_blocks(count: int, granule: int, field: BitField) -> int:
    # LLVM getGranulatedNumRegisterBlocks: a count of 0 is treated as 1.
    blocks = math.ceil(max(1, count) / granule) - 1
    if blocks >= 1 << field.width:
        raise ValueError(f"{count} registers need {blocks + 1} blocks of {granule}, too many")
    return blocks


def encode_vgpr_count(vgprs: int, granule: int) -> int:
    """GRANULATED_WORKITEM_VGPR_COUNT for ``vgprs`` (highest VGPR used + 1)."""
    return _granulated_blocks(vgprs, granule, COMPUTE_PGM_RSRC1_GRANULATED_WORKITEM_VGPR_COUNT)


def decode_vgpr_count(rsrc1: int, granule: int) -> int:
    """VGPRs per work-item that ``rsrc1`` reserves: ``(field + 1) * granule``."""
    return (COMPUTE_PGM_RSRC1_GRANULATED_WORKITEM_VGPR_COUNT.get(rsrc1) + 1) * granule


def encode_sgpr_count(sgprs: int) -> int:
    """GRANULATED_WAVEFRONT_SGPR_COUNT for ``sgprs``, which must include the extra SGPRs."""
    return _granulated_blocks(
        sgprs, SGPR_ENCODING_GRANULE, COMPUTE_PGM_RSRC1_GRANULATED_WAVEFRONT_SGPR_COUNT
    )


def decode_sgpr_count(rsrc1: int) -> int:
    """SGPRs per wave that ``rsrc1`` encodes: ``(field + 1) * 8``."""
    return (
        COMPUTE_PGM_RSRC1_GRANULATED_WAVEFRONT_SGPR_COUNT.get(rsrc1) + 1
    ) * SGPR_ENCODING_GRANULE


def allocated_sgpr_count(rsrc1: int, alloc_granule: int = SGPR_ALLOC_GRANULE_GFX9) -> int:
    """SGPRs the hardware actually reserves per wave for ``rsrc1``."""
    return -(-decode_sgpr_count(rsrc1) // alloc_granule) * alloc_granule


def num_extra_sgprs(*, vcc: bool, flat_scratch: bool, xnack: bool) -> int:
    """SGPRs past the highest used one that GFX8/GFX9 reserve (LLVM getNumExtraSGPRs).

    VCC, XNACK_MASK and FLAT_SCRATCH sit at the top of the allocation; they overlap, so the
    largest one needed wins: 2 for VCC, 4 with XNACK, 6 with flat scratch.
    """
    if flat_scratch:
        return 6
    if xnack:
        return 4
    return 2 if vcc else 0


def _pack(fields: list[tuple[BitField, int]]) -> int:
    reg = 0
    for field, value in fields:
        reg = field.put(reg, int(value))
    return reg


def make_rsrc1(
    *,
    granulated_workitem_vgpr_count: int | None = None,
    granulated_wavefront_sgpr_count: int | None = None,
    vgprs: int | None = None,
    vgpr_granule: int = VGPR_ENCODING_GRANULE_GFX9,
    sgprs: int | None = None,
    priority: int = 0,
    float_round_mode_32: int = FloatRoundMode.NEAR_EVEN,
    float_round_mode_16_64: int = FloatRoundMode.NEAR_EVEN,
    float_denorm_mode_32: int = FloatDenormMode.FLUSH_SRC_DST,
    float_denorm_mode_16_64: int = FloatDenormMode.FLUSH_NONE,
    priv: int = 0,
    enable_dx10_clamp: int = 1,
    debug_mode: int = 0,
    enable_ieee_mode: int = 1,
    bulky: int = 0,
    cdbg_user: int = 0,
    fp16_ovfl: int = 0,
    wgp_mode: int = 0,
    mem_ordered: int = 0,
    fwd_progress: int = 0,
) -> int:
    """Build COMPUTE_PGM_RSRC1.

    Register counts are given either already granulated or as raw ``vgprs``/``sgprs``
    counts. Defaults are those of the LLVM assembler's ``.amdhsa_*`` directives.
    """
    if vgprs is not None:
        if granulated_workitem_vgpr_count is not None:
            raise ValueError("give vgprs or granulated_workitem_vgpr_count, not both")
        granulated_workitem_vgpr_count = encode_vgpr_count(vgprs, vgpr_granule)
    if sgprs is not None:
        if granulated_wavefront_sgpr_count is not None:
            raise ValueError("give sgprs or granulated_wavefront_sgpr_count, not both")
        granulated_wavefront_sgpr_count = encode_sgpr_count(sgprs)
    return _pack(
        [
            (COMPUTE_PGM_RSRC1_GRANULATED_WORKITEM_VGPR_COUNT, granulated_workitem_vgpr_count or 0),
            (
                COMPUTE_PGM_RSRC1_GRANULATED_WAVEFRONT_SGPR_COUNT,
                granulated_wavefront_sgpr_count or 0,
            ),
            (COMPUTE_PGM_RSRC1_PRIORITY, priority),
            (COMPUTE_PGM_RSRC1_FLOAT_ROUND_MODE_32, float_round_mode_32),
            (COMPUTE_PGM_RSRC1_FLOAT_ROUND_MODE_16_64, float_round_mode_16_64),
            (COMPUTE_PGM_RSRC1_FLOAT_DENORM_MODE_32, float_denorm_mode_32),
            (COMPUTE_PGM_RSRC1_FLOAT_DENORM_MODE_16_64, float_denorm_mode_16_64),
            (COMPUTE_PGM_RSRC1_PRIV, priv),
            (COMPUTE_PGM_RSRC1_GFX6_GFX11_ENABLE_DX10_CLAMP, enable_dx10_clamp),
            (COMPUTE_PGM_RSRC1_DEBUG_MODE, debug_mode),
            (COMPUTE_PGM_RSRC1_GFX6_GFX11_ENABLE_IEEE_MODE, enable_ieee_mode),
            (COMPUTE_PGM_RSRC1_BULKY, bulky),
            (COMPUTE_PGM_RSRC1_CDBG_USER, cdbg_user),
            (COMPUTE_PGM_RSRC1_GFX9_PLUS_FP16_OVFL, fp16_ovfl),
            (COMPUTE_PGM_RSRC1_GFX10_PLUS_WGP_MODE, wgp_mode),
            (COMPUTE_PGM_RSRC1_GFX10_PLUS_MEM_ORDERED, mem_ordered),
            (COMPUTE_PGM_RSRC1_GFX10_PLUS_FWD_PROGRESS, fwd_progress),
        ]
    )


def make_rsrc2(
    *,
    enable_private_segment: int = 0,
    user_sgpr_count: int = 0,
    enable_trap_handler: int = 0,
    enable_sgpr_workgroup_id_x: int = 1,
    enable_sgpr_workgroup_id_y: int = 0,
    enable_sgpr_workgroup_id_z: int = 0,
    enable_sgpr_workgroup_info: int = 0,
    enable_vgpr_workitem_id: int = SystemVgprWorkitemId.X,
    enable_exception_address_watch: int = 0,
    enable_exception_memory: int = 0,
    granulated_lds_size: int = 0,
    enable_exception_ieee_754_fp_invalid_operation: int = 0,
    enable_exception_fp_denormal_source: int = 0,
    enable_exception_ieee_754_fp_division_by_zero: int = 0,
    enable_exception_ieee_754_fp_overflow: int = 0,
    enable_exception_ieee_754_fp_underflow: int = 0,
    enable_exception_ieee_754_fp_inexact: int = 0,
    enable_exception_int_divide_by_zero: int = 0,
) -> int:
    """Build COMPUTE_PGM_RSRC2; defaults are those of the ``.amdhsa_*`` directives."""
    return _pack(
        [
            (COMPUTE_PGM_RSRC2_ENABLE_PRIVATE_SEGMENT, enable_private_segment),
            (COMPUTE_PGM_RSRC2_USER_SGPR_COUNT, user_sgpr_count),
            (COMPUTE_PGM_RSRC2_GFX6_GFX11_ENABLE_TRAP_HANDLER, enable_trap_handler),
            (COMPUTE_PGM_RSRC2_ENABLE_SGPR_WORKGROUP_ID_X, enable_sgpr_workgroup_id_x),
            (COMPUTE_PGM_RSRC2_ENABLE_SGPR_WORKGROUP_ID_Y, enable_sgpr_workgroup_id_y),
            (COMPUTE_PGM_RSRC2_ENABLE_SGPR_WORKGROUP_ID_Z, enable_sgpr_workgroup_id_z),
            (COMPUTE_PGM_RSRC2_ENABLE_SGPR_WORKGROUP_INFO, enable_sgpr_workgroup_info),
            (COMPUTE_PGM_RSRC2_ENABLE_VGPR_WORKITEM_ID, enable_vgpr_workitem_id),
            (COMPUTE_PGM_RSRC2_ENABLE_EXCEPTION_ADDRESS_WATCH, enable_exception_address_watch),
            (COMPUTE_PGM_RSRC2_ENABLE_EXCEPTION_MEMORY, enable_exception_memory),
            (COMPUTE_PGM_RSRC2_GRANULATED_LDS_SIZE, granulated_lds_size),
            (
                COMPUTE_PGM_RSRC2_ENABLE_EXCEPTION_IEEE_754_FP_INVALID_OPERATION,
                enable_exception_ieee_754_fp_invalid_operation,
            ),
            (
                COMPUTE_PGM_RSRC2_ENABLE_EXCEPTION_FP_DENORMAL_SOURCE,
                enable_exception_fp_denormal_source,
            ),
            (
                COMPUTE_PGM_RSRC2_ENABLE_EXCEPTION_IEEE_754_FP_DIVISION_BY_ZERO,
                enable_exception_ieee_754_fp_division_by_zero,
            ),
            (
                COMPUTE_PGM_RSRC2_ENABLE_EXCEPTION_IEEE_754_FP_OVERFLOW,
                enable_exception_ieee_754_fp_overflow,
            ),
            (
                COMPUTE_PGM_RSRC2_ENABLE_EXCEPTION_IEEE_754_FP_UNDERFLOW,
                enable_exception_ieee_754_fp_underflow,
            ),
            (
                COMPUTE_PGM_RSRC2_ENABLE_EXCEPTION_IEEE_754_FP_INEXACT,
                enable_exception_ieee_754_fp_inexact,
            ),
            (
                COMPUTE_PGM_RSRC2_ENABLE_EXCEPTION_INT_DIVIDE_BY_ZERO,
                enable_exception_int_divide_by_zero,
            ),
        ]
    )


def make_rsrc3_gfx90a(*, accum_offset: int = 4, tg_split: int = 0) -> int:
    """Build gfx90a/gfx942 COMPUTE_PGM_RSRC3.

    ``accum_offset`` is the first AGPR's index in the unified register file, a multiple of 4
    in 4..256, stored as ``accum_offset / 4 - 1``.
    """
    if accum_offset % 4 or not 4 <= accum_offset <= 256:
        raise ValueError(f"accum_offset {accum_offset} must be a multiple of 4 in 4..256")
    return _pack(
        [
            (COMPUTE_PGM_RSRC3_GFX90A_ACCUM_OFFSET, accum_offset // 4 - 1),
            (COMPUTE_PGM_RSRC3_GFX90A_TG_SPLIT, tg_split),
        ]
    )


def make_kernel_code_properties(
    *,
    enable_sgpr_private_segment_buffer: int = 0,
    enable_sgpr_dispatch_ptr: int = 0,
    enable_sgpr_queue_ptr: int = 0,
    enable_sgpr_kernarg_segment_ptr: int = 0,
    enable_sgpr_dispatch_id: int = 0,
    enable_sgpr_flat_scratch_init: int = 0,
    enable_sgpr_private_segment_size: int = 0,
    enable_wavefront_size32: int = 0,
    uses_dynamic_stack: int = 0,
) -> int:
    """Build the kernel descriptor's ``kernel_code_properties``."""
    return _pack(
        [
            (
                KERNEL_CODE_PROPERTY_ENABLE_SGPR_PRIVATE_SEGMENT_BUFFER,
                enable_sgpr_private_segment_buffer,
            ),
            (KERNEL_CODE_PROPERTY_ENABLE_SGPR_DISPATCH_PTR, enable_sgpr_dispatch_ptr),
            (KERNEL_CODE_PROPERTY_ENABLE_SGPR_QUEUE_PTR, enable_sgpr_queue_ptr),
            (KERNEL_CODE_PROPERTY_ENABLE_SGPR_KERNARG_SEGMENT_PTR, enable_sgpr_kernarg_segment_ptr),
            (KERNEL_CODE_PROPERTY_ENABLE_SGPR_DISPATCH_ID, enable_sgpr_dispatch_id),
            (KERNEL_CODE_PROPERTY_ENABLE_SGPR_FLAT_SCRATCH_INIT, enable_sgpr_flat_scratch_init),
            (
                KERNEL_CODE_PROPERTY_ENABLE_SGPR_PRIVATE_SEGMENT_SIZE,
                enable_sgpr_private_segment_size,
            ),
            (KERNEL_CODE_PROPERTY_ENABLE_WAVEFRONT_SIZE32, enable_wavefront_size32),
            (KERNEL_CODE_PROPERTY_USES_DYNAMIC_STACK, uses_dynamic_stack),
        ]
    )
