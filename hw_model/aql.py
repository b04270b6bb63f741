"""AQL (Architected Queuing Language) packet formats.

Models the 64-byte packets that HSA agents consume from user-mode queues: the four standard
packets of ``hsa.h`` (HSA Runtime Programmer's Reference, ``hsa_kernel_dispatch_packet_t``,
``hsa_agent_dispatch_packet_t``, ``hsa_barrier_and_packet_t``, ``hsa_barrier_or_packet_t``)
and AMD's vendor-specific ``hsa_amd_barrier_value_packet_t`` from ``hsa_ext_amd.h`` (ROCm
5.2). Layouts are those of the 64-bit (``HSA_LARGE_MODEL``) little-endian ABI; this module only
encodes and decodes bytes, it has no queue behavior.
"""

from __future__ import annotations

import re
import struct
from enum import IntEnum
from typing import Annotated, Any, ClassVar, NamedTuple, Self

from pydantic import ConfigDict, Field

from hw_model.lazy_model import LazyModel

PACKET_SIZE = 64


class PacketType(IntEnum):
    """``hsa_packet_type_t``."""

    VENDOR_SPECIFIC = 0
    INVALID = 1
    KERNEL_DISPATCH = 2
    BARRIER_AND = 3
    AGENT_DISPATCH = 4
    BARRIER_OR = 5


class FenceScope(IntEnum):
    """``hsa_fence_scope_t``."""

    NONE = 0
    AGENT = 1
    SYSTEM = 2


# hsa_packet_header_t / hsa_packet_header_width_t
HSA_PACKET_HEADER_TYPE = 0
HSA_PACKET_HEADER_BARRIER = 8
HSA_PACKET_HEADER_SCACQUIRE_FENCE_SCOPE = 9
HSA_PACKET_HEADER_ACQUIRE_FENCE_SCOPE = 9
HSA_PACKET_HEADER_SCRELEASE_FENCE_SCOPE = 11
HSA_PACKET_HEADER_RELEASE_FENCE_SCOPE = 11
HSA_PACKET_HEADER_WIDTH_TYPE = 8
HSA_PACKET_HEADER_WIDTH_BARRIER = 1
HSA_PACKET_HEADER_WIDTH_SCACQUIRE_FENCE_SCOPE = 2
HSA_PACKET_HEADER_WIDTH_ACQUIRE_FENCE_SCOPE = 2
HSA_PACKET_HEADER_WIDTH_SCRELEASE_FENCE_SCOPE = 2
HSA_PACKET_HEADER_WIDTH_RELEASE_FENCE_SCOPE = 2

# hsa_kernel_dispatch_packet_setup_t / _width_t
HSA_KERNEL_DISPATCH_PACKET_SETUP_DIMENSIONS = 0
HSA_KERNEL_DISPATCH_PACKET_SETUP_WIDTH_DIMENSIONS = 2

# hsa_amd_packet_type_t: the AmdFormat byte of a VENDOR_SPECIFIC packet.
HSA_AMD_PACKET_TYPE_BARRIER_VALUE = 2

_TYPE_MASK = (1 << HSA_PACKET_HEADER_WIDTH_TYPE) - 1
_SCOPE_MASK = (1 << HSA_PACKET_HEADER_WIDTH_SCACQUIRE_FENCE_SCOPE) - 1
_DIMENSIONS_MASK = (1 << HSA_KERNEL_DISPATCH_PACKET_SETUP_WIDTH_DIMENSIONS) - 1

# Byte offsets inside the 64-byte packet, for readers that peek at queue memory directly.
HEADER_OFFSET = 0
COMPLETION_SIGNAL_OFFSET = 56
KERNEL_DISPATCH_SETUP_OFFSET = 2
KERNEL_DISPATCH_WORKGROUP_SIZE_X_OFFSET = 4
KERNEL_DISPATCH_WORKGROUP_SIZE_Y_OFFSET = 6
KERNEL_DISPATCH_WORKGROUP_SIZE_Z_OFFSET = 8
KERNEL_DISPATCH_GRID_SIZE_X_OFFSET = 12
KERNEL_DISPATCH_GRID_SIZE_Y_OFFSET = 16
KERNEL_DISPATCH_GRID_SIZE_Z_OFFSET = 20
KERNEL_DISPATCH_PRIVATE_SEGMENT_SIZE_OFFSET = 24
KERNEL_DISPATCH_GROUP_SEGMENT_SIZE_OFFSET = 28
KERNEL_DISPATCH_KERNEL_OBJECT_OFFSET = 32
KERNEL_DISPATCH_KERNARG_ADDRESS_OFFSET = 40
BARRIER_DEP_SIGNAL_OFFSET = 8
BARRIER_DEP_SIGNAL_COUNT = 5
AGENT_DISPATCH_TYPE_OFFSET = 2
AGENT_DISPATCH_RETURN_ADDRESS_OFFSET = 8
AGENT_DISPATCH_ARG_OFFSET = 16
AGENT_DISPATCH_ARG_COUNT = 4
AMD_VENDOR_FORMAT_OFFSET = 2
AMD_BARRIER_VALUE_SIGNAL_OFFSET = 8
AMD_BARRIER_VALUE_VALUE_OFFSET = 16
AMD_BARRIER_VALUE_MASK_OFFSET = 24
AMD_BARRIER_VALUE_COND_OFFSET = 32


def make_header(
    packet_type: int,
    *,
    barrier: bool = False,
    acquire: int = FenceScope.SYSTEM,
    release: int = FenceScope.SYSTEM,
) -> int:
    """Pack an AQL packet header (``hsa_packet_header_t`` bit layout)."""
    return (
        (int(packet_type) & _TYPE_MASK)
        | (int(bool(barrier)) << HSA_PACKET_HEADER_BARRIER)
        | ((int(acquire) & _SCOPE_MASK) << HSA_PACKET_HEADER_SCACQUIRE_FENCE_SCOPE)
        | ((int(release) & _SCOPE_MASK) << HSA_PACKET_HEADER_SCRELEASE_FENCE_SCOPE)
    )


def header_type(h: int) -> int:
    return h & _TYPE_MASK


def header_barrier(h: int) -> bool:
    return bool((h >> HSA_PACKET_HEADER_BARRIER) & 1)


def header_acquire(h: int) -> int:
    return (h >> HSA_PACKET_HEADER_SCACQUIRE_FENCE_SCOPE) & _SCOPE_MASK


def header_release(h: int) -> int:
    return (h >> HSA_PACKET_HEADER_SCRELEASE_FENCE_SCOPE) & _SCOPE_MASK


class HeaderFields(NamedTuple):
    type: int
    barrier: bool
    acquire: int
    release: int


def header_fields(h: int) -> HeaderFields:
    """Split a header into its four ``hsa_packet_header_t`` fields."""
    return HeaderFields(header_type(h), header_barrier(h), header_acquire(h), header_release(h))


U8 = Annotated[int, Field(ge=0, le=0xFF)]
U16 = Annotated[int, Field(ge=0, le=0xFFFF)]
U32 = Annotated[int, Field(ge=0, le=0xFFFF_FFFF)]
U64 = Annotated[int, Field(ge=0, le=0xFFFF_FFFF_FFFF_FFFF)]
I64 = Annotated[int, Field(ge=-(1 << 63), le=(1 << 63) - 1)]

_CODE_RE = re.compile(r"(\d*)([a-zA-Z?])")


class PackedModel(LazyModel):
    """A pydantic model with a fixed little-endian C layout.

    Subclasses list ``LAYOUT`` as ``(field, struct code)`` pairs in C member order; a code
    such as ``"5Q"`` is an array held as a list, a ``PackedModel`` subclass is an embedded
    struct. The layout is packed ("<"), so it must spell out C padding as reserved members.
    """

    model_config = ConfigDict(extra="forbid")

    LAYOUT: ClassVar[tuple[tuple[str, str | type[PackedModel]], ...]] = ()
    STRUCT: ClassVar[struct.Struct] = struct.Struct("<")
    BYTE_SIZE: ClassVar[int] = 0
    FIELD_OFFSETS: ClassVar[dict[str, int]] = {}
    FIELD_SIZES: ClassVar[dict[str, int]] = {}
    # (field, array length or 0 for a scalar, embedded model or None)
    _PLAN: ClassVar[tuple[tuple[str, int, type[PackedModel] | None], ...]] = ()
    _FLAT_NAMES: ClassVar[tuple[str, ...] | None] = None

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if "LAYOUT" not in cls.__dict__:
            return
        fmt = "<"
        offsets: dict[str, int] = {}
        sizes: dict[str, int] = {}
        plan: list[tuple[str, int, type[PackedModel] | None]] = []
        for name, code in cls.LAYOUT:
            offsets[name] = struct.calcsize(fmt)
            if isinstance(code, str):
                match = _CODE_RE.fullmatch(code)
                if match is None:
                    raise TypeError(f"{cls.__name__}.{name}: bad struct code {code!r}")
                count = int(match[1]) if match[1] and match[2] != "s" else 0
                fmt += code
                plan.append((name, count, None))
            else:
                fmt += code.STRUCT.format[1:]
                plan.append((name, 0, code))
            sizes[name] = struct.calcsize(fmt) - offsets[name]
        cls.STRUCT = struct.Struct(fmt)
        cls.BYTE_SIZE = cls.STRUCT.size
        cls.FIELD_OFFSETS = offsets
        cls.FIELD_SIZES = sizes
        cls._PLAN = tuple(plan)
        simple = all(count == 0 and sub is None for _, count, sub in plan)
        cls._FLAT_NAMES = tuple(name for name, _, _ in plan) if simple else None

    def _flatten(self, out: list[Any]) -> None:
        for name, count, sub in self._PLAN:
            value = getattr(self, name)
            if sub is not None:
                value._flatten(out)
            elif count:
                if len(value) != count:
                    raise ValueError(f"{type(self).__name__}.{name} needs {count} elements")
                out.extend(value)
            else:
                out.append(value)

    def to_bytes(self) -> bytes:
        """Encode to exactly ``BYTE_SIZE`` bytes in the C layout."""
        values: list[Any] = []
        self._flatten(values)
        try:
            return self.STRUCT.pack(*values)
        except struct.error as exc:
            raise ValueError(f"{type(self).__name__}: {exc}") from None

    @classmethod
    def _build(cls, values: tuple[Any, ...], start: int) -> tuple[Self, int]:
        data: dict[str, Any] = {}
        i = start
        for name, count, sub in cls._PLAN:
            if sub is not None:
                data[name], i = sub._build(values, i)
            elif count:
                data[name] = list(values[i : i + count])
                i += count
            else:
                data[name] = values[i]
                i += 1
        return cls._construct(data), i

    @classmethod
    def _construct(cls, data: dict[str, Any]) -> Self:
        # Same result as model_construct() for a model with every field given and no private
        # or extra attributes, but about 3x faster: pydantic 2.x model_construct() costs more
        # than full validation, and decoding packets is on the emulator's hot path.
        obj = cls.__new__(cls)
        _set = object.__setattr__
        _set(obj, "__dict__", data)
        _set(obj, "__pydantic_fields_set__", set(data))
        _set(obj, "__pydantic_extra__", None)
        _set(obj, "__pydantic_private__", None)
        return obj

    @classmethod
    def from_bytes(cls, b: bytes | bytearray | memoryview, offset: int = 0) -> Self:
        """Decode ``b[offset:offset + BYTE_SIZE]``; no validation, as every byte value fits."""
        try:
            values = cls.STRUCT.unpack_from(b, offset)
        except struct.error as exc:
            raise ValueError(f"{cls.__name__}: {exc}") from None
        if cls._FLAT_NAMES is not None:
            return cls._construct(dict(zip(cls._FLAT_NAMES, values, strict=True)))
        return cls._build(values, 0)[0]


class KernelDispatchPacket(PackedModel):
    """``hsa_kernel_dispatch_packet_t``."""

    LAYOUT = (
        ("header", "H"),
        ("setup", "H"),
        ("workgroup_size_x", "H"),
        ("workgroup_size_y", "H"),
        ("workgroup_size_z", "H"),
        ("reserved0", "H"),
        ("grid_size_x", "I"),
        ("grid_size_y", "I"),
        ("grid_size_z", "I"),
        ("private_segment_size", "I"),
        ("group_segment_size", "I"),
        ("kernel_object", "Q"),
        ("kernarg_address", "Q"),
        ("reserved2", "Q"),
        ("completion_signal", "Q"),
    )

    header: U16 = 0
    setup: U16 = 0
    workgroup_size_x: U16 = 0
    workgroup_size_y: U16 = 0
    workgroup_size_z: U16 = 0
    reserved0: U16 = 0
    grid_size_x: U32 = 0
    grid_size_y: U32 = 0
    grid_size_z: U32 = 0
    private_segment_size: U32 = 0
    group_segment_size: U32 = 0
    kernel_object: U64 = 0
    kernarg_address: U64 = 0
    reserved2: U64 = 0
    completion_signal: U64 = 0

    @property
    def dimensions(self) -> int:
        return (self.setup >> HSA_KERNEL_DISPATCH_PACKET_SETUP_DIMENSIONS) & _DIMENSIONS_MASK


_BARRIER_LAYOUT: tuple[tuple[str, str | type[PackedModel]], ...] = (
    ("header", "H"),
    ("reserved0", "H"),
    ("reserved1", "I"),
    ("dep_signal", f"{BARRIER_DEP_SIGNAL_COUNT}Q"),
    ("reserved2", "Q"),
    ("completion_signal", "Q"),
)
_DepSignals = Annotated[
    list[U64], Field(min_length=BARRIER_DEP_SIGNAL_COUNT, max_length=BARRIER_DEP_SIGNAL_COUNT)
]


def _zero_dep_signals() -> list[int]:
    return [0] * BARRIER_DEP_SIGNAL_COUNT


class BarrierAndPacket(PackedModel):
    """``hsa_barrier_and_packet_t``."""

    LAYOUT = _BARRIER_LAYOUT

    header: U16 = 0
    reserved0: U16 = 0
    reserved1: U32 = 0
    dep_signal: _DepSignals = Field(default_factory=_zero_dep_signals)
    reserved2: U64 = 0
    completion_signal: U64 = 0


class BarrierOrPacket(PackedModel):
    """``hsa_barrier_or_packet_t`` (same layout as the AND barrier)."""

    LAYOUT = _BARRIER_LAYOUT

    header: U16 = 0
    reserved0: U16 = 0
    reserved1: U32 = 0
    dep_signal: _DepSignals = Field(default_factory=_zero_dep_signals)
    reserved2: U64 = 0
    completion_signal: U64 = 0


def _zero_args() -> list[int]:
    return [0] * AGENT_DISPATCH_ARG_COUNT


class AgentDispatchPacket(PackedModel):
    """``hsa_agent_dispatch_packet_t``."""

    LAYOUT = (
        ("header", "H"),
        ("type", "H"),
        ("reserved0", "I"),
        ("return_address", "Q"),
        ("arg", f"{AGENT_DISPATCH_ARG_COUNT}Q"),
        ("reserved2", "Q"),
        ("completion_signal", "Q"),
    )

    header: U16 = 0
    type: U16 = 0
    reserved0: U32 = 0
    return_address: U64 = 0
    arg: Annotated[
        list[U64], Field(min_length=AGENT_DISPATCH_ARG_COUNT, max_length=AGENT_DISPATCH_ARG_COUNT)
    ] = Field(default_factory=_zero_args)
    reserved2: U64 = 0
    completion_signal: U64 = 0


class AmdBarrierValuePacket(PackedModel):
    """``hsa_amd_barrier_value_packet_t``.

    ``header``, ``amd_format`` and ``reserved`` are the three members of the embedded
    ``hsa_amd_vendor_packet_header_t`` (C names ``header``, ``AmdFormat``, ``reserved``).
    ``value`` and ``mask`` are ``hsa_signal_value_t``, which is signed 64-bit.
    """

    LAYOUT = (
        ("header", "H"),
        ("amd_format", "B"),
        ("reserved", "B"),
        ("reserved0", "I"),
        ("signal", "Q"),
        ("value", "q"),
        ("mask", "q"),
        ("cond", "I"),
        ("reserved1", "I"),
        ("reserved2", "Q"),
        ("reserved3", "Q"),
        ("completion_signal", "Q"),
    )

    header: U16 = 0
    # The only format this layout describes, so it is the useful default.
    amd_format: U8 = HSA_AMD_PACKET_TYPE_BARRIER_VALUE
    reserved: U8 = 0
    reserved0: U32 = 0
    signal: U64 = 0
    value: I64 = 0
    mask: I64 = 0
    cond: U32 = 0
    reserved1: U32 = 0
    reserved2: U64 = 0
    reserved3: U64 = 0
    completion_signal: U64 = 0


AqlPacket = (
    KernelDispatchPacket
    | BarrierAndPacket
    | BarrierOrPacket
    | AgentDispatchPacket
    | AmdBarrierValuePacket
)

_DECODERS: dict[int, type[PackedModel]] = {
    PacketType.KERNEL_DISPATCH: KernelDispatchPacket,
    PacketType.BARRIER_AND: BarrierAndPacket,
    PacketType.AGENT_DISPATCH: AgentDispatchPacket,
    PacketType.BARRIER_OR: BarrierOrPacket,
}


def decode_packet(b: bytes | bytearray | memoryview, offset: int = 0) -> AqlPacket | None:
    """Decode the packet at ``offset`` by its header type; ``None`` for an INVALID slot."""
    # The type is the low byte of the little-endian header, so one byte read suffices.
    ptype = b[offset + HEADER_OFFSET]
    decoder = _DECODERS.get(ptype)
    if decoder is not None:
        return decoder.from_bytes(b, offset)  # type: ignore[return-value]
    if ptype == PacketType.INVALID:
        return None
    if ptype == PacketType.VENDOR_SPECIFIC:
        fmt = b[offset + AMD_VENDOR_FORMAT_OFFSET]
        if fmt == HSA_AMD_PACKET_TYPE_BARRIER_VALUE:
            return AmdBarrierValuePacket.from_bytes(b, offset)
        raise ValueError(f"unknown AMD vendor-specific AQL packet format {fmt}")
    raise ValueError(f"unknown AQL packet type {ptype}")
