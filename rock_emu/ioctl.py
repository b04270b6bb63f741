"""The amdkfd ioctl ABI: argument structs, request numbers and constants of /dev/kfd.

Models the uapi header ``include/uapi/linux/kfd_ioctl.h`` at KFD ioctl interface 1.11 (as
shipped by linux-libc-dev). Struct layouts follow the x86-64 SysV psABI the way gcc applies it
(natural alignment, tail padding), request numbers follow ``include/uapi/asm-generic/ioctl.h``,
and the error convention follows ``kfd_ioctl()`` in
``drivers/gpu/drm/amd/amdkfd/kfd_chardev.c``. Every number here is checked against the real
header by compiling a C program in the tests.
"""

import errno
import operator
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from typing import Annotated, Any, ClassVar, Final, Literal, Self

from pydantic import BeforeValidator, ConfigDict, Field

from hw_model.lazy_model import LazyModel

# --------------------------------------------------------------------------------------------
# C type machinery
# --------------------------------------------------------------------------------------------


def _check_size(c_name: str, size: int, data: bytes | bytearray | memoryview) -> None:
    if len(data) != size:
        raise ValueError(
            f"struct {c_name} is {size} bytes but {len(data)} were given; pass exactly "
            f"sizeof(struct {c_name}) bytes, or from_buffer() to read one out of a larger buffer"
        )


def _check_room(
    c_name: str, size: int, buffer: bytes | bytearray | memoryview, offset: int
) -> None:
    if offset < 0 or len(buffer) - offset < size:
        raise ValueError(
            f"struct {c_name} needs {size} bytes at offset {offset} but the buffer "
            f"has {len(buffer)} bytes"
        )


@dataclass(frozen=True, slots=True)
class CType:
    """A C integer type: its uapi spelling, ``struct`` format code and size (= alignment)."""

    name: str
    fmt: str
    size: int


@dataclass(frozen=True, slots=True)
class CArray:
    """Marks a ``list`` field as a fixed-size C array ``elem name[length]``."""

    elem: "CType | type[IoctlArgs]"
    length: int


@dataclass(frozen=True, slots=True)
class CUnion:
    """Marks a ``bytes`` field as the storage of an anonymous C union of the given members."""

    members: "tuple[tuple[str, type[IoctlArgs]], ...]"

    @property
    def size(self) -> int:
        return max(t.SIZE for _, t in self.members)

    @property
    def align(self) -> int:
        return max(t.ALIGN for _, t in self.members)


def _as_index(value: Any) -> Any:
    # Accept what C would accept without a cast (int, bool, IntEnum, numpy integers) but not
    # floats or strings, which lax pydantic would otherwise coerce.
    try:
        return operator.index(value)
    except TypeError:
        return value


def _as_bytes(value: Any) -> Any:
    return bytes(value) if isinstance(value, bytearray | memoryview) else value


_INDEX = BeforeValidator(_as_index)

U8 = Annotated[int, _INDEX, Field(strict=True, ge=0, le=0xFF), CType("__u8", "B", 1)]
U16 = Annotated[int, _INDEX, Field(strict=True, ge=0, le=0xFFFF), CType("__u16", "H", 2)]
U32 = Annotated[int, _INDEX, Field(strict=True, ge=0, le=0xFFFF_FFFF), CType("__u32", "I", 4)]
U64 = Annotated[
    int, _INDEX, Field(strict=True, ge=0, le=0xFFFF_FFFF_FFFF_FFFF), CType("__u64", "Q", 8)
]
S8 = Annotated[int, _INDEX, Field(strict=True, ge=-0x80, le=0x7F), CType("__s8", "b", 1)]
S16 = Annotated[int, _INDEX, Field(strict=True, ge=-0x8000, le=0x7FFF), CType("__s16", "h", 2)]
S32 = Annotated[
    int, _INDEX, Field(strict=True, ge=-0x8000_0000, le=0x7FFF_FFFF), CType("__s32", "i", 4)
]
S64 = Annotated[
    int,
    _INDEX,
    Field(strict=True, ge=-0x8000_0000_0000_0000, le=0x7FFF_FFFF_FFFF_FFFF),
    CType("__s64", "q", 8),
]


@dataclass(frozen=True, slots=True)
class CField:
    """One member of a C struct as laid out by gcc on x86-64.

    ``kind`` is ``scalar``, ``struct``, ``array`` (of scalars or structs) or ``union`` (raw
    bytes); ``elem`` is the scalar type or nested model; ``length`` is the array length.
    """

    name: str
    offset: int
    size: int
    align: int
    kind: Literal["scalar", "struct", "array", "union"]
    elem: "CType | type[IoctlArgs] | None" = None
    length: int = 0
    union: CUnion | None = None


def _round_up(value: int, align: int) -> int:
    return (value + align - 1) // align * align


def _array_fmt(elem: "CType | type[IoctlArgs]", count: int) -> str:
    if isinstance(elem, CType):
        return f"{count}{elem.fmt}" if count != 1 else elem.fmt
    return elem._BODY_FMT * count


class IoctlArgs(LazyModel):
    """Base of every KFD uapi struct: a pydantic model whose fields are the C members in order.

    Subclasses declare members with the ``U32``/``U64``/``S32``... aliases, nested models,
    ``CArray`` lists or a ``CUnion`` bytes field, and set ``C_NAME``. The C layout is computed
    once per class; ``SIZE``/``ALIGN`` are ``sizeof``/``_Alignof``. Values are range-checked on
    construction and on assignment, so encoding never truncates. Unset members are 0, like a
    zero-initialised C struct.
    """

    model_config = ConfigDict(validate_assignment=True, extra="forbid")

    C_NAME: ClassVar[str] = ""
    SIZE: ClassVar[int] = 0
    ALIGN: ClassVar[int] = 1
    # (member name, element model) of a trailing flexible array member, which sizeof excludes.
    FLEXIBLE_ARRAY: ClassVar["tuple[str, type[IoctlArgs]] | None"] = None
    _FIELDS: ClassVar[tuple[CField, ...]] = ()
    _OFFSETS: ClassVar[dict[str, int]] = {}
    _BODY_FMT: ClassVar[str] = ""
    _STRUCT: ClassVar[struct.Struct]
    _FLAT: ClassVar[bool] = True
    _NAMES: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if not cls.C_NAME:
            raise TypeError(f"{cls.__name__} must set C_NAME to the C struct it models")
        fields: list[CField] = []
        offsets: dict[str, int] = {}
        fmt: list[str] = []
        offset = 0
        align = 1
        for name, info in cls.model_fields.items():
            field = _classify(cls, name, info.annotation, info.metadata, offset)
            if field.offset > offset:
                fmt.append(f"{field.offset - offset}x")
            if field.kind == "union":
                fmt.append(f"{field.size}s")
                assert field.union is not None
                for member, _ in field.union.members:
                    offsets[member] = field.offset
            elif field.kind == "array":
                assert field.elem is not None
                fmt.append(_array_fmt(field.elem, field.length))
            elif field.kind == "struct":
                assert isinstance(field.elem, type)
                fmt.append(field.elem._BODY_FMT)
            else:
                assert isinstance(field.elem, CType)
                fmt.append(field.elem.fmt)
            fields.append(field)
            offsets[name] = field.offset
            offset = field.offset + field.size
            align = max(align, field.align)
        if cls.FLEXIBLE_ARRAY is not None:
            flex_name, flex_elem = cls.FLEXIBLE_ARRAY
            offset = _round_up(offset, flex_elem.ALIGN)
            offsets[flex_name] = offset
            align = max(align, flex_elem.ALIGN)
        size = _round_up(offset, align)
        end = fields[-1].offset + fields[-1].size if fields else 0
        if size > end:
            fmt.append(f"{size - end}x")
        cls.SIZE = size
        cls.ALIGN = align
        cls._FIELDS = tuple(fields)
        cls._OFFSETS = offsets
        cls._BODY_FMT = "".join(fmt)
        # Little-endian with explicit pad bytes: "<" disables struct's own alignment rules.
        cls._STRUCT = struct.Struct("<" + cls._BODY_FMT)
        cls._FLAT = all(f.kind in ("scalar", "union") for f in fields)
        cls._NAMES = tuple(f.name for f in fields)
        assert cls._STRUCT.size == size, (cls.__name__, cls._STRUCT.size, size)

    # -- layout queries ---------------------------------------------------------------------

    @classmethod
    def offsetof(cls, name: str) -> int:
        """``offsetof(struct C_NAME, name)``; also accepts union and flexible-array members."""
        try:
            return cls._OFFSETS[name]
        except KeyError:
            raise AttributeError(
                f"struct {cls.C_NAME} has no member {name!r}; members are: "
                f"{', '.join(cls._OFFSETS)}"
            ) from None

    @classmethod
    def c_fields(cls) -> tuple[CField, ...]:
        """The members in declaration order with their offsets, sizes and kinds."""
        return cls._FIELDS

    @classmethod
    def fast(cls, **values: int) -> "FastArgs":
        """This struct as its fast twin (`fast_twin`): the same bytes, built without pydantic.
        For the thunk's and the driver's own values; input from users goes through the model."""
        return fast_twin(cls)(**values)

    # -- encoding ---------------------------------------------------------------------------

    def _flat(self) -> list[Any]:
        values: list[Any] = []
        data = self.__dict__
        for f in self._FIELDS:
            value = data[f.name]
            if f.kind == "scalar" or f.kind == "union":
                values.append(value)
            elif f.kind == "struct":
                values.extend(value._flat())
            else:
                if len(value) != f.length:
                    # Only reachable by mutating the list in place; assignment is validated.
                    raise ValueError(
                        f"{self.C_NAME}.{f.name} has {len(value)} elements but the C array "
                        f"holds exactly {f.length}; assign a list of {f.length} instead"
                    )
                if isinstance(f.elem, CType):
                    values.extend(value)
                else:
                    for item in value:
                        values.extend(item._flat())
        return values

    @classmethod
    def _unflat(cls, values: Sequence[Any], index: int) -> tuple[Self, int]:
        kwargs: dict[str, Any] = {}
        for f in cls._FIELDS:
            if f.kind == "scalar" or f.kind == "union":
                kwargs[f.name] = values[index]
                index += 1
            elif f.kind == "struct":
                assert isinstance(f.elem, type)
                kwargs[f.name], index = f.elem._unflat(values, index)
            elif isinstance(f.elem, CType):
                kwargs[f.name] = list(values[index : index + f.length])
                index += f.length
            else:
                assert f.elem is not None
                items = []
                for _ in range(f.length):
                    item, index = f.elem._unflat(values, index)
                    items.append(item)
                kwargs[f.name] = items
        return cls._construct(kwargs), index

    @classmethod
    def _construct(cls, values: dict[str, Any]) -> Self:
        # Values unpacked from C types are in range by construction, so skip validation. This
        # is model_construct() minus its per-field default/alias pass, which dominated decode
        # time; every field is present here.
        obj = cls.__new__(cls)
        object.__setattr__(obj, "__dict__", values)
        object.__setattr__(obj, "__pydantic_fields_set__", set(values))
        object.__setattr__(obj, "__pydantic_extra__", None)
        object.__setattr__(obj, "__pydantic_private__", None)
        return obj

    def to_bytes(self) -> bytes:
        """The C struct image, ``SIZE`` bytes, padding zeroed."""
        if self._FLAT:
            data = self.__dict__
            return self._STRUCT.pack(*[data[n] for n in self._NAMES])
        return self._STRUCT.pack(*self._flat())

    def __bytes__(self) -> bytes:
        return self.to_bytes()

    def pack_into(self, buffer: bytearray | memoryview, offset: int = 0) -> None:
        """Write the struct image into a writable buffer at ``offset`` (e.g. user memory)."""
        if self._FLAT:
            data = self.__dict__
            self._STRUCT.pack_into(buffer, offset, *[data[n] for n in self._NAMES])
        else:
            self._STRUCT.pack_into(buffer, offset, *self._flat())

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> Self:
        """Decode exactly ``SIZE`` bytes; padding is ignored, as the kernel ignores it."""
        _check_size(cls.C_NAME, cls.SIZE, data)
        return cls.from_buffer(data)

    @classmethod
    def from_buffer(cls, buffer: bytes | bytearray | memoryview, offset: int = 0) -> Self:
        """Decode the ``SIZE`` bytes at ``offset`` of a larger buffer (e.g. an array in memory)."""
        _check_room(cls.C_NAME, cls.SIZE, buffer, offset)
        values = cls._STRUCT.unpack_from(buffer, offset)
        if cls._FLAT:
            return cls._construct(dict(zip(cls._NAMES, values, strict=True)))
        return cls._unflat(values, 0)[0]


def _classify(
    cls: type[IoctlArgs], name: str, annotation: Any, metadata: list[Any], offset: int
) -> CField:
    for meta in metadata:
        if isinstance(meta, CType):
            start = _round_up(offset, meta.size)
            return CField(name, start, meta.size, meta.size, "scalar", meta)
        if isinstance(meta, CArray):
            elem = meta.elem
            size, align = (
                (elem.size, elem.size) if isinstance(elem, CType) else (elem.SIZE, elem.ALIGN)
            )
            start = _round_up(offset, align)
            return CField(name, start, size * meta.length, align, "array", elem, meta.length)
        if isinstance(meta, CUnion):
            start = _round_up(offset, meta.align)
            size = _round_up(meta.size, meta.align)
            return CField(name, start, size, meta.align, "union", union=meta)
    if isinstance(annotation, type) and issubclass(annotation, IoctlArgs):
        start = _round_up(offset, annotation.ALIGN)
        return CField(name, start, annotation.SIZE, annotation.ALIGN, "struct", annotation)
    raise TypeError(
        f"{cls.__name__}.{name}: annotate C members with U32/U64/S32/..., a nested IoctlArgs "
        f"model, a CArray list or a CUnion bytes field"
    )


# --------------------------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------------------------

KFD_IOCTL_MAJOR_VERSION: Final = 1
KFD_IOCTL_MINOR_VERSION: Final = 11


class QueueType(IntEnum):
    """``kfd_ioctl_create_queue_args.queue_type`` (``KFD_IOC_QUEUE_TYPE_*``)."""

    COMPUTE = 0x0
    SDMA = 0x1
    COMPUTE_AQL = 0x2
    SDMA_XGMI = 0x3


KFD_IOC_QUEUE_TYPE_COMPUTE: Final = QueueType.COMPUTE
KFD_IOC_QUEUE_TYPE_SDMA: Final = QueueType.SDMA
KFD_IOC_QUEUE_TYPE_COMPUTE_AQL: Final = QueueType.COMPUTE_AQL
KFD_IOC_QUEUE_TYPE_SDMA_XGMI: Final = QueueType.SDMA_XGMI

KFD_MAX_QUEUE_PERCENTAGE: Final = 100
KFD_MAX_QUEUE_PRIORITY: Final = 15
KFD_MIN_QUEUE_RING_SIZE: Final = 1024


class CachePolicy(IntEnum):
    """``kfd_ioctl_set_memory_policy_args.{default,alternate}_policy``."""

    COHERENT = 0
    NONCOHERENT = 1


KFD_IOC_CACHE_POLICY_COHERENT: Final = CachePolicy.COHERENT
KFD_IOC_CACHE_POLICY_NONCOHERENT: Final = CachePolicy.NONCOHERENT

NUM_OF_SUPPORTED_GPUS: Final = 7
MAX_ALLOWED_NUM_POINTS: Final = 100
MAX_ALLOWED_AW_BUFF_SIZE: Final = 4096
MAX_ALLOWED_WAC_BUFF_SIZE: Final = 128

KFD_INVALID_FD: Final = 0xFFFFFFFF


class EventType(IntEnum):
    """``kfd_ioctl_create_event_args.event_type`` (``KFD_IOC_EVENT_*``, = HSA_EVENTTYPE)."""

    SIGNAL = 0
    NODECHANGE = 1
    DEVICESTATECHANGE = 2
    HW_EXCEPTION = 3
    SYSTEM_EVENT = 4
    DEBUG_EVENT = 5
    PROFILE_EVENT = 6
    QUEUE_EVENT = 7
    MEMORY = 8


KFD_IOC_EVENT_SIGNAL: Final = EventType.SIGNAL
KFD_IOC_EVENT_NODECHANGE: Final = EventType.NODECHANGE
KFD_IOC_EVENT_DEVICESTATECHANGE: Final = EventType.DEVICESTATECHANGE
KFD_IOC_EVENT_HW_EXCEPTION: Final = EventType.HW_EXCEPTION
KFD_IOC_EVENT_SYSTEM_EVENT: Final = EventType.SYSTEM_EVENT
KFD_IOC_EVENT_DEBUG_EVENT: Final = EventType.DEBUG_EVENT
KFD_IOC_EVENT_PROFILE_EVENT: Final = EventType.PROFILE_EVENT
KFD_IOC_EVENT_QUEUE_EVENT: Final = EventType.QUEUE_EVENT
KFD_IOC_EVENT_MEMORY: Final = EventType.MEMORY


class WaitResult(IntEnum):
    """``kfd_ioctl_wait_events_args.wait_result`` (``KFD_IOC_WAIT_RESULT_*``)."""

    COMPLETE = 0
    TIMEOUT = 1
    FAIL = 2


KFD_IOC_WAIT_RESULT_COMPLETE: Final = WaitResult.COMPLETE
KFD_IOC_WAIT_RESULT_TIMEOUT: Final = WaitResult.TIMEOUT
KFD_IOC_WAIT_RESULT_FAIL: Final = WaitResult.FAIL

KFD_SIGNAL_EVENT_LIMIT: Final = 4096


class HwExceptionResetType(IntEnum):
    """``kfd_hsa_hw_exception_data.reset_type``."""

    WHOLE_GPU_RESET = 0
    PER_ENGINE_RESET = 1


class HwExceptionResetCause(IntEnum):
    """``kfd_hsa_hw_exception_data.reset_cause``."""

    GPU_HANG = 0
    ECC = 1


KFD_HW_EXCEPTION_WHOLE_GPU_RESET: Final = HwExceptionResetType.WHOLE_GPU_RESET
KFD_HW_EXCEPTION_PER_ENGINE_RESET: Final = HwExceptionResetType.PER_ENGINE_RESET
KFD_HW_EXCEPTION_GPU_HANG: Final = HwExceptionResetCause.GPU_HANG
KFD_HW_EXCEPTION_ECC: Final = HwExceptionResetCause.ECC


class MemErr(IntEnum):
    """``kfd_hsa_memory_exception_data.ErrorType`` (``KFD_MEM_ERR_*``)."""

    NO_RAS = 0
    SRAM_ECC = 1
    POISON_CONSUMED = 2
    GPU_HANG = 3


KFD_MEM_ERR_NO_RAS: Final = MemErr.NO_RAS
KFD_MEM_ERR_SRAM_ECC: Final = MemErr.SRAM_ECC
KFD_MEM_ERR_POISON_CONSUMED: Final = MemErr.POISON_CONSUMED
KFD_MEM_ERR_GPU_HANG: Final = MemErr.GPU_HANG


class AllocMemFlags(IntFlag):
    """``kfd_ioctl_alloc_memory_of_gpu_args.flags``: one memory type plus attribute bits."""

    VRAM = 1 << 0
    GTT = 1 << 1
    USERPTR = 1 << 2
    DOORBELL = 1 << 3
    MMIO_REMAP = 1 << 4
    # The header writes (1 << 31), a negative int in C; the __u32 member holds this bit.
    WRITABLE = 1 << 31
    EXECUTABLE = 1 << 30
    PUBLIC = 1 << 29
    NO_SUBSTITUTE = 1 << 28
    AQL_QUEUE_MEM = 1 << 27
    COHERENT = 1 << 26
    UNCACHED = 1 << 25


KFD_IOC_ALLOC_MEM_FLAGS_VRAM: Final = AllocMemFlags.VRAM
KFD_IOC_ALLOC_MEM_FLAGS_GTT: Final = AllocMemFlags.GTT
KFD_IOC_ALLOC_MEM_FLAGS_USERPTR: Final = AllocMemFlags.USERPTR
KFD_IOC_ALLOC_MEM_FLAGS_DOORBELL: Final = AllocMemFlags.DOORBELL
KFD_IOC_ALLOC_MEM_FLAGS_MMIO_REMAP: Final = AllocMemFlags.MMIO_REMAP
KFD_IOC_ALLOC_MEM_FLAGS_WRITABLE: Final = AllocMemFlags.WRITABLE
KFD_IOC_ALLOC_MEM_FLAGS_EXECUTABLE: Final = AllocMemFlags.EXECUTABLE
KFD_IOC_ALLOC_MEM_FLAGS_PUBLIC: Final = AllocMemFlags.PUBLIC
KFD_IOC_ALLOC_MEM_FLAGS_NO_SUBSTITUTE: Final = AllocMemFlags.NO_SUBSTITUTE
KFD_IOC_ALLOC_MEM_FLAGS_AQL_QUEUE_MEM: Final = AllocMemFlags.AQL_QUEUE_MEM
KFD_IOC_ALLOC_MEM_FLAGS_COHERENT: Final = AllocMemFlags.COHERENT
KFD_IOC_ALLOC_MEM_FLAGS_UNCACHED: Final = AllocMemFlags.UNCACHED


class SmiEvent(IntEnum):
    """``enum kfd_smi_event``: SMI event numbers, counted from 1."""

    NONE = 0
    VMFAULT = 1
    THERMAL_THROTTLE = 2
    GPU_PRE_RESET = 3
    GPU_POST_RESET = 4
    MIGRATE_START = 5
    MIGRATE_END = 6
    PAGE_FAULT_START = 7
    PAGE_FAULT_END = 8
    QUEUE_EVICTION = 9
    QUEUE_RESTORE = 10
    UNMAP_FROM_GPU = 11
    # As a mask bit, asks for events of all processes (needs CAP_SYS_ADMIN).
    ALL_PROCESS = 64


KFD_SMI_EVENT_NONE: Final = SmiEvent.NONE
KFD_SMI_EVENT_VMFAULT: Final = SmiEvent.VMFAULT
KFD_SMI_EVENT_THERMAL_THROTTLE: Final = SmiEvent.THERMAL_THROTTLE
KFD_SMI_EVENT_GPU_PRE_RESET: Final = SmiEvent.GPU_PRE_RESET
KFD_SMI_EVENT_GPU_POST_RESET: Final = SmiEvent.GPU_POST_RESET
KFD_SMI_EVENT_MIGRATE_START: Final = SmiEvent.MIGRATE_START
KFD_SMI_EVENT_MIGRATE_END: Final = SmiEvent.MIGRATE_END
KFD_SMI_EVENT_PAGE_FAULT_START: Final = SmiEvent.PAGE_FAULT_START
KFD_SMI_EVENT_PAGE_FAULT_END: Final = SmiEvent.PAGE_FAULT_END
KFD_SMI_EVENT_QUEUE_EVICTION: Final = SmiEvent.QUEUE_EVICTION
KFD_SMI_EVENT_QUEUE_RESTORE: Final = SmiEvent.QUEUE_RESTORE
KFD_SMI_EVENT_UNMAP_FROM_GPU: Final = SmiEvent.UNMAP_FROM_GPU
KFD_SMI_EVENT_ALL_PROCESS: Final = SmiEvent.ALL_PROCESS


class MigrateTrigger(IntEnum):
    """``enum KFD_MIGRATE_TRIGGERS``: why an SVM range migrated (SMI event payload)."""

    PREFETCH = 0
    PAGEFAULT_GPU = 1
    PAGEFAULT_CPU = 2
    TTM_EVICTION = 3


KFD_MIGRATE_TRIGGER_PREFETCH: Final = MigrateTrigger.PREFETCH
KFD_MIGRATE_TRIGGER_PAGEFAULT_GPU: Final = MigrateTrigger.PAGEFAULT_GPU
KFD_MIGRATE_TRIGGER_PAGEFAULT_CPU: Final = MigrateTrigger.PAGEFAULT_CPU
KFD_MIGRATE_TRIGGER_TTM_EVICTION: Final = MigrateTrigger.TTM_EVICTION


class QueueEvictionTrigger(IntEnum):
    """``enum KFD_QUEUE_EVICTION_TRIGGERS`` (the two CRIU names lack ``TRIGGER_`` in C)."""

    SVM = 0
    USERPTR = 1
    TTM = 2
    SUSPEND = 3
    CRIU_CHECKPOINT = 4
    CRIU_RESTORE = 5


KFD_QUEUE_EVICTION_TRIGGER_SVM: Final = QueueEvictionTrigger.SVM
KFD_QUEUE_EVICTION_TRIGGER_USERPTR: Final = QueueEvictionTrigger.USERPTR
KFD_QUEUE_EVICTION_TRIGGER_TTM: Final = QueueEvictionTrigger.TTM
KFD_QUEUE_EVICTION_TRIGGER_SUSPEND: Final = QueueEvictionTrigger.SUSPEND
KFD_QUEUE_EVICTION_CRIU_CHECKPOINT: Final = QueueEvictionTrigger.CRIU_CHECKPOINT
KFD_QUEUE_EVICTION_CRIU_RESTORE: Final = QueueEvictionTrigger.CRIU_RESTORE


class SvmUnmapTrigger(IntEnum):
    """``enum KFD_SVM_UNMAP_TRIGGERS``."""

    MMU_NOTIFY = 0
    MMU_NOTIFY_MIGRATE = 1
    UNMAP_FROM_CPU = 2


KFD_SVM_UNMAP_TRIGGER_MMU_NOTIFY: Final = SvmUnmapTrigger.MMU_NOTIFY
KFD_SVM_UNMAP_TRIGGER_MMU_NOTIFY_MIGRATE: Final = SvmUnmapTrigger.MMU_NOTIFY_MIGRATE
KFD_SVM_UNMAP_TRIGGER_UNMAP_FROM_CPU: Final = SvmUnmapTrigger.UNMAP_FROM_CPU

KFD_SMI_EVENT_MSG_SIZE: Final = 96


def KFD_SMI_EVENT_MASK_FROM_INDEX(i: int) -> int:  # noqa: N802 - the C macro's name
    """The SMI event-mask bit for event number ``i`` (numbers start at 1)."""
    return 1 << (i - 1)


class CriuOp(IntEnum):
    """``enum kfd_criu_op``: ``kfd_ioctl_criu_args.op``."""

    PROCESS_INFO = 0
    CHECKPOINT = 1
    UNPAUSE = 2
    RESTORE = 3
    RESUME = 4


KFD_CRIU_OP_PROCESS_INFO: Final = CriuOp.PROCESS_INFO
KFD_CRIU_OP_CHECKPOINT: Final = CriuOp.CHECKPOINT
KFD_CRIU_OP_UNPAUSE: Final = CriuOp.UNPAUSE
KFD_CRIU_OP_RESTORE: Final = CriuOp.RESTORE
KFD_CRIU_OP_RESUME: Final = CriuOp.RESUME


class MmioRemap(IntEnum):
    """``enum kfd_mmio_remap``: register byte offsets inside the remapped MMIO page."""

    HDP_MEM_FLUSH_CNTL = 0
    HDP_REG_FLUSH_CNTL = 4


KFD_MMIO_REMAP_HDP_MEM_FLUSH_CNTL: Final = MmioRemap.HDP_MEM_FLUSH_CNTL
KFD_MMIO_REMAP_HDP_REG_FLUSH_CNTL: Final = MmioRemap.HDP_REG_FLUSH_CNTL


class SvmFlag(IntFlag):
    """``KFD_IOCTL_SVM_FLAG_*``: values of the SET_FLAGS/CLR_FLAGS SVM attributes."""

    HOST_ACCESS = 0x00000001
    COHERENT = 0x00000002
    HIVE_LOCAL = 0x00000004
    GPU_RO = 0x00000008
    GPU_EXEC = 0x00000010
    GPU_READ_MOSTLY = 0x00000020
    GPU_ALWAYS_MAPPED = 0x00000040


KFD_IOCTL_SVM_FLAG_HOST_ACCESS: Final = SvmFlag.HOST_ACCESS
KFD_IOCTL_SVM_FLAG_COHERENT: Final = SvmFlag.COHERENT
KFD_IOCTL_SVM_FLAG_HIVE_LOCAL: Final = SvmFlag.HIVE_LOCAL
KFD_IOCTL_SVM_FLAG_GPU_RO: Final = SvmFlag.GPU_RO
KFD_IOCTL_SVM_FLAG_GPU_EXEC: Final = SvmFlag.GPU_EXEC
KFD_IOCTL_SVM_FLAG_GPU_READ_MOSTLY: Final = SvmFlag.GPU_READ_MOSTLY
KFD_IOCTL_SVM_FLAG_GPU_ALWAYS_MAPPED: Final = SvmFlag.GPU_ALWAYS_MAPPED


class SvmOp(IntEnum):
    """``enum kfd_ioctl_svm_op``: ``kfd_ioctl_svm_args.op``."""

    SET_ATTR = 0
    GET_ATTR = 1


KFD_IOCTL_SVM_OP_SET_ATTR: Final = SvmOp.SET_ATTR
KFD_IOCTL_SVM_OP_GET_ATTR: Final = SvmOp.GET_ATTR


class SvmLocation(IntEnum):
    """``enum kfd_ioctl_svm_location``: non-GPU values of the PREFERRED/PREFETCH_LOC attrs."""

    SYSMEM = 0
    UNDEFINED = 0xFFFFFFFF


KFD_IOCTL_SVM_LOCATION_SYSMEM: Final = SvmLocation.SYSMEM
KFD_IOCTL_SVM_LOCATION_UNDEFINED: Final = SvmLocation.UNDEFINED


class SvmAttrType(IntEnum):
    """``enum kfd_ioctl_svm_attr_type``: ``kfd_ioctl_svm_attribute.type``."""

    PREFERRED_LOC = 0
    PREFETCH_LOC = 1
    ACCESS = 2
    ACCESS_IN_PLACE = 3
    NO_ACCESS = 4
    SET_FLAGS = 5
    CLR_FLAGS = 6
    GRANULARITY = 7


KFD_IOCTL_SVM_ATTR_PREFERRED_LOC: Final = SvmAttrType.PREFERRED_LOC
KFD_IOCTL_SVM_ATTR_PREFETCH_LOC: Final = SvmAttrType.PREFETCH_LOC
KFD_IOCTL_SVM_ATTR_ACCESS: Final = SvmAttrType.ACCESS
KFD_IOCTL_SVM_ATTR_ACCESS_IN_PLACE: Final = SvmAttrType.ACCESS_IN_PLACE
KFD_IOCTL_SVM_ATTR_NO_ACCESS: Final = SvmAttrType.NO_ACCESS
KFD_IOCTL_SVM_ATTR_SET_FLAGS: Final = SvmAttrType.SET_FLAGS
KFD_IOCTL_SVM_ATTR_CLR_FLAGS: Final = SvmAttrType.CLR_FLAGS
KFD_IOCTL_SVM_ATTR_GRANULARITY: Final = SvmAttrType.GRANULARITY

# --------------------------------------------------------------------------------------------
# Structs, in header order
# --------------------------------------------------------------------------------------------


class GetVersionArgs(IoctlArgs):
    C_NAME = "kfd_ioctl_get_version_args"
    major_version: U32 = 0
    minor_version: U32 = 0


class CreateQueueArgs(IoctlArgs):
    C_NAME = "kfd_ioctl_create_queue_args"
    ring_base_address: U64 = 0
    write_pointer_address: U64 = 0
    read_pointer_address: U64 = 0
    doorbell_offset: U64 = 0
    ring_size: U32 = 0
    gpu_id: U32 = 0
    queue_type: U32 = 0
    queue_percentage: U32 = 0
    queue_priority: U32 = 0
    queue_id: U32 = 0
    eop_buffer_address: U64 = 0
    eop_buffer_size: U64 = 0
    ctx_save_restore_address: U64 = 0
    ctx_save_restore_size: U32 = 0
    ctl_stack_size: U32 = 0


class DestroyQueueArgs(IoctlArgs):
    C_NAME = "kfd_ioctl_destroy_queue_args"
    queue_id: U32 = 0
    pad: U32 = 0


class UpdateQueueArgs(IoctlArgs):
    C_NAME = "kfd_ioctl_update_queue_args"
    ring_base_address: U64 = 0
    queue_id: U32 = 0
    ring_size: U32 = 0
    queue_percentage: U32 = 0
    queue_priority: U32 = 0


class SetCuMaskArgs(IoctlArgs):
    C_NAME = "kfd_ioctl_set_cu_mask_args"
    queue_id: U32 = 0
    num_cu_mask: U32 = 0
    cu_mask_ptr: U64 = 0


class GetQueueWaveStateArgs(IoctlArgs):
    C_NAME = "kfd_ioctl_get_queue_wave_state_args"
    ctl_stack_address: U64 = 0
    ctl_stack_used_size: U32 = 0
    save_area_used_size: U32 = 0
    queue_id: U32 = 0
    pad: U32 = 0


class GetAvailableMemoryArgs(IoctlArgs):
    C_NAME = "kfd_ioctl_get_available_memory_args"
    available: U64 = 0
    gpu_id: U32 = 0
    pad: U32 = 0


class SetMemoryPolicyArgs(IoctlArgs):
    C_NAME = "kfd_ioctl_set_memory_policy_args"
    alternate_aperture_base: U64 = 0
    alternate_aperture_size: U64 = 0
    gpu_id: U32 = 0
    default_policy: U32 = 0
    alternate_policy: U32 = 0
    pad: U32 = 0


class GetClockCountersArgs(IoctlArgs):
    C_NAME = "kfd_ioctl_get_clock_counters_args"
    gpu_clock_counter: U64 = 0
    cpu_clock_counter: U64 = 0
    system_clock_counter: U64 = 0
    system_clock_freq: U64 = 0
    gpu_id: U32 = 0
    pad: U32 = 0


class ProcessDeviceApertures(IoctlArgs):
    C_NAME = "kfd_process_device_apertures"
    lds_base: U64 = 0
    lds_limit: U64 = 0
    scratch_base: U64 = 0
    scratch_limit: U64 = 0
    gpuvm_base: U64 = 0
    gpuvm_limit: U64 = 0
    gpu_id: U32 = 0
    pad: U32 = 0


def _no_apertures() -> list[ProcessDeviceApertures]:
    return [ProcessDeviceApertures() for _ in range(NUM_OF_SUPPORTED_GPUS)]


class GetProcessAperturesArgs(IoctlArgs):
    """The deprecated fixed-array form; ``process_apertures`` always has 7 entries."""

    C_NAME = "kfd_ioctl_get_process_apertures_args"
    process_apertures: Annotated[
        list[ProcessDeviceApertures],
        Field(min_length=NUM_OF_SUPPORTED_GPUS, max_length=NUM_OF_SUPPORTED_GPUS),
        CArray(ProcessDeviceApertures, NUM_OF_SUPPORTED_GPUS),
    ] = Field(default_factory=_no_apertures)
    num_of_nodes: U32 = 0
    pad: U32 = 0


class GetProcessAperturesNewArgs(IoctlArgs):
    C_NAME = "kfd_ioctl_get_process_apertures_new_args"
    kfd_process_device_apertures_ptr: U64 = 0
    num_of_nodes: U32 = 0
    pad: U32 = 0


class DbgRegisterArgs(IoctlArgs):
    C_NAME = "kfd_ioctl_dbg_register_args"
    gpu_id: U32 = 0
    pad: U32 = 0


class DbgUnregisterArgs(IoctlArgs):
    C_NAME = "kfd_ioctl_dbg_unregister_args"
    gpu_id: U32 = 0
    pad: U32 = 0


class DbgAddressWatchArgs(IoctlArgs):
    C_NAME = "kfd_ioctl_dbg_address_watch_args"
    content_ptr: U64 = 0
    gpu_id: U32 = 0
    buf_size_in_bytes: U32 = 0


class DbgWaveControlArgs(IoctlArgs):
    C_NAME = "kfd_ioctl_dbg_wave_control_args"
    content_ptr: U64 = 0
    gpu_id: U32 = 0
    buf_size_in_bytes: U32 = 0


class CreateEventArgs(IoctlArgs):
    C_NAME = "kfd_ioctl_create_event_args"
    event_page_offset: U64 = 0
    event_trigger_data: U32 = 0
    event_type: U32 = 0
    auto_reset: U32 = 0
    node_id: U32 = 0
    event_id: U32 = 0
    event_slot_index: U32 = 0


class DestroyEventArgs(IoctlArgs):
    C_NAME = "kfd_ioctl_destroy_event_args"
    event_id: U32 = 0
    pad: U32 = 0


class SetEventArgs(IoctlArgs):
    C_NAME = "kfd_ioctl_set_event_args"
    event_id: U32 = 0
    pad: U32 = 0


class ResetEventArgs(IoctlArgs):
    C_NAME = "kfd_ioctl_reset_event_args"
    event_id: U32 = 0
    pad: U32 = 0


class MemoryExceptionFailure(IoctlArgs):
    C_NAME = "kfd_memory_exception_failure"
    NotPresent: U32 = 0
    ReadOnly: U32 = 0
    NoExecute: U32 = 0
    imprecise: U32 = 0


class HsaMemoryExceptionData(IoctlArgs):
    C_NAME = "kfd_hsa_memory_exception_data"
    failure: MemoryExceptionFailure = Field(default_factory=MemoryExceptionFailure)
    va: U64 = 0
    gpu_id: U32 = 0
    ErrorType: U32 = 0


class HsaHwExceptionData(IoctlArgs):
    C_NAME = "kfd_hsa_hw_exception_data"
    reset_type: U32 = 0
    reset_cause: U32 = 0
    memory_lost: U32 = 0
    gpu_id: U32 = 0


_EVENT_DATA_UNION = CUnion(
    (
        ("memory_exception_data", HsaMemoryExceptionData),
        ("hw_exception_data", HsaHwExceptionData),
    )
)


class EventData(IoctlArgs):
    """``struct kfd_event_data``, the element of the ``wait_events`` array.

    C gives its leading anonymous union no name; here its storage is the ``exception_data``
    bytes (the size of the largest member) and the C member names are typed views:
    ``memory_exception_data`` and ``hw_exception_data``. A view is a copy, as reading a C
    union member by value is; assigning a view overwrites only that member's leading bytes,
    as a C member store does. ``offsetof`` accepts the C member names.
    """

    C_NAME = "kfd_event_data"
    exception_data: Annotated[
        bytes,
        BeforeValidator(_as_bytes),
        Field(strict=True, min_length=_EVENT_DATA_UNION.size, max_length=_EVENT_DATA_UNION.size),
        _EVENT_DATA_UNION,
    ] = bytes(_EVENT_DATA_UNION.size)
    kfd_event_data_ext: U64 = 0
    event_id: U32 = 0
    pad: U32 = 0

    def _store(self, member: IoctlArgs) -> None:
        image = member.to_bytes()
        self.exception_data = image + self.exception_data[len(image) :]

    @property
    def memory_exception_data(self) -> HsaMemoryExceptionData:
        return HsaMemoryExceptionData.from_buffer(self.exception_data)

    @memory_exception_data.setter
    def memory_exception_data(self, value: HsaMemoryExceptionData) -> None:
        self._store(value)

    @property
    def hw_exception_data(self) -> HsaHwExceptionData:
        return HsaHwExceptionData.from_buffer(self.exception_data)

    @hw_exception_data.setter
    def hw_exception_data(self, value: HsaHwExceptionData) -> None:
        self._store(value)


class WaitEventsArgs(IoctlArgs):
    C_NAME = "kfd_ioctl_wait_events_args"
    events_ptr: U64 = 0
    num_events: U32 = 0
    wait_for_all: U32 = 0
    timeout: U32 = 0
    wait_result: U32 = 0


class SetScratchBackingVaArgs(IoctlArgs):
    C_NAME = "kfd_ioctl_set_scratch_backing_va_args"
    va_addr: U64 = 0
    gpu_id: U32 = 0
    pad: U32 = 0


class GetTileConfigArgs(IoctlArgs):
    C_NAME = "kfd_ioctl_get_tile_config_args"
    tile_config_ptr: U64 = 0
    macro_tile_config_ptr: U64 = 0
    num_tile_configs: U32 = 0
    num_macro_tile_configs: U32 = 0
    gpu_id: U32 = 0
    gb_addr_config: U32 = 0
    num_banks: U32 = 0
    num_ranks: U32 = 0


class SetTrapHandlerArgs(IoctlArgs):
    C_NAME = "kfd_ioctl_set_trap_handler_args"
    tba_addr: U64 = 0
    tma_addr: U64 = 0
    gpu_id: U32 = 0
    pad: U32 = 0


class AcquireVmArgs(IoctlArgs):
    C_NAME = "kfd_ioctl_acquire_vm_args"
    drm_fd: U32 = 0
    gpu_id: U32 = 0


class AllocMemoryOfGpuArgs(IoctlArgs):
    C_NAME = "kfd_ioctl_alloc_memory_of_gpu_args"
    va_addr: U64 = 0
    size: U64 = 0
    handle: U64 = 0
    mmap_offset: U64 = 0
    gpu_id: U32 = 0
    flags: U32 = 0


class FreeMemoryOfGpuArgs(IoctlArgs):
    C_NAME = "kfd_ioctl_free_memory_of_gpu_args"
    handle: U64 = 0


class MapMemoryToGpuArgs(IoctlArgs):
    C_NAME = "kfd_ioctl_map_memory_to_gpu_args"
    handle: U64 = 0
    device_ids_array_ptr: U64 = 0
    n_devices: U32 = 0
    n_success: U32 = 0


class UnmapMemoryFromGpuArgs(IoctlArgs):
    C_NAME = "kfd_ioctl_unmap_memory_from_gpu_args"
    handle: U64 = 0
    device_ids_array_ptr: U64 = 0
    n_devices: U32 = 0
    n_success: U32 = 0


class AllocQueueGwsArgs(IoctlArgs):
    C_NAME = "kfd_ioctl_alloc_queue_gws_args"
    queue_id: U32 = 0
    num_gws: U32 = 0
    first_gws: U32 = 0
    pad: U32 = 0


class GetDmabufInfoArgs(IoctlArgs):
    C_NAME = "kfd_ioctl_get_dmabuf_info_args"
    size: U64 = 0
    metadata_ptr: U64 = 0
    metadata_size: U32 = 0
    gpu_id: U32 = 0
    flags: U32 = 0
    dmabuf_fd: U32 = 0


class ImportDmabufArgs(IoctlArgs):
    C_NAME = "kfd_ioctl_import_dmabuf_args"
    va_addr: U64 = 0
    handle: U64 = 0
    gpu_id: U32 = 0
    dmabuf_fd: U32 = 0


class SmiEventsArgs(IoctlArgs):
    C_NAME = "kfd_ioctl_smi_events_args"
    gpuid: U32 = 0
    anon_fd: U32 = 0


class CriuArgs(IoctlArgs):
    C_NAME = "kfd_ioctl_criu_args"
    devices: U64 = 0
    bos: U64 = 0
    priv_data: U64 = 0
    priv_data_size: U64 = 0
    num_devices: U32 = 0
    num_bos: U32 = 0
    num_objects: U32 = 0
    pid: U32 = 0
    op: U32 = 0


class CriuDeviceBucket(IoctlArgs):
    C_NAME = "kfd_criu_device_bucket"
    user_gpu_id: U32 = 0
    actual_gpu_id: U32 = 0
    drm_fd: U32 = 0
    pad: U32 = 0


class CriuBoBucket(IoctlArgs):
    C_NAME = "kfd_criu_bo_bucket"
    addr: U64 = 0
    size: U64 = 0
    offset: U64 = 0
    restored_offset: U64 = 0
    gpu_id: U32 = 0
    alloc_flags: U32 = 0
    dmabuf_fd: U32 = 0
    pad: U32 = 0


class SvmAttribute(IoctlArgs):
    C_NAME = "kfd_ioctl_svm_attribute"
    type: U32 = 0
    value: U32 = 0


class SvmArgs(IoctlArgs):
    """``struct kfd_ioctl_svm_args`` without its flexible ``attrs[]`` array.

    The request number and ``SIZE`` cover only this fixed head (``sizeof`` excludes a
    flexible array member); the kernel reads ``nattr`` attributes from ``offsetof("attrs")``
    on. Use ``attrs_to_bytes``/``attrs_from_buffer`` for them.
    """

    C_NAME = "kfd_ioctl_svm_args"
    FLEXIBLE_ARRAY = ("attrs", SvmAttribute)
    start_addr: U64 = 0
    size: U64 = 0
    op: U32 = 0
    nattr: U32 = 0

    @staticmethod
    def attrs_to_bytes(attrs: Sequence[SvmAttribute]) -> bytes:
        """The image of ``attrs[]`` that follows the head in user memory."""
        return b"".join(a.to_bytes() for a in attrs)

    @classmethod
    def attrs_from_buffer(
        cls, buffer: bytes | bytearray | memoryview, nattr: int, offset: int = 0
    ) -> list[SvmAttribute]:
        """Read ``nattr`` attributes of the struct whose head starts at ``offset``."""
        base = offset + cls.offsetof("attrs")
        return [
            SvmAttribute.from_buffer(buffer, base + i * SvmAttribute.SIZE) for i in range(nattr)
        ]


class SetXnackModeArgs(IoctlArgs):
    C_NAME = "kfd_ioctl_set_xnack_mode_args"
    # Signed in C: negative means "query only", so it is the one __s32 in the header.
    xnack_enabled: S32 = 0


STRUCTS: Final[dict[str, type[IoctlArgs]]] = {
    cls.C_NAME: cls
    for cls in (
        GetVersionArgs,
        CreateQueueArgs,
        DestroyQueueArgs,
        UpdateQueueArgs,
        SetCuMaskArgs,
        GetQueueWaveStateArgs,
        GetAvailableMemoryArgs,
        SetMemoryPolicyArgs,
        GetClockCountersArgs,
        ProcessDeviceApertures,
        GetProcessAperturesArgs,
        GetProcessAperturesNewArgs,
        DbgRegisterArgs,
        DbgUnregisterArgs,
        DbgAddressWatchArgs,
        DbgWaveControlArgs,
        CreateEventArgs,
        DestroyEventArgs,
        SetEventArgs,
        ResetEventArgs,
        MemoryExceptionFailure,
        HsaMemoryExceptionData,
        HsaHwExceptionData,
        EventData,
        WaitEventsArgs,
        SetScratchBackingVaArgs,
        GetTileConfigArgs,
        SetTrapHandlerArgs,
        AcquireVmArgs,
        AllocMemoryOfGpuArgs,
        FreeMemoryOfGpuArgs,
        MapMemoryToGpuArgs,
        UnmapMemoryFromGpuArgs,
        AllocQueueGwsArgs,
        GetDmabufInfoArgs,
        ImportDmabufArgs,
        SmiEventsArgs,
        CriuArgs,
        CriuDeviceBucket,
        CriuBoBucket,
        SvmAttribute,
        SvmArgs,
        SetXnackModeArgs,
    )
}
"""Every struct of the header by its C tag name."""

# --------------------------------------------------------------------------------------------
# Fast twins: the flat structs without pydantic, for the ioctl path
# --------------------------------------------------------------------------------------------


class FastArgs:
    """A flat uapi struct (integer members only) as a plain slotted object.

    The twin of an `IoctlArgs` model: the same member names and the same bytes (it packs and
    unpacks with the model's own precompiled `struct.Struct`), but no pydantic, so building,
    reading and assigning cost what a Python object costs. Every ioctl goes through one twice
    (the thunk builds the args and reads the reply, the driver decodes them, fills the reply in
    and encodes it): validating structs the emulator builds itself was most of an ioctl's cost.
    Nothing is checked on construction or assignment; a value that does not fit its C type
    (or is not an integer) is refused when the struct is packed, with a `ValueError` naming
    the member and its range, before the bytes go anywhere. The model stays the reference
    (and the way in for values from users); `to_model()` converts.
    """

    __slots__ = ()
    MODEL: ClassVar[type[IoctlArgs]]
    C_NAME: ClassVar[str] = ""
    SIZE: ClassVar[int] = 0
    _STRUCT: ClassVar[struct.Struct]
    _NAMES: ClassVar[tuple[str, ...]] = ()
    _VALUES: ClassVar[Any]  # operator.attrgetter of the members, in order

    def __init__(self, *values: int, **named: int) -> None:  # replaced per twin
        raise TypeError("FastArgs is abstract: use fast_twin(model)")

    def _pack_values(self) -> tuple[int, ...]:
        values = self._VALUES(self)
        return values if len(self._NAMES) != 1 else (values,)

    def to_bytes(self) -> bytes:
        """The C struct image, ``SIZE`` bytes, padding zeroed (as the model's)."""
        try:
            return self._STRUCT.pack(*self._pack_values())
        except struct.error:
            raise self._range_error() from None

    def __bytes__(self) -> bytes:
        return self.to_bytes()

    def pack_into(self, buffer: bytearray | memoryview, offset: int = 0) -> None:
        try:
            self._STRUCT.pack_into(buffer, offset, *self._pack_values())
        except struct.error:
            raise self._range_error() from None

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> Self:
        """Decode exactly ``SIZE`` bytes; padding is ignored, as the kernel ignores it."""
        _check_size(cls.C_NAME, cls.SIZE, data)
        return cls(*cls._STRUCT.unpack(data))

    @classmethod
    def from_buffer(cls, buffer: bytes | bytearray | memoryview, offset: int = 0) -> Self:
        """Decode the ``SIZE`` bytes at ``offset`` of a larger buffer."""
        _check_room(cls.C_NAME, cls.SIZE, buffer, offset)
        return cls(*cls._STRUCT.unpack_from(buffer, offset))

    @classmethod
    def offsetof(cls, name: str) -> int:
        return cls.MODEL.offsetof(name)

    def to_model(self) -> IoctlArgs:
        """The pydantic model of the same values (validated)."""
        return self.MODEL(**{n: getattr(self, n) for n in self._NAMES})

    def _range_error(self) -> ValueError:
        for f in self.MODEL._FIELDS:
            value = getattr(self, f.name)
            ctype = f.elem
            assert isinstance(ctype, CType)
            bits = 8 * ctype.size
            lo, hi = (
                (0, (1 << bits) - 1)
                if ctype.fmt.isupper()
                else (-(1 << bits - 1), (1 << bits - 1) - 1)
            )
            try:
                ok = lo <= operator.index(value) <= hi
            except TypeError:
                return ValueError(
                    f"{self.C_NAME}.{f.name} = {value!r}: must be an integer ({ctype.name})"
                )
            if not ok:
                return ValueError(
                    f"{self.C_NAME}.{f.name} = {value}: out of range for {ctype.name} ({lo}..{hi})"
                )
        return ValueError(f"struct {self.C_NAME}: cannot pack {self!r}")

    def __repr__(self) -> str:
        members = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._NAMES)
        return f"{type(self).__name__}({members})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._VALUES(self) == self._VALUES(other)

    __hash__ = None  # type: ignore[assignment]  # mutable, as the model

    def __reduce__(self) -> tuple[Any, ...]:
        # Twins are made at run time, so pickle (checkpoints) names the model instead.
        return (_unpickle_fast, (self.MODEL, self._pack_values()))


def _unpickle_fast(model: type[IoctlArgs], values: tuple[int, ...]) -> FastArgs:
    return fast_twin(model)(*values)


_FAST_TWINS: dict[type[IoctlArgs], type[FastArgs]] = {}


def fast_twin(model: type[IoctlArgs]) -> type[FastArgs]:
    """The `FastArgs` twin of a flat struct's model, built on first use (each costs ~0.1 ms:
    `import rocr` builds none). Structs with nested structs, arrays or unions have none."""
    twin = _FAST_TWINS.get(model)
    if twin is not None:
        return twin
    if not model._FLAT or any(f.kind != "scalar" for f in model._FIELDS):
        raise TypeError(
            f"struct {model.C_NAME} has nested structs, arrays or unions: it has no fast "
            "twin; use the model"
        )
    names = model._NAMES
    # The __init__ a dataclass would generate, without dataclasses' ~1 ms a class: the names
    # are this module's own member names, so the source is fixed.
    params = ", ".join(f"{n}=0" for n in names)
    body = "".join(f"\n    self.{n} = {n}" for n in names) or "\n    pass"
    scope: dict[str, Any] = {}
    exec(f"def __init__(self, {params}):{body}\n", scope)  # noqa: S102
    twin = type(
        model.__name__ + "Fast",
        (FastArgs,),
        {
            "__slots__": names,
            "__init__": scope["__init__"],
            "__doc__": f"struct {model.C_NAME} without pydantic: see FastArgs.",
            "__module__": __name__,
            "MODEL": model,
            "C_NAME": model.C_NAME,
            "SIZE": model.SIZE,
            "_STRUCT": model._STRUCT,
            "_NAMES": names,
            "_VALUES": operator.attrgetter(*names),
        },
    )
    # Two threads may build one at once (the server's emulation threads): the first stored
    # wins, so every instance of a struct has the one class encode_args checks for.
    return _FAST_TWINS.setdefault(model, twin)


# --------------------------------------------------------------------------------------------
# Request numbers (asm-generic/ioctl.h encoding, as on x86-64)
# --------------------------------------------------------------------------------------------

_IOC_NRBITS: Final = 8
_IOC_TYPEBITS: Final = 8
_IOC_SIZEBITS: Final = 14
_IOC_DIRBITS: Final = 2
_IOC_NRSHIFT: Final = 0
_IOC_TYPESHIFT: Final = _IOC_NRSHIFT + _IOC_NRBITS
_IOC_SIZESHIFT: Final = _IOC_TYPESHIFT + _IOC_TYPEBITS
_IOC_DIRSHIFT: Final = _IOC_SIZESHIFT + _IOC_SIZEBITS


class IocDir(IntFlag):
    """The direction bits of a request, from user space's point of view."""

    NONE = 0
    WRITE = 1
    READ = 2


_IOC_NONE: Final = IocDir.NONE
_IOC_WRITE: Final = IocDir.WRITE
_IOC_READ: Final = IocDir.READ


def ioc(direction: int, type_: int, nr: int, size: int) -> int:
    """``_IOC(dir, type, nr, size)``."""
    if not 0 <= size < 1 << _IOC_SIZEBITS:
        raise ValueError(f"ioctl argument size {size} does not fit in {_IOC_SIZEBITS} bits")
    return (
        (direction << _IOC_DIRSHIFT)
        | (type_ << _IOC_TYPESHIFT)
        | (nr << _IOC_NRSHIFT)
        | (size << _IOC_SIZESHIFT)
    )


def ioc_dir(request: int) -> IocDir:
    """``_IOC_DIR(request)``."""
    return IocDir((request >> _IOC_DIRSHIFT) & ((1 << _IOC_DIRBITS) - 1))


def ioc_type(request: int) -> int:
    """``_IOC_TYPE(request)``: the driver letter, ``ord('K')`` for amdkfd."""
    return (request >> _IOC_TYPESHIFT) & ((1 << _IOC_TYPEBITS) - 1)


def ioc_nr(request: int) -> int:
    """``_IOC_NR(request)``: the command number."""
    return (request >> _IOC_NRSHIFT) & ((1 << _IOC_NRBITS) - 1)


def ioc_size(request: int) -> int:
    """``_IOC_SIZE(request)``: ``sizeof`` the argument struct."""
    return (request >> _IOC_SIZESHIFT) & ((1 << _IOC_SIZEBITS) - 1)


AMDKFD_IOCTL_BASE: Final = ord("K")

_MODELS: dict[int, type[IoctlArgs]] = {}


def _amdkfd(direction: IocDir, nr: int, args: type[IoctlArgs]) -> int:
    request = ioc(direction, AMDKFD_IOCTL_BASE, nr, args.SIZE)
    _MODELS[request] = args
    return request


_R, _W, _RW = IocDir.READ, IocDir.WRITE, IocDir.READ | IocDir.WRITE

AMDKFD_IOC_GET_VERSION: Final = _amdkfd(_R, 0x01, GetVersionArgs)
AMDKFD_IOC_CREATE_QUEUE: Final = _amdkfd(_RW, 0x02, CreateQueueArgs)
AMDKFD_IOC_DESTROY_QUEUE: Final = _amdkfd(_RW, 0x03, DestroyQueueArgs)
AMDKFD_IOC_SET_MEMORY_POLICY: Final = _amdkfd(_W, 0x04, SetMemoryPolicyArgs)
AMDKFD_IOC_GET_CLOCK_COUNTERS: Final = _amdkfd(_RW, 0x05, GetClockCountersArgs)
AMDKFD_IOC_GET_PROCESS_APERTURES: Final = _amdkfd(_R, 0x06, GetProcessAperturesArgs)
AMDKFD_IOC_UPDATE_QUEUE: Final = _amdkfd(_W, 0x07, UpdateQueueArgs)
AMDKFD_IOC_CREATE_EVENT: Final = _amdkfd(_RW, 0x08, CreateEventArgs)
AMDKFD_IOC_DESTROY_EVENT: Final = _amdkfd(_W, 0x09, DestroyEventArgs)
AMDKFD_IOC_SET_EVENT: Final = _amdkfd(_W, 0x0A, SetEventArgs)
AMDKFD_IOC_RESET_EVENT: Final = _amdkfd(_W, 0x0B, ResetEventArgs)
AMDKFD_IOC_WAIT_EVENTS: Final = _amdkfd(_RW, 0x0C, WaitEventsArgs)
AMDKFD_IOC_DBG_REGISTER_DEPRECATED: Final = _amdkfd(_W, 0x0D, DbgRegisterArgs)
AMDKFD_IOC_DBG_UNREGISTER_DEPRECATED: Final = _amdkfd(_W, 0x0E, DbgUnregisterArgs)
AMDKFD_IOC_DBG_ADDRESS_WATCH_DEPRECATED: Final = _amdkfd(_W, 0x0F, DbgAddressWatchArgs)
AMDKFD_IOC_DBG_WAVE_CONTROL_DEPRECATED: Final = _amdkfd(_W, 0x10, DbgWaveControlArgs)
AMDKFD_IOC_SET_SCRATCH_BACKING_VA: Final = _amdkfd(_RW, 0x11, SetScratchBackingVaArgs)
AMDKFD_IOC_GET_TILE_CONFIG: Final = _amdkfd(_RW, 0x12, GetTileConfigArgs)
AMDKFD_IOC_SET_TRAP_HANDLER: Final = _amdkfd(_W, 0x13, SetTrapHandlerArgs)
AMDKFD_IOC_GET_PROCESS_APERTURES_NEW: Final = _amdkfd(_RW, 0x14, GetProcessAperturesNewArgs)
AMDKFD_IOC_ACQUIRE_VM: Final = _amdkfd(_W, 0x15, AcquireVmArgs)
AMDKFD_IOC_ALLOC_MEMORY_OF_GPU: Final = _amdkfd(_RW, 0x16, AllocMemoryOfGpuArgs)
AMDKFD_IOC_FREE_MEMORY_OF_GPU: Final = _amdkfd(_W, 0x17, FreeMemoryOfGpuArgs)
AMDKFD_IOC_MAP_MEMORY_TO_GPU: Final = _amdkfd(_RW, 0x18, MapMemoryToGpuArgs)
AMDKFD_IOC_UNMAP_MEMORY_FROM_GPU: Final = _amdkfd(_RW, 0x19, UnmapMemoryFromGpuArgs)
AMDKFD_IOC_SET_CU_MASK: Final = _amdkfd(_W, 0x1A, SetCuMaskArgs)
AMDKFD_IOC_GET_QUEUE_WAVE_STATE: Final = _amdkfd(_RW, 0x1B, GetQueueWaveStateArgs)
AMDKFD_IOC_GET_DMABUF_INFO: Final = _amdkfd(_RW, 0x1C, GetDmabufInfoArgs)
AMDKFD_IOC_IMPORT_DMABUF: Final = _amdkfd(_RW, 0x1D, ImportDmabufArgs)
AMDKFD_IOC_ALLOC_QUEUE_GWS: Final = _amdkfd(_RW, 0x1E, AllocQueueGwsArgs)
AMDKFD_IOC_SMI_EVENTS: Final = _amdkfd(_RW, 0x1F, SmiEventsArgs)
AMDKFD_IOC_SVM: Final = _amdkfd(_RW, 0x20, SvmArgs)
AMDKFD_IOC_SET_XNACK_MODE: Final = _amdkfd(_RW, 0x21, SetXnackModeArgs)
AMDKFD_IOC_CRIU_OP: Final = _amdkfd(_RW, 0x22, CriuArgs)
AMDKFD_IOC_AVAILABLE_MEMORY: Final = _amdkfd(_RW, 0x23, GetAvailableMemoryArgs)

AMDKFD_COMMAND_START: Final = 0x01
AMDKFD_COMMAND_END: Final = 0x24

REQUEST_NAMES: Final[dict[int, str]] = {
    value: name for name, value in list(globals().items()) if name.startswith("AMDKFD_IOC_")
}
"""Request number -> its ``AMDKFD_IOC_*`` name."""

REQUESTS: Final[dict[int, type[IoctlArgs]]] = {req: _MODELS[req] for req in REQUEST_NAMES}
"""Request number -> the model of its argument struct."""


def request_name(request: int) -> str:
    """The ``AMDKFD_IOC_*`` name of a request, or its ``_IOWR('K', nr, size)`` decoding."""
    name = REQUEST_NAMES.get(request)
    if name is not None:
        return name
    type_ = ioc_type(request)
    letter = repr(chr(type_)) if 0x20 < type_ < 0x7F else hex(type_)
    macro = ("_IO", "_IOW", "_IOR", "_IOWR")[ioc_dir(request)]
    size = f", {ioc_size(request)}" if macro != "_IO" else ""
    return f"{macro}({letter}, {ioc_nr(request):#04x}{size}) = {request:#010x}"


_REQUEST_BY_NR: Final[dict[int, int]] = {ioc_nr(req): req for req in REQUESTS}

# Request -> the fast twin of its struct, or None (a struct with arrays, or an unknown request).
_FAST_BY_REQUEST: dict[int, type[FastArgs] | None] = {}


def fast_request(request: int) -> type[FastArgs] | None:
    """The fast twin of `request`'s argument struct; None for a request amdkfd does not know
    or whose struct is not flat (decode those with `decode_args`)."""
    try:
        return _FAST_BY_REQUEST[request]
    except KeyError:
        model = REQUESTS.get(request)
        twin = fast_twin(model) if model is not None and model._FLAT else None
        _FAST_BY_REQUEST[request] = twin
        return twin


# --------------------------------------------------------------------------------------------
# Errors and message coding
# --------------------------------------------------------------------------------------------


class KfdError(Exception):
    """An ioctl failure: the errno the real KFD returns (negated in C) and why.

    ``str(e)`` reads ``EINVAL: <what was wrong and how to fix it>``.
    """

    def __init__(self, errno_: int, message: str) -> None:
        super().__init__(errno_, message)
        self.errno = errno_
        self.message = message

    @property
    def errno_name(self) -> str:
        return errno.errorcode.get(self.errno, f"errno {self.errno}")

    def __str__(self) -> str:
        return f"{self.errno_name}: {self.message}"


def _model_for(request: int) -> type[IoctlArgs]:
    model = REQUESTS.get(request)
    if model is not None:
        return model
    nr = ioc_nr(request)
    known = _REQUEST_BY_NR.get(nr) if ioc_type(request) == AMDKFD_IOCTL_BASE else None
    if known is not None:
        hint = (
            f"command {nr:#x} is {REQUEST_NAMES[known]} = {known:#010x}, whose struct differs "
            f"in size or direction; build the request from the "
            f"{KFD_IOCTL_MAJOR_VERSION}.{KFD_IOCTL_MINOR_VERSION} header's struct"
        )
    else:
        hint = (
            f"use one of the AMDKFD_IOC_* requests (type 'K', command numbers "
            f"{AMDKFD_COMMAND_START:#x}..{AMDKFD_COMMAND_END - 1:#x})"
        )
    # Current kernels answer -ENOTTY for a command amdkfd does not know (older ones, before
    # "drm/amdkfd: return -ENOTTY for unsupported IOCTLs", said -EINVAL).
    raise KfdError(errno.ENOTTY, f"unknown amdkfd ioctl {request_name(request)}; {hint}")


def encode_args(args: IoctlArgs | FastArgs, request: int | None = None) -> bytearray:
    """The writable argument buffer for ``args``, as user space hands it to ``ioctl()``.

    With ``request``, also checks that ``args`` is that request's struct (model or fast twin).
    """
    if request is not None:
        model = _model_for(request)
        if type(args) is not model and type(args) is not _FAST_TWINS.get(model):
            raise KfdError(
                errno.EINVAL,
                f"{request_name(request)} takes struct {model.C_NAME} ({model.__name__}) but "
                f"got {type(args).__name__}; build a {model.__name__} instead",
            )
    return bytearray(args.to_bytes())


def decode_args(request: int, buffer: bytes | bytearray | memoryview) -> IoctlArgs:
    """Decode the argument buffer of ``request`` into its model.

    Unknown requests raise ``KfdError(ENOTTY)``; a buffer whose length is not
    ``ioc_size(request)`` raises ``KfdError(EINVAL)``.
    """
    model = _model_for(request)
    expected = ioc_size(request)
    if len(buffer) != expected:
        raise KfdError(
            errno.EINVAL,
            f"{request_name(request)} carries struct {model.C_NAME} of {expected} bytes but "
            f"the argument buffer has {len(buffer)}; pass exactly sizeof(struct "
            f"{model.C_NAME}) bytes (encode_args() builds one)",
        )
    return model.from_bytes(buffer)
